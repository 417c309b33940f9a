"""Inference engines: one interface (:class:`Engine`) for TensorRT and ONNX Runtime.

Only ``tensorrt_backend.py`` and ``trt_build.py`` import tensorrt; only ``cuda_memory.py`` imports the CUDA
bindings; only ``onnxruntime_backend.py`` imports onnxruntime.
"""

from edge_agent.inference.engine import Engine, TensorSpec

__all__ = ["Engine", "TensorSpec"]
