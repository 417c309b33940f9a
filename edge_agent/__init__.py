"""edge-agent: the classroom edge runtime for Jetson Orin class boards."""

import os
from pathlib import Path

__version__ = "0.1.0"


def _build() -> str:
    """The release id provisioning/install.sh stamps beside the code (a hash of the code and manifests),
    so a fleet can tell which code a board runs; "dev" in a source checkout."""
    try:
        return Path(__file__).with_name("BUILD").read_text(encoding="utf-8").strip() or "dev"
    except OSError:
        return "dev"


__build__ = _build()

# ONNX Runtime's PyPI wheels (1.32 on Linux) record usage telemetry (process path, OS, a device id, the
# network type) in ~/.cache/Microsoft/DeveloperTools and upload it to Microsoft's collector. A school
# board sends nothing but its aggregates, so it is off; the variable is read when onnxruntime is imported,
# and every entry point imports this package first.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
