"""Backend choice and fallback: TensorRT where it works, ONNX Runtime otherwise, never an exception upward.

``backend = "auto"`` tries TensorRT when it imports and a GPU is present; ``"tensorrt"`` insists on it
(a failure is counted as a load failure); ``"onnxruntime"`` skips it. Any TensorRT failure (not
importable, no GPU, build or deserialize error, or a loaded engine that fails its warm-up inference at the
profile's opt shapes) falls back to ONNX Runtime and the reason travels with the engine in
:class:`LoadedEngine` for the health page. INT8 without a Q/DQ model TensorRT can take (none, one
made from another model or release, or one with asymmetric activations) builds at the manifest's default
precision instead, said the same way: TensorRT FP16 beats ONNX Runtime FP32 on the CPU. A Q/DQ model
ONNX Runtime cannot open (damaged, copied from another board) runs the fp32 model instead, said and counted
(``backend="onnxruntime", reason="int8_unusable"``). Only a model that ONNX Runtime cannot run either
raises (:class:`ModelError` or :class:`EngineLoadError`).

A cached plan is discarded and built again only when TensorRT cannot deserialize it (``PLAN_UNREADABLE``),
and not even then when it is the plan this TensorRT had just built for the same key (it would fail alike at
every start); any other load failure (CUDA memory, an unsupported I/O type) keeps the plan and falls back.

TensorRT is reached through :class:`TensorRTPort`, the hardware port; ``tensorrt_backend.open_tensorrt``
is the real one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.errors import TENSORRT_UNAVAILABLE, EngineLoadError
from edge_agent.inference.engine import Engine
from edge_agent.inference.engine_cache import PLAN_UNREADABLE, BuildTarget, PlanCache, engine_cache_key
from edge_agent.inference.fetch import engine_model, sha256_file
from edge_agent.inference.guarded import GuardedEngine
from edge_agent.inference.manifest import InputProfile, Manifest, resolve_profiles
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine, onnx_input_shapes, ort_providers
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)


# EngineLoadError.reason when a TensorRT engine loaded but failed its warm-up inference: it would fail every
# frame of the run while the health page said TensorRT (a review: CUDA memory at the first enqueue).
WARMUP_FAILED = "warmup_failed"
# Counted with backend "onnxruntime" when the Q/DQ model could not be opened and the fp32 one runs.
INT8_UNUSABLE = "int8_unusable"

# Part of every plan's cache key: bump it with any change to trt_build.py's builder configuration, so
# an upgraded board builds its plans again instead of loading the previous release's.
BUILDER_REVISION = 1
# Written beside every Q/DQ model: bump it with any change to quantize.py's quantize_qdq settings, so an
# upgraded board stops running INT8 models the previous release's quantizer made.
QUANTIZER_REVISION = 1


@dataclass(frozen=True)
class BuildSettings:
    workspace_mib: int
    timing_cache: Path
    log_path: Path

    def key_fields(self) -> dict[str, object]:
        # Paths do not change the plan; the workspace limit can change tactic choice.
        return {
            "workspace_mib": self.workspace_mib, "strongly_typed_int8": True, "builder": BUILDER_REVISION,
        }


class TensorRTPort(Protocol):
    """What the loader needs from TensorRT; the real adapter lives in ``tensorrt_backend``."""

    target: BuildTarget

    def build_plan(
        self, onnx_path: Path, profiles: Sequence[InputProfile], precision: str, settings: BuildSettings
    ) -> bytes: ...

    def load_plan(
        self, plan: bytes, model_name: str, precision: str, profiles: Sequence[InputProfile]
    ) -> Engine: ...


def _open_real_tensorrt() -> TensorRTPort:
    from edge_agent.inference.tensorrt_backend import open_tensorrt

    return open_tensorrt()


@dataclass(frozen=True)
class LoadedEngine:
    manifest: Manifest
    engine: GuardedEngine
    requested_precision: str
    fallback: str | None  # why the engine is not TensorRT at the requested precision, or None
    uncached: str | None = None  # why a TensorRT plan built now is not in the cache (built again next start)

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def precision(self) -> str:
        return self.engine.precision

    def describe(self) -> str:
        text = f"{self.manifest.role} {self.manifest.name}: {self.backend} {self.precision}"
        notes = "; ".join(n for n in (self.fallback, self.uncached) if n)
        return f"{text} ({notes})" if notes else text

    def status(self) -> dict[str, object]:
        """The LiveBoard ``health.engines`` entry."""
        return {
            "name": self.manifest.name,
            "backend": self.backend,
            "precision": self.precision,
            "fallback": self.fallback,
        }


def configured_precision(manifest: Manifest, settings: InferenceSettings) -> str:
    wanted = {"face": settings.face_precision, "pose": settings.pose_precision, "kt": settings.kt_precision}
    return wanted.get(manifest.role, manifest.default_precision)


def precision_for(manifest: Manifest, settings: InferenceSettings) -> str:
    return _offered(manifest, configured_precision(manifest, settings))


def _offered(manifest: Manifest, asked: str) -> str:
    """``asked`` where the manifest offers it, else its default precision."""
    return asked if asked in manifest.precisions else manifest.default_precision


def qdq_model_path(manifest: Manifest, paths: PathSettings) -> Path:
    """Where ``edge-agent engines quantize`` puts the INT8 Q/DQ model of ``manifest``."""
    return paths.cache_dir / "models" / "int8" / f"{manifest.name}-int8-qdq.onnx"


def qdq_source_record(qdq: Path) -> Path:
    """The file beside a Q/DQ model naming (sha256) the model it was quantized from, and how: an upgrade
    that changes a model's pin or its derivation must not go on running INT8 weights of the old one, and
    TensorRT must never be given asymmetric activations (its parser rejects a non-zero zero point)."""
    return qdq.with_name(qdq.name + ".source-sha256")


def qdq_record_text(source: Path, *, symmetric: bool) -> str:
    """The content of :func:`qdq_source_record` for a model quantized from ``source``."""
    activations = "symmetric" if symmetric else "asymmetric"
    return f"{sha256_file(source)}\nactivations={activations}\nquantizer={QUANTIZER_REVISION}\n"


def _qdq_record(qdq: Path) -> list[str]:
    try:
        return qdq_source_record(qdq).read_text(encoding="utf-8").split()
    except OSError:
        return []


def qdq_is_current(qdq: Path, source: Path) -> bool:
    """Made from ``source`` by this release's quantizer (a record of an earlier release is not)."""
    record = _qdq_record(qdq)
    revision = f"quantizer={QUANTIZER_REVISION}"
    return len(record) == 3 and record[0] == sha256_file(source) and record[2] == revision


