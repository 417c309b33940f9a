"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers where installed."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.errors import EngineError, EngineInputError, EngineLoadError
from edge_agent.inference.engine import TensorSpec

_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


# GPU providers first. TensorRT's EP only when ONNX Runtime was chosen outright: as a fallback it would
# usually hit the same TensorRT problem that caused the fallback.
_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


def ort_providers(available: Sequence[str] | None = None, *, allow_tensorrt: bool = False) -> list[str]:
    """Execution providers to use, best first, from those this onnxruntime build has."""
    have = set(ort.get_available_providers() if available is None else available)
    preferred = (("TensorrtExecutionProvider",) if allow_tensorrt else ()) + _PREFERRED
    chosen = [p for p in preferred if p in have]
    return chosen or ["CPUExecutionProvider"]


def onnx_input_shapes(model_path: Path) -> dict[str, tuple[int, ...]]:
    """Input names and shapes (-1 where dynamic) of an ONNX file, read without running it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise EngineLoadError(f"ONNX Runtime could not read {model_path}: {exc}", "onnx_invalid") from exc
    return {a.name: _spec(a).shape for a in session.get_inputs()}


# Small calls spend a quarter of the session's run turning arrays into ONNX Runtime's values and back (KT
# step at batch 1: run 12.0 µs, bound run 8.9); a binding to input buffers kept between calls skips that,
# less its own checks and copies. KT step, Engine.infer, AMD Zen 4: batch 1 14.05 -> 11.86 µs, batch 8
# 19.3 -> 16.6, batch 16 1.07x faster, batch 32 even, batch 64 (33 KiB of feeds) 4 % slower (the copy into
# the buffers costs more than it saves). So: feeds up to 16 KiB, a few shapes per engine (a micro-batch's
# size varies), first come.
_BOUND_FEED_BYTES = 16 * 1024
_BOUND_SHAPES = 8


class _Binding:
    """The session's inputs bound to buffers of one set of shapes; outputs allocated by ONNX Runtime."""

    def __init__(self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], outputs: list[str]):
        self.inputs = [(name, np.empty_like(array, order="C")) for name, array in feeds.items()]
        binding = session.io_binding()
        for name, buffer in self.inputs:
            binding.bind_cpu_input(name, buffer)
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.binding = binding._iobinding  # the C++ object, as InferenceSession.run_with_iobinding passes it
        self.lock = threading.Lock()  # one call at a time fills the buffers; others take the unbound run


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in arg.shape)
    return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, np.dtype(np.float32)), shape)


