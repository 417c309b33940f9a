"""TensorRT backend: deserialize a plan and run it (TensorRT 10.3 name-based I/O API).

It takes the guarded ``trt`` module from ``trt_build``, the one module importing tensorrt.
:func:`open_tensorrt` is the real :class:`~edge_agent.inference.select.TensorRTPort`.

Each :class:`TensorRTEngine` owns one execution context, one CUDA stream and its buffers: device and
pinned host buffers sized for the profile maximum once, reused by every call (no allocation per frame).
A context is single-threaded; :class:`~edge_agent.inference.guarded.GuardedEngine` serialises calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import TENSORRT_UNAVAILABLE, EngineError, EngineInputError, EngineLoadError
from edge_agent.inference.cuda_memory import CudaMemory, DeviceBuffer
from edge_agent.inference.engine import TensorSpec
from edge_agent.inference.engine_cache import PLAN_UNREADABLE, BuildTarget
from edge_agent.inference.manifest import InputProfile
from edge_agent.inference.trt_build import build_plan, require_tensorrt, trt

log = logging.getLogger(__name__)


def _shape(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def _numpy_dtype(dtype: trt.DataType) -> np.dtype:
    table = {
        trt.DataType.FLOAT: np.float32,
        trt.DataType.HALF: np.float16,
        trt.DataType.INT8: np.int8,
        trt.DataType.INT32: np.int32,
        trt.DataType.INT64: np.int64,
        trt.DataType.BOOL: np.bool_,
        trt.DataType.UINT8: np.uint8,
    }
    if dtype not in table:
        raise EngineLoadError(f"TensorRT tensor type {dtype} has no numpy equivalent", "unsupported_dtype")
    return np.dtype(table[dtype])


class _Binding:
    """One I/O tensor: its device buffer, its pinned host staging buffer, and its profile-maximum shape."""

    def __init__(self, name: str, dtype: np.dtype, max_shape: tuple[int, ...], memory: CudaMemory) -> None:
        self.name = name
        self.dtype = dtype
        self.max_shape = max_shape
        nbytes = int(np.prod(max_shape)) * dtype.itemsize
        self.device: DeviceBuffer = memory.device_buffer(nbytes)
        self.host = memory.pinned_buffer(nbytes)

    def host_view(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        return self.host[: count * self.dtype.itemsize].view(self.dtype).reshape(shape)


class TensorRTEngine:
    backend = "tensorrt"

    def __init__(
        self, runtime: trt.Runtime, plan: bytes, memory: CudaMemory, model_name: str, precision: str
    ) -> None:
        self.model_name = model_name
        self.precision = precision
        self._memory = memory
        # Only this step judges the plan itself (PLAN_UNREADABLE: the loader discards it and builds again);
        # every later failure (CUDA memory, an I/O type) is of this board or model: a new plan fails alike.
        try:
            engine = runtime.deserialize_cuda_engine(plan)
        except Exception as exc:  # a damaged or foreign plan can raise untyped errors
            raise EngineLoadError(
                f"TensorRT could not deserialize the {model_name} plan: {exc}", PLAN_UNREADABLE
            ) from exc
        if engine is None:
            raise EngineLoadError(f"TensorRT could not deserialize the {model_name} plan", PLAN_UNREADABLE)
        self._engine: trt.ICudaEngine = engine
        self._context: trt.IExecutionContext = self._engine.create_execution_context()
        if self._context is None:
            raise EngineLoadError(
                f"TensorRT could not create an execution context for {model_name}", "context"
            )
        self._stream = memory.stream()
        self._inputs: list[_Binding] = []
        self._outputs: list[_Binding] = []
        self._allocate()

    def _allocate(self) -> None:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for name in inputs:
            max_shape = _shape(self._engine.get_tensor_profile_shape(name, 0)[2])
            self._context.set_input_shape(name, max_shape)
            self._inputs.append(
                _Binding(name, _numpy_dtype(self._engine.get_tensor_dtype(name)), max_shape, self._memory)
            )
        for name in names:
            if name in inputs:
                continue
            # With every input at its maximum, each output shape is at its maximum too.
            max_shape = _shape(self._context.get_tensor_shape(name))
            if any(d < 0 for d in max_shape):
                raise EngineLoadError(
                    f"{self.model_name}: output {name} has a data-dependent shape", "unsupported"
                )
            self._outputs.append(
                _Binding(name, _numpy_dtype(self._engine.get_tensor_dtype(name)), max_shape, self._memory)
            )
        for binding in self._inputs + self._outputs:
            self._context.set_tensor_address(binding.name, binding.device.ptr)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [
            TensorSpec(b.name, b.dtype, _shape(self._engine.get_tensor_shape(b.name))) for b in self._inputs
        ]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [
            TensorSpec(b.name, b.dtype, _shape(self._engine.get_tensor_shape(b.name))) for b in self._outputs
        ]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for binding in self._inputs:
            # asarray, not ascontiguousarray: the latter turns a 0-d input into shape (1,), which TensorRT
            # would then run; refused here as ONNX Runtime refuses it (GuardedEngine checks first anyway).
            array = np.asarray(feeds[binding.name], dtype=binding.dtype, order="C")
            if not self._context.set_input_shape(binding.name, array.shape):
                raise EngineInputError(
                    f"{self.model_name}: TensorRT refused shape {array.shape} for {binding.name}"
                )
            staged = binding.host_view(array.shape)
            staged[...] = array
            self._memory.to_device(binding.device, staged, self._stream)
        if not self._context.execute_async_v3(self._memory.stream_handle(self._stream)):
            raise EngineError(f"{self.model_name}: TensorRT execution failed")
        results = {}
        for binding in self._outputs:
            shape = _shape(self._context.get_tensor_shape(binding.name))
            view = binding.host_view(shape)
            self._memory.to_host(view, binding.device, self._stream)
            results[binding.name] = view
        self._memory.synchronize(self._stream)
        # Copies: the pinned buffers are overwritten by the next call.
        return {name: value.copy() for name, value in results.items()}

    def close(self) -> None:
        del self._context, self._engine  # the context must go before its engine
        self._memory.close()


class TensorRTAdapter:
    """The real TensorRT port: builds plans with ``trt_build`` and loads them as :class:`TensorRTEngine`."""

    def __init__(self) -> None:
        probe = CudaMemory()
        try:
            name, capability = probe.device()
        finally:
            probe.close()
        self.target = BuildTarget(str(trt.__version__), name, capability)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)

    def build_plan(
        self, onnx_path: Path, profiles: Sequence[InputProfile], precision: str, settings: Any
    ) -> bytes:
        try:
            return build_plan(
                onnx_path,
                profiles,
                precision,
                workspace_mib=settings.workspace_mib,
                timing_cache=settings.timing_cache,
                log_path=settings.log_path,
                model_name=onnx_path.stem,
            )
        except EngineLoadError:
            raise
        except Exception as exc:  # TensorRT's untyped errors, an OSError of the cache's disk: ONNX Runtime
            # still runs the model, which only an EngineLoadError tells the loader (select.py)
            raise EngineLoadError(
                f"TensorRT could not build the {onnx_path.stem} plan: {exc}", "build_failed"
            ) from exc

    def load_plan(
        self, plan: bytes, model_name: str, precision: str, profiles: Sequence[InputProfile]
    ) -> TensorRTEngine:
        # Each engine owns its CudaMemory (stream, buffers): engines on different threads never share.
        memory = CudaMemory()
        try:
            return TensorRTEngine(self._runtime, plan, memory, model_name, precision)
        except EngineLoadError:
            memory.close()
            raise
        except Exception as exc:  # past deserialization (an EngineError of cudaMalloc on Orin's shared
            # memory, TensorRT's untyped errors): the plan is sound, so not PLAN_UNREADABLE; it is kept
            memory.close()
            raise EngineLoadError(
                f"TensorRT could not load the {model_name} plan: {exc}", "load_failed"
            ) from exc


def open_tensorrt() -> TensorRTAdapter:
    require_tensorrt()
    try:
        return TensorRTAdapter()
    except EngineLoadError:
        raise
    except Exception as exc:  # CUDA/TensorRT raise their own untyped errors at start-up
        raise EngineLoadError(f"TensorRT could not start: {exc}", TENSORRT_UNAVAILABLE) from exc
