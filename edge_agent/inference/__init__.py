"""Inference engines: one interface (:class:`Engine`) for TensorRT and ONNX Runtime.

Only ``trt_build.py`` imports tensorrt (``tensorrt_backend.py`` takes it from there); only
``cuda_memory.py`` imports the CUDA bindings; ``onnxruntime_backend.py`` and ``quantize.py`` import
onnxruntime. The daemon uses :class:`EngineSet` (a Component) or :func:`load_engine`; both fall back to
ONNX Runtime on any TensorRT problem and say why in :class:`LoadedEngine`.
"""

from edge_agent.inference.engine import Engine, TensorSpec
from edge_agent.inference.engine_set import EngineSet
from edge_agent.inference.guarded import GuardedEngine
from edge_agent.inference.manifest import InputProfile, Manifest, load_manifest, load_manifests
from edge_agent.inference.select import LoadedEngine, load_engine

__all__ = [
    "Engine",
    "EngineSet",
    "GuardedEngine",
    "InputProfile",
    "LoadedEngine",
    "Manifest",
    "TensorSpec",
    "load_engine",
    "load_manifest",
    "load_manifests",
]