class OnnxRuntimeEngine:
    backend = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        *,
        model_name: str | None = None,
        precision: str = "fp32",
        intra_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.model_name = model_name or model_path.stem
        self.precision = precision
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No spinning: idle workers would burn the core the KT answers need. Spinning only within a run
        # ("session.force_spinning_stop") made YuNet alone faster (4.6 vs 6.1 ms at 640x480, 2 threads) but
        # the lesson worse: p99 14.5/24.8/19.4 ms against 10.3/18.8/18.8 without (120-s lessons side by side).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EngineLoadError(f"ONNX Runtime could not load {model_path}: {exc}", "onnx_invalid") from exc
        self._inputs = [_spec(a) for a in self._session.get_inputs()]
        self._outputs = [_spec(a) for a in self._session.get_outputs()]
        self._output_names = [spec.name for spec in self._outputs]
        # On the CPU alone, the session's own run: InferenceSession.run adds 1.9 µs of Python checks (of
        # ~16 µs for the KT step at batch 1) that the feeds' check below already covers, and a fallback
        # between execution providers a CPU-only session never takes. Private in onnxruntime (as
        # InferenceSession._sess since 1.0): where it is missing, or a GPU provider is there, the public run.
        own = getattr(self._session, "_sess", None)
        own_run, own_bound_run = getattr(own, "run", None), getattr(own, "run_with_iobinding", None)
        cpu_only = self._session.get_providers() == ["CPUExecutionProvider"]
        self._run = own_run if cpu_only and callable(own_run) else self._session.run
        self._bound_run = own_bound_run if cpu_only and callable(own_bound_run) else None
        self._bindings: dict[tuple[int, ...], _Binding] = {}
        self._input_names = {spec.name for spec in self._inputs}
        self._checks = [
            (spec, tuple((axis, size) for axis, size in enumerate(spec.shape) if size != -1))
            for spec in self._inputs
        ]

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # ONNX Runtime checks names, dtypes and shapes itself, in C++. The KT step runs once per micro-batch
        # of answers, where checking here first cost 2.5 of its 17 µs at batch 1: so the feeds are checked
        # and converted only when ONNX Runtime refuses them, to say what is wrong or to run them converted
        # (int32 ids, lists).
        if self._run is None:
            raise EngineError(f"{self.model_name}: the engine is closed")
        bound = self._through_binding(feeds)
        if bound is not None:
            return bound
        try:
            # ONNX Runtime takes a byte-swapped array as if it were native: wrong numbers, no error
            if not all(array.dtype.isnative for array in feeds.values()):
                raise TypeError("not in native byte order")
            results = self._run(self._output_names, feeds, None)
        except Exception:  # AttributeError too: a list, or anything else that is not an array
            prepared = self._prepared(feeds)
            try:
                results = self._run(self._output_names, prepared, None)
            except Exception as exc:  # translate at the boundary
                raise EngineError(f"{self.model_name}: ONNX Runtime failed to run: {exc}") from exc
        else:
            self._bind(feeds)
        return dict(zip(self._output_names, results, strict=True))

    def _through_binding(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The results through a binding for these feeds; None where there is none, it is busy, a shape
        differs from its buffers', or anything fails (the unbound run then says why)."""
        try:
            binding = self._bindings.get(next(iter(feeds.values())).shape)
        except (AttributeError, StopIteration):  # a list or other non-array: the unbound run converts it
            return None
        if binding is None or not binding.lock.acquire(blocking=False):
            return None
        try:
            for name, buffer in binding.inputs:
                array = feeds[name]
                if array.shape != buffer.shape:  # the copy would broadcast
                    return None
                # converts another dtype or byte order as _prepared would: the buffers have the model's
                buffer[...] = array
            self._bound_run(binding.binding, None)  # type: ignore[misc]
            return dict(zip(self._output_names, binding.binding.copy_outputs_to_cpu(), strict=True))
        except Exception:
            return None
        finally:
            binding.lock.release()

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Keeps a binding for the shapes of ``feeds``, which ONNX Runtime just ran as they are, when they are
        small and few shapes are bound yet."""
        if (
            self._bound_run is None
            or len(self._bindings) >= _BOUND_SHAPES
            or feeds.keys() != self._input_names
            or sum(array.nbytes for array in feeds.values()) > _BOUND_FEED_BYTES
        ):
            return
        # keyed by the first feed's shape (a micro-batch's size); each call checks all shapes against buffers
        key = next(iter(feeds.values())).shape
        if key not in self._bindings:
            self._bindings[key] = _Binding(self._session, feeds, self._output_names)

    def _prepared(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs from ``feeds``, converted to its dtypes; EngineInputError for a missing one or
        a shape it cannot take."""
        prepared = {}
        for spec, fixed in self._checks:
            if spec.name not in feeds:
                raise EngineInputError(f"{self.model_name}: missing input {spec.name!r}")
            array = np.asarray(feeds[spec.name], dtype=spec.dtype)
            if array.ndim != len(spec.shape) or any(array.shape[axis] != size for axis, size in fixed):
                raise EngineInputError(
                    f"{self.model_name}: input {spec.name!r} has shape {array.shape}, expected {spec.shape}"
                )
            prepared[spec.name] = array
        return prepared

    def close(self) -> None:
        # _run is the session's own bound run: dropped too, or it keeps the session's memory alive
        self._session = self._run = self._bound_run = None  # type: ignore[assignment]
        self._bindings = {}