def qdq_problem(manifest: Manifest, source: Path, paths: PathSettings, *, tensorrt: bool) -> str | None:
    """Why the Q/DQ model of ``manifest`` (quantized from ``source``) cannot run on TensorRT (``tensorrt``)
    or ONNX Runtime; None when it can."""
    qdq = qdq_model_path(manifest, paths)
    if not qdq.is_file():
        # not "run engines quantize": it refuses a model less accurate than the limit (fsanet-1x1's always)
        return (f"no INT8 model at {qdq} (`edge-agent engines quantize {manifest.name} --data PHOTOS` "
                "writes one when it keeps the accuracy limit)")
    if not qdq_is_current(qdq, source):
        return (f"the INT8 model at {qdq} was made from another version of {manifest.name} or by another "
                f"release; run `edge-agent engines quantize {manifest.name}` again")
    if tensorrt and "activations=symmetric" not in _qdq_record(qdq):
        return (f"the INT8 model at {qdq} has asymmetric activations (--asymmetric), which TensorRT cannot "
                "take; ONNX Runtime only")
    return None


def load_engine(
    manifest: Manifest,
    settings: InferenceSettings,
    paths: PathSettings,
    *,
    precision: str | None = None,
    tensorrt: Callable[[], TensorRTPort] = _open_real_tensorrt,
) -> LoadedEngine:
    """Fetch, build or load, and wrap one model; see the module docstring for the fallback rules."""
    onnx_path = engine_model(manifest, paths)
    profiles = resolve_profiles(manifest, onnx_input_shapes(onnx_path))
    asked = precision or configured_precision(manifest, settings)
    want = _offered(manifest, asked)
    # said, not silently replaced: the health page showed the substitute as if it had been asked for
    unoffered = None if want == asked else (
        f"{asked} is not offered for {manifest.name} (it has {', '.join(manifest.precisions)}); runs {want}"
    )
    fallback: str | None = None
    if settings.backend != "onnxruntime":
        build, no_int8 = want, None
        if want == "int8" and (problem := qdq_problem(manifest, onnx_path, paths, tensorrt=True)):
            # what the board runs with no int8 asked, not ONNX Runtime FP32 on the CPU
            build = manifest.default_precision
            no_int8 = f"INT8 asked but {problem}; TensorRT runs {build}"
        try:
            inner, uncached, release = _load_tensorrt(
                manifest, onnx_path, profiles, build, settings=settings, paths=paths, tensorrt=tensorrt
            )
            _mark_up(inner)
            said = "; ".join(n for n in (unoffered, no_int8) if n) or None
            engine = GuardedEngine(inner, profiles, on_close=release)
            return LoadedEngine(manifest, engine, want, said, uncached)
        except EngineLoadError as exc:
            expected = settings.backend == "tensorrt" or exc.reason != TENSORRT_UNAVAILABLE
            if expected:
                metrics.ENGINE_LOAD_FAILURES.labels(manifest.name, "tensorrt", exc.reason).inc()
            log.log(
                logging.WARNING if expected else logging.INFO,
                "model %s: TensorRT not used (%s: %s); running on ONNX Runtime",
                manifest.name,
                exc.reason,
                exc,
            )
            fallback = f"TensorRT {exc.reason.removeprefix('tensorrt_').replace('_', ' ')}: {exc}"
    inner, note = _load_onnxruntime(manifest, onnx_path, want, settings, paths)
    _mark_up(inner)
    reasons = [r for r in (unoffered, fallback, note) if r]
    return LoadedEngine(manifest, GuardedEngine(inner, profiles), want, "; ".join(reasons) or None)


