"""The daemon component that loads the engines it needs and reports how each one runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.errors import EngineError
from edge_agent.inference.guarded import GuardedEngine
from edge_agent.inference.manifest import Manifest
from edge_agent.inference.select import LoadedEngine, TensorRTPort, _open_real_tensorrt, load_engine
from edge_agent.lifecycle import Health
from edge_agent.telemetry import metrics
from edge_agent.thread_priority import call_at_lower_priority

log = logging.getLogger(__name__)


async def _in_a_thread_of_its_own(load: Callable[[], None]) -> None:
    """``load`` in a daemon thread: a stop during a long TensorRT build leaves it behind and the process
    still exits (asyncio.to_thread's pool threads are joined at exit, build or not)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            load()
        except BaseException as exc:  # each model's failure is kept; this is a bug's way out
            error = exc
        with contextlib.suppress(RuntimeError):  # the daemon stopped meanwhile and its loop is closed
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="engine-load", daemon=True).start()
    await done


class EngineSet:
    """Loads ``manifests`` on start (in a worker thread: a TensorRT build can take minutes).

    A model that cannot be loaded at all leaves the set degraded with the reason; the others still load.
    """

    name = "engines"
    essential = False
    start_timeout_s = None  # a TensorRT build takes minutes; health says "loading" meanwhile (Daemon)

    def __init__(
        self,
        manifests: Sequence[Manifest],
        settings: InferenceSettings,
        paths: PathSettings,
        *,
        tensorrt: Callable[[], TensorRTPort] = _open_real_tensorrt,
        nice_by_role: Mapping[str, int] | None = None,
    ) -> None:
        self._manifests = list(manifests)
        self._nice_by_role = dict(nice_by_role or {})
        self._settings = settings
        self._paths = paths
        self._tensorrt = tensorrt
        self._loaded: dict[str, LoadedEngine] = {}
        self._failed: dict[str, str] = {}
        self._retrying: set[str] = set()  # failed models being loaded again: still failed until that ends
        self._started = False

    async def start(self) -> None:
        await _in_a_thread_of_its_own(self.load_all)

    def load_all(self) -> None:
        self._load_each(self._manifests)
        self._started = True

    def _load_each(self, manifests: list[Manifest]) -> None:
        for manifest in manifests:
            try:
                # created at the role's priority: ONNX Runtime's worker threads inherit it
                self._loaded[manifest.name] = call_at_lower_priority(
                    self._nice_by_role.get(manifest.role, 0), partial(self._load, manifest)
                )
            except Exception as exc:  # one model's failure, whatever it is, never stops the others
                self._retrying.discard(manifest.name)
                self._failed[manifest.name] = str(exc) or exc.__class__.__name__
                # backend "any": no backend could run it (TensorRT's own failures are counted as they happen)
                reason = getattr(exc, "reason", None) or exc.__class__.__name__
                metrics.ENGINE_LOAD_FAILURES.labels(manifest.name, "any", reason).inc()
                log.error("model %s cannot run on any backend: %s", manifest.name, exc)
            else:
                self._failed.pop(manifest.name, None)
                self._retrying.discard(manifest.name)
                log.info("engine loaded: %s", self._loaded[manifest.name].describe())

    async def reload_failed(self) -> int:
        """Load again the models that failed to (a full cache disk at start, a mirror mounted late); how
        many load now. Asked by the daemon before it tries the components that need them again."""
        if not self._failed:
            return 0
        retry = [m for m in self._manifests if m.name in self._failed]
        # each stays failed, said "loading again", until its try ends: a TensorRT build takes minutes, and
        # removed before it the model vanished from the health page, which said ok (a review)
        self._retrying.update(m.name for m in retry)
        try:
            await _in_a_thread_of_its_own(partial(self._load_each, retry))
        finally:
            self._retrying.clear()
        loaded = {m.name for m in retry} - set(self._failed)
        if loaded:
            log.warning("models loaded on a later try: %s", ", ".join(sorted(loaded)))
        return len(loaded)

    def _load(self, manifest: Manifest) -> LoadedEngine:
        return load_engine(manifest, self._settings, self._paths, tensorrt=self._tensorrt)

    async def stop(self) -> None:
        for loaded in self._loaded.values():
            loaded.engine.close()
            metrics.ENGINES_UP.labels(loaded.manifest.name, loaded.backend, loaded.precision).set(0)
        self._loaded.clear()

    def get(self, name: str) -> GuardedEngine:
        loaded = self._loaded.get(name)
        if loaded is None:
            reason = self._failed.get(name, "not loaded (is it listed in the engines the daemon needs?)")
            raise EngineError(f"engine {name}: {reason}")
        return loaded.engine

    def loaded(self) -> list[LoadedEngine]:
        return list(self._loaded.values())

    def status(self) -> list[dict[str, object]]:
        """LiveBoard ``health.engines`` entries; failed models appear with backend "none"."""
        rows = [loaded.status() for loaded in list(self._loaded.values())]
        rows += [
            {"name": n, "backend": "none", "precision": "-", "fallback": self._why(n, why)}
            for n, why in list(self._failed.items())  # a copy: the loader thread may change it meanwhile
        ]
        return rows

    def _why(self, name: str, why: str) -> str:
        return f"{why} (loading again now)" if name in self._retrying else why

    def health(self) -> Health:
        if not self._started:
            return Health(False, "engines are still loading")
        parts = [loaded.describe() for loaded in list(self._loaded.values())]
        parts += [f"{name}: FAILED ({self._why(name, why)})" for name, why in list(self._failed.items())]
        # a plan built but not cached (a full disk) is built again, for minutes, at every start: not ok
        uncached = any(loaded.uncached for loaded in self._loaded.values())
        return Health(not self._failed and not uncached, "; ".join(parts) or "no engines configured")
