"""Build a TensorRT plan from an ONNX model (TensorRT 10.3 as in JetPack 6.1/6.2; ready for 11).

The one module importing tensorrt (guarded, so the package loads on machines without it);
``tensorrt_backend`` takes ``trt`` from here. Precision rules:

* fp32 and int8 build a strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the
  ONNX carries the precision, INT8 comes from its Q/DQ nodes (``edge-agent engines quantize``). This is
  the only path TensorRT 11 keeps.
* fp16 on TensorRT 10 sets ``BuilderFlag.FP16`` on a weakly typed network. Where that flag no longer
  exists (TensorRT 11) an fp16 build needs an fp16 ONNX and is refused with a clear reason.

The timing cache is loaded before and saved after each build (it turns a 10-minute Orin build into about
one minute); the plan is returned as bytes and stored by the caller; the TensorRT log goes to a file when
it can (:class:`BuildLog`: a cache folder gone read-only or full loses the log, never the build).
Errors TensorRT refuses with are :class:`EngineLoadError`; anything else a build raises (an untyped TensorRT
error, an OSError of the cache's disk) is turned into one by the adapter, ``TensorRTAdapter.build_plan``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.errors import TENSORRT_UNAVAILABLE, EngineLoadError
from edge_agent.inference.fetch import atomic_writer, open_log
from edge_agent.inference.manifest import InputProfile

_IMPORT_ERROR = ""
if TYPE_CHECKING:
    import tensorrt as trt
else:
    try:
        import tensorrt as trt

        if not hasattr(trt, "Builder"):  # tensorrt-stubs alone leaves an empty namespace package
            raise ImportError("only the tensorrt-stubs type stubs are installed, not TensorRT")
    except ImportError as exc:  # guarded: the package imports on machines without TensorRT
        trt = None
        _IMPORT_ERROR = str(exc)

log = logging.getLogger(__name__)


def require_tensorrt() -> Any:
    """The tensorrt module, or EngineLoadError (reason tensorrt_unavailable) saying why it does not import."""
    if trt is None:
        raise EngineLoadError(
            f"the tensorrt Python package does not import ({_IMPORT_ERROR}); on a Jetson install "
            "JetPack's python3-libnvinfer",
            TENSORRT_UNAVAILABLE,
        )
    return trt


_LoggerBase: Any = trt.ILogger if trt is not None else object
_ProgressBase: Any = trt.IProgressMonitor if trt is not None else object


class BuildLog:
    """The build log file, which is optional: a folder it cannot be opened in (a cache gone read-only after
    I/O errors) or a write that fails (a full disk, often seen only when the buffer is flushed at close) is
    warned about once and the build goes on without the file. It never raises."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO | None = None
        if path is not None:
            try:
                self._file = open_log(path)
            except OSError as exc:
                log.warning(
                    "TensorRT build log %s cannot be opened (%s); building without it",
                    path,
                    exc.strerror or exc,
                )

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def write(self, line: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line)
        except OSError as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()  # flushes: a full disk shows here
        except OSError as exc:
            self._warn(exc)

    def _give_up(self, exc: OSError) -> None:
        file, self._file = self._file, None
        self._warn(exc)
        if file is not None:
            with contextlib.suppress(OSError):  # the buffered rest fails alike; the descriptor still closes
                file.close()

    def _warn(self, exc: OSError) -> None:
        log.warning(
            "TensorRT build log %s: %s; it is incomplete and no more is written to it",
            self.path,
            exc.strerror or exc,
        )


class FileLogger(_LoggerBase):
    """TensorRT's log: warnings and errors to our log, everything from INFO up to the build log file."""

    def __init__(self, path: Path | None = None) -> None:
        trt.ILogger.__init__(self)
        self.file = BuildLog(path)
        self.errors: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        level = int(severity)  # INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
        if level <= int(trt.ILogger.Severity.ERROR):
            self.errors.append(msg)
            log.error("TensorRT: %s", msg)
        elif level <= int(trt.ILogger.Severity.WARNING):
            log.warning("TensorRT: %s", msg)
        if level <= int(trt.ILogger.Severity.INFO):
            self.file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {severity} {msg}\n")

    def close(self) -> None:
        self.file.close()


class ProgressLogger(_ProgressBase):
    """Log lines for each top-level build phase so a long Orin build is visibly alive."""

    def __init__(self, model: str) -> None:
        trt.IProgressMonitor.__init__(self)
        self._model = model
        self._steps: dict[str, int] = {}

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        self._steps[phase_name] = num_steps
        if parent_phase is None:
            log.info("building %s: %s (%d steps)", self._model, phase_name, num_steps)

    def step_complete(self, phase_name: str, step: int) -> bool:
        return True  # never cancel; the daemon stops by ending the process

    def phase_finish(self, phase_name: str) -> None:
        if phase_name in self._steps:
            del self._steps[phase_name]


def _has_fp16_flag() -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def _parse(network: trt.INetworkDefinition, logger: FileLogger, onnx_path: Path) -> trt.OnnxParser:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        problems = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineLoadError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(problems)}", "onnx_parse")
    return parser


def _config(
    builder: trt.Builder,
    profiles: Sequence[InputProfile],
    precision: str,
    workspace_mib: int,
    weakly_typed_fp16: bool,
) -> trt.IBuilderConfig:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if weakly_typed_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
    config.add_optimization_profile(profile)
    return config


def _load_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):
        log.warning("TensorRT timing cache %s does not match this TensorRT; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is not None:
        try:
            with atomic_writer(path) as out:
                out.write(bytes(cache.serialize()))
        except OSError as exc:  # only the next build's speed depends on it
            log.warning("TensorRT timing cache %s not saved: %s", path, exc)


def build_plan(
    onnx_path: Path,
    profiles: Sequence[InputProfile],
    precision: str,
    *,
    workspace_mib: int,
    timing_cache: Path,
    log_path: Path,
    model_name: str = "",
) -> bytes:
    """Serialized plan bytes for ``onnx_path``; :class:`EngineLoadError` with a reason otherwise."""
    require_tensorrt()
    weakly_typed_fp16 = precision == "fp16" and _has_fp16_flag()
    if precision == "fp16" and not weakly_typed_fp16:
        raise EngineLoadError(
            "this TensorRT has no FP16 builder flag; fp16 needs an fp16 ONNX model", "fp16_unsupported"
        )
    logger = FileLogger(log_path)
    try:
        builder = trt.Builder(logger)
        flags = 0 if weakly_typed_fp16 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)  # explicit batch is the only mode since TensorRT 10
        _parser = _parse(network, logger, onnx_path)  # the parser must outlive the build
        config = _config(builder, profiles, precision, workspace_mib, weakly_typed_fp16)
        _load_timing_cache(config, timing_cache)
        config.progress_monitor = ProgressLogger(model_name or onnx_path.stem)
        started = time.monotonic()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            where = f"see {log_path}" if logger.file.is_open else "no error logged"
            detail = "; ".join(logger.errors[-3:]) or where
            raise EngineLoadError(f"TensorRT could not build {onnx_path.name}: {detail}", "build_failed")
        _save_timing_cache(config, timing_cache)
        log.info(
            "built %s %s engine in %.0f s (log: %s)",
            model_name,
            precision,
            time.monotonic() - started,
            log_path,
        )
        return bytes(serialized)
    finally:
        logger.close()
