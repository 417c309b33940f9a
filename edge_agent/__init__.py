"""edge-agent: the classroom edge runtime for Jetson Orin class boards."""

import os

__version__ = "0.1.0"

# ONNX Runtime's PyPI wheels (1.32 on Linux) record usage telemetry (process path, OS, a device id, the
# network type) in ~/.cache/Microsoft/DeveloperTools and upload it to Microsoft's collector. A school
# board sends nothing but its aggregates, so it is off; the variable is read when onnxruntime is imported,
# and every entry point imports this package first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
