"""The wrapper every loaded engine is handed out in, whichever backend runs it.

It enforces the manifest's optimization profile on both backends (ONNX Runtime has no profile, TensorRT
would fail deep inside ``set_input_shape``), so an input outside the profile is the same clear
:class:`EngineInputError` everywhere; counts every call in ``INFERENCE_REQUESTS`` and observes
``INFERENCE_LATENCY{stage="infer"}``.

Concurrency: one lock per wrapper serialises ``infer``. A TensorRT execution context must not be used
from two threads at once, and ONNX Runtime gains little from it on a 6-core board; a worker that wants
parallelism loads one engine per thread instead of sharing one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edge_agent.errors import EngineInputError
from edge_agent.inference.engine import Engine, TensorSpec
from edge_agent.inference.manifest import InputProfile
from edge_agent.telemetry import metrics


def check_inputs(model: str, profiles: Sequence[InputProfile], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`EngineInputError` naming the first input that is missing, unknown or out of profile."""
    names = {p.name for p in profiles}
    extra = sorted(set(feeds) - names)
    if extra:
        raise EngineInputError(f"{model}: unknown input(s) {extra}; the model takes {sorted(names)}")
    for profile in profiles:
        if profile.name not in feeds:
            raise EngineInputError(f"{model}: missing input {profile.name!r}")
        try:
            shape = tuple(np.shape(feeds[profile.name]))
        except ValueError as exc:  # numpy cannot shape a ragged list: rows of different lengths
            raise EngineInputError(
                f"{model}: input {profile.name!r} is not a rectangular array (rows of different lengths)"
            ) from exc
        if not profile.contains(shape):
            raise EngineInputError(
                f"{model}: input {profile.name!r} has shape {shape}, outside the engine profile "
                f"{profile.min}..{profile.max}"
            )


def check_dtypes(model: str, specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`EngineInputError` for a feed whose values its input's type cannot hold: the backends
    cast unsafely (a review: skill ids 0.9 and 1.7 ran as 0 and 1, a complex state lost its imaginary part,
    text ended in a ValueError)."""
    for spec in specs:
        value = feeds.get(spec.name)
        dtype = getattr(value, "dtype", None)
        if dtype == spec.dtype:  # what every caller in the product sends: one comparison
            continue
        dtype = np.asarray(value).dtype if dtype is None else dtype
        if not np.can_cast(dtype, spec.dtype, casting="same_kind"):
            raise EngineInputError(f"{model}: input {spec.name!r} is {dtype}, which {spec.dtype} cannot hold "
                                   "without losing values")


class GuardedEngine:
    """An :class:`Engine` that checks the profile, serialises calls and reports metrics."""

    def __init__(
        self, inner: Engine, profiles: Sequence[InputProfile], *, on_close: Callable[[], None] | None = None
    ) -> None:
        """``on_close``: called once ``inner`` is closed (the TensorRT plan it runs may leave the cache)."""
        self._inner = inner
        self._on_close = on_close
        self._profiles = tuple(profiles)
        self._specs = tuple(inner.inputs)
        self._lock = threading.Lock()
        self.model_name = inner.model_name
        self.backend = inner.backend
        self.precision = inner.precision
        self._requests = {
            outcome: metrics.INFERENCE_REQUESTS.labels(self.model_name, self.backend, outcome)
            for outcome in ("ok", "error", "rejected")
        }
        self._latency = metrics.INFERENCE_LATENCY.labels(self.model_name, "infer")

    @property
    def profiles(self) -> tuple[InputProfile, ...]:
        return self._profiles

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inner.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._inner.outputs

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            check_inputs(self.model_name, self._profiles, feeds)
            check_dtypes(self.model_name, self._specs, feeds)
        except EngineInputError:
            self._requests["rejected"].inc()
            raise
        with self._lock:
            start = time.perf_counter()
            try:
                result = self._inner.infer(feeds)
            except Exception:
                self._requests["error"].inc()
                raise
            self._latency.observe(time.perf_counter() - start)
        self._requests["ok"].inc()
        return result

    def close(self) -> None:
        with self._lock:
            try:
                self._inner.close()
            finally:
                if self._on_close is not None:
                    self._on_close()