def _mark_up(engine: Engine) -> None:
    metrics.ENGINES_UP.labels(engine.model_name, engine.backend, engine.precision).set(1)


def mark_closed(closed: Engine, running: Engine | None) -> None:
    """``edge_engines_up`` to 0 for an engine just closed, unless ``running`` (the engine answering in its
    place) has the same model, backend and precision: one series stands for both. Else a KT update that
    moved from TensorRT to ONNX Runtime, or was refused, left the closed engine's series at 1 (a review)."""
    if running is not None and (running.model_name, running.backend, running.precision) == (
        closed.model_name, closed.backend, closed.precision
    ):
        return
    metrics.ENGINES_UP.labels(closed.model_name, closed.backend, closed.precision).set(0)


def _warmed_up(engine: Engine, profiles: Sequence[InputProfile]) -> Engine:
    """``engine`` once it has run zeros at its profile's opt shapes; else closed, and EngineLoadError."""
    opt = {p.name: p.opt for p in profiles}
    feeds = {spec.name: np.zeros(opt[spec.name], spec.dtype) for spec in engine.inputs if spec.name in opt}
    try:
        engine.infer(feeds)
    except Exception as exc:  # whatever the adapter raises: the engine is not used
        with contextlib.suppress(Exception):
            engine.close()
        raise EngineLoadError(
            f"the {engine.model_name} engine loaded but its first inference failed ({exc})", WARMUP_FAILED
        ) from exc
    return engine


