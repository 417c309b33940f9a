"""CUDA memory for the TensorRT backend: pinned host buffers, device buffers, async copies, streams.

The only module importing CUDA bindings. It prefers NVIDIA's cuda-python (``cuda.bindings.runtime`` in
12.6+, ``cuda.cudart`` before), and uses pycuda where that is what the board has. Both are reached through
:class:`CudaMemory`; nothing else sees a binding object. Missing bindings or no GPU raise
:class:`EngineLoadError` with reason ``tensorrt_unavailable`` so the loader falls back to ONNX Runtime.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import TENSORRT_UNAVAILABLE, EngineError, EngineLoadError


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        from cuda import cudart  # cuda-python before 12.6

        return cudart


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int
    handle: Any = None  # keeps a pycuda allocation alive


class _CudaPython:
    """cuda-python runtime API; every call returns ``(err, *values)``."""

    def __init__(self) -> None:
        self.rt = _import_cudart()
        count = self._ok(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            raise EngineLoadError("no CUDA GPU is visible", TENSORRT_UNAVAILABLE)
        self._ok(self.rt.cudaSetDevice(0), "cudaSetDevice")

    def _ok(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise EngineError(f"CUDA {what} failed: {err}")
        return values[0] if len(values) == 1 else tuple(values) or None

    def device(self) -> tuple[str, tuple[int, int]]:
        props = self._ok(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name, (int(props.major), int(props.minor))

    def malloc(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(int(self._ok(self.rt.cudaMalloc(nbytes), "cudaMalloc")), nbytes)

    def free(self, buf: DeviceBuffer) -> None:
        self._ok(self.rt.cudaFree(buf.ptr), "cudaFree")

    def pinned(self, nbytes: int) -> tuple[np.ndarray, Any]:
        ptr = int(self._ok(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(memoryview(raw), dtype=np.uint8), ptr

    def free_pinned(self, handle: Any) -> None:
        self._ok(self.rt.cudaFreeHost(handle), "cudaFreeHost")

    def stream(self) -> Any:
        return self._ok(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def copy(self, dst: int, src: int, nbytes: int, to_device: bool, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind
        direction = kind.cudaMemcpyHostToDevice if to_device else kind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(dst, src, nbytes, direction, stream), "cudaMemcpyAsync")

    def sync(self, stream: Any) -> None:
        self._ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def destroy_stream(self, stream: Any) -> None:
        self._ok(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")


class _PyCuda:
    """pycuda's driver API. A driver context is current only on the thread that pushed it, and an engine is
    loaded on one thread and run on another (the KT or the attention thread), so every call pushes GPU 0's
    primary context (the one TensorRT's runtime API uses too) and pops it again, on whichever thread it
    runs: nothing is left on a thread's context stack."""

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self.cuda = cuda
        cuda.init()
        if cuda.Device.count() < 1:
            raise EngineLoadError("no CUDA GPU is visible", TENSORRT_UNAVAILABLE)
        self._dev = cuda.Device(0)
        self._ctx = self._dev.retain_primary_context()

    @contextmanager
    def _current(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def device(self) -> tuple[str, tuple[int, int]]:
        major, minor = self._dev.compute_capability()
        return str(self._dev.name()), (int(major), int(minor))

    def malloc(self, nbytes: int) -> DeviceBuffer:
        with self._current():
            alloc = self.cuda.mem_alloc(nbytes)
        return DeviceBuffer(int(alloc), nbytes, alloc)

    def free(self, buf: DeviceBuffer) -> None:
        with self._current():
            buf.handle.free()

    def pinned(self, nbytes: int) -> tuple[np.ndarray, Any]:
        with self._current():
            array = self.cuda.pagelocked_empty(nbytes, np.uint8)
        return array, array

    def free_pinned(self, handle: Any) -> None:
        if hasattr(handle, "base") and hasattr(handle.base, "free"):
            with self._current():
                handle.base.free()

    def stream(self) -> Any:
        with self._current():
            return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def copy(self, dst: int, src: int, nbytes: int, to_device: bool, stream: Any) -> None:
        with self._current():
            if to_device:
                self.cuda.memcpy_htod_async(dst, _host_view(src, nbytes), stream)
            else:
                self.cuda.memcpy_dtoh_async(_host_view(dst, nbytes), src, stream)

    def sync(self, stream: Any) -> None:
        with self._current():
            stream.synchronize()

    def destroy_stream(self, stream: Any) -> None:
        pass  # pycuda destroys a stream with its last reference, in the stream's own context


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    return np.frombuffer(memoryview((ctypes.c_uint8 * nbytes).from_address(ptr)), dtype=np.uint8)


BINDINGS: dict[str, type[_CudaPython] | type[_PyCuda]] = {"cuda-python": _CudaPython, "pycuda": _PyCuda}


def _open_backend(binding: str | None = None) -> _CudaPython | _PyCuda:
    problems = []
    for factory in [BINDINGS[binding]] if binding else BINDINGS.values():
        try:
            return factory()
        except ImportError as exc:
            problems.append(str(exc))
        except EngineError as exc:
            raise EngineLoadError(f"CUDA is installed but unusable: {exc}", TENSORRT_UNAVAILABLE) from exc
    raise EngineLoadError(
        "no CUDA Python bindings (pip install cuda-python, or JetPack's pycuda): " + "; ".join(problems),
        TENSORRT_UNAVAILABLE,
    )


class CudaMemory:
    """Buffers and copies on GPU 0 for one engine, usable from any thread; ``close`` frees everything it
    allocated. ``binding`` picks "cuda-python" or "pycuda" (default: the first that imports)."""

    def __init__(self, binding: str | None = None) -> None:
        self._cuda = _open_backend(binding)
        self._device: list[DeviceBuffer] = []
        self._pinned: list[Any] = []
        self._streams: list[Any] = []

    @property
    def binding(self) -> str:
        return "cuda-python" if isinstance(self._cuda, _CudaPython) else "pycuda"

    def device(self) -> tuple[str, tuple[int, int]]:
        """Device name and compute capability (major, minor)."""
        return self._cuda.device()

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        buf = self._cuda.malloc(max(nbytes, 1))
        self._device.append(buf)
        return buf

    def pinned_buffer(self, nbytes: int) -> np.ndarray:
        """A page-locked host byte array: async copies from it overlap with compute."""
        array, handle = self._cuda.pinned(max(nbytes, 1))
        self._pinned.append(handle)
        return array

    def stream(self) -> Any:
        stream = self._cuda.stream()
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` value TensorRT's ``execute_async_v3`` takes."""
        return self._cuda.stream_handle(stream)

    def to_device(self, dst: DeviceBuffer, src: np.ndarray, stream: Any) -> None:
        if src.nbytes > dst.nbytes or not src.flags.c_contiguous:
            raise EngineError(f"copy of {src.nbytes} bytes does not fit a {dst.nbytes}-byte device buffer")
        self._cuda.copy(dst.ptr, src.ctypes.data, src.nbytes, True, stream)

    def to_host(self, dst: np.ndarray, src: DeviceBuffer, stream: Any) -> None:
        if dst.nbytes > src.nbytes or not dst.flags.c_contiguous:
            raise EngineError(f"copy of {dst.nbytes} bytes exceeds the {src.nbytes}-byte device buffer")
        self._cuda.copy(dst.ctypes.data, src.ptr, dst.nbytes, False, stream)

    def synchronize(self, stream: Any) -> None:
        self._cuda.sync(stream)

    def close(self) -> None:
        for stream in self._streams:
            self._cuda.sync(stream)
            self._cuda.destroy_stream(stream)
        for buf in self._device:
            self._cuda.free(buf)
        for handle in self._pinned:
            self._cuda.free_pinned(handle)
        self._streams, self._device, self._pinned = [], [], []