def _load_tensorrt(
    manifest: Manifest,
    onnx_path: Path,
    profiles: Sequence[InputProfile],
    precision: str,
    *,
    settings: InferenceSettings,
    paths: PathSettings,
    tensorrt: Callable[[], TensorRTPort],
) -> tuple[Engine, str | None, Callable[[], None]]:
    """The engine (warmed up), why a plan built now could not be cached (None when it was, or was loaded),
    and what to call once the engine is closed: until then its plan is kept in the cache."""
    port = tensorrt()
    source = onnx_path
    if precision == "int8":  # only a manifest whose default is int8 gets here without a usable one
        problem = qdq_problem(manifest, onnx_path, paths, tensorrt=True)
        if problem is not None:
            raise EngineLoadError(problem, "int8_unusable")
        source = qdq_model_path(manifest, paths)
    engines_dir = paths.cache_dir / "engines"
    cache = PlanCache(engines_dir)
    build = BuildSettings(
        settings.workspace_mib,
        engines_dir / f"timing-{port.target.trt_version}.cache",
        engines_dir / f"{manifest.name}-{precision}.build.log",
    )
    key = engine_cache_key(port.target, sha256_file(source), precision, profiles, build.key_fields())
    plan = cache.load(manifest.name, precision, key)
    if plan is not None:
        try:
            engine = _warmed_up(port.load_plan(plan, manifest.name, precision, profiles), profiles)
            return engine, None, cache.hold(manifest.name, precision, key)
        except EngineLoadError as exc:
            if exc.reason != PLAN_UNREADABLE:  # the plan is sound (sha256 checked): a new one fails alike
                raise
            if cache.unloadable(manifest.name, precision, key):
                raise EngineLoadError(
                    f"{exc}; this TensorRT could not deserialize it just after building it either, so it is "
                    f"not built again (delete {cache.path_for(manifest.name, precision, key)} to retry)",
                    exc.reason,
                ) from exc
            metrics.ENGINE_LOAD_FAILURES.labels(manifest.name, "tensorrt", exc.reason).inc()
            log.warning("model %s: cached plan failed to load (%s); rebuilding", manifest.name, exc)
            cache.discard(manifest.name, precision, key, "corrupt")
    log.info("model %s: building a TensorRT %s engine; this can take minutes", manifest.name, precision)
    plan = port.build_plan(source, profiles, precision, build)
    uncached = None
    try:
        cache.store(manifest.name, precision, key, plan)
    except OSError as exc:  # a full disk: run the plan just built rather than throw minutes of work away
        uncached = (f"built but not cached ({exc.strerror or exc}): built again at the next start unless "
                    f"space is freed in {engines_dir}")
        log.warning("model %s: %s", manifest.name, uncached)
    try:
        engine = _warmed_up(port.load_plan(plan, manifest.name, precision, profiles), profiles)
        return engine, uncached, cache.hold(manifest.name, precision, key)
    except EngineLoadError as exc:  # the stored plan stays: see the cache-hit branch above
        if exc.reason == PLAN_UNREADABLE and uncached is None:
            cache.mark_unloadable(manifest.name, precision, key, str(exc))
        raise


def _load_onnxruntime(
    manifest: Manifest, onnx_path: Path, precision: str, settings: InferenceSettings, paths: PathSettings
) -> tuple[Engine, str | None]:
    path, run_as, note = onnx_path, "fp32", None
    if precision == "int8":
        problem = qdq_problem(manifest, onnx_path, paths, tensorrt=False)
        if problem is None:
            path, run_as = qdq_model_path(manifest, paths), "int8"
        else:
            note = f"INT8 asked but {problem}; running fp32"
    elif precision == "fp16":
        note = "ONNX Runtime runs the fp32 model"

    def session(model: Path, run_as: str) -> Engine:
        return OnnxRuntimeEngine(
            model,
            model_name=manifest.name,
            precision=run_as,
            # The face detector is the one model big enough to gain from a second thread (7.2 -> 3.6 ms at
            # 640x480 on 2 cores); the tiny KT and pose models only pay the threads' sync cost.
            intra_op_threads=settings.face_threads if manifest.role == "face" else settings.intra_op_threads,
            providers=ort_providers(allow_tensorrt=settings.backend == "onnxruntime"),
        )

    try:
        return session(path, run_as), note
    except EngineLoadError as exc:
        if run_as != "int8":
            raise
        # its record matches the model (qdq_problem), but the file is damaged or from another board: the
        # fp32 model runs (a review: the model ran on no backend at all)
        metrics.ENGINE_LOAD_FAILURES.labels(manifest.name, "onnxruntime", INT8_UNUSABLE).inc()
        log.warning("model %s: INT8 model unusable (%s); running fp32", manifest.name, exc)
        return session(onnx_path, "fp32"), f"INT8 model unusable ({exc}); running fp32"
