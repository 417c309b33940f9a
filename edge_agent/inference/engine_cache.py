"""The TensorRT plan cache: which plan fits this board, and whether a stored plan is intact.

A plan is only valid for the TensorRT version, GPU and builder inputs it was built with, so its file name
carries a key over all of them (:func:`engine_cache_key`, pure). Each plan is stored with a small header
(magic, key, payload sha256) so truncation or bit rot is seen before TensorRT is handed the bytes; such a
file is a cache miss ("corrupt"), moved aside and counted, and the engine is rebuilt. So is an intact plan
TensorRT cannot deserialize (:data:`PLAN_UNREADABLE`), unless it is the plan this TensorRT had just built
for the same key (:meth:`PlanCache.mark_unloadable`): building it again would end alike, at every start.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.inference.fetch import atomic_writer, remove_stale_parts
from edge_agent.inference.manifest import InputProfile
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

# Plans kept per model and precision: the two used last (stored or loaded: a hit refreshes the file's
# mtime), so rolling a model or JetPack back does not cost a rebuild of minutes; older ones (tens of MB
# each) go when a new one is stored, except a plan an open engine runs (:meth:`PlanCache.hold`): plans
# built for updates that were then refused never push out the one in use.
KEEP_PLANS = 2
_MAGIC = b"EAPLAN1\n"
_HEADER = len(_MAGIC) + 64 + 64  # magic, key (hex), payload sha256 (hex)
_UNLOADABLE = ".unloadable"  # beside a plan: this TensorRT could not deserialize it just after building it

# EngineLoadError.reason when TensorRT could not deserialize a plan: the one load failure that condemns the
# plan itself. Any other (CUDA memory, an unsupported I/O type) would fail a new plan alike: it is kept.
PLAN_UNREADABLE = "deserialize"

# Plan files that engines of this process still run, with how many engines run each: the daemon reads its
# plan once at start, so its mtime alone did not keep it (a review: two KT updates refused in one run, each
# built and stored before its check, deleted the running plan, rebuilt for minutes at the next start).
_HELD: Counter[str] = Counter()
_HELD_LOCK = threading.Lock()


@dataclass(frozen=True)
class BuildTarget:
    """What a plan depends on besides the model: the runtime and the GPU."""

    trt_version: str
    device_name: str
    compute_capability: tuple[int, int]


def engine_cache_key(
    target: BuildTarget,
    onnx_sha256: str,
    precision: str,
    profiles: Sequence[InputProfile],
    builder_settings: Mapping[str, object],
) -> str:
    """A sha256 hex key that changes whenever any input that shapes the built plan changes."""
    document = {
        "trt": target.trt_version,
        "device": target.device_name,
        "sm": list(target.compute_capability),
        "onnx": onnx_sha256,
        "precision": precision,
        "profiles": [[p.name, list(p.min), list(p.opt), list(p.max)] for p in profiles],
        "builder": {k: builder_settings[k] for k in sorted(builder_settings)},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class PlanCache:
    """Plans under ``cache_dir/engines``; one writer (the engine loader) at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, model: str, precision: str, key: str) -> Path:
        return self.directory / f"{model}-{precision}-{key[:16]}.plan"

    def load(self, model: str, precision: str, key: str) -> bytes | None:
        """The stored plan, or None on a miss (absent or corrupt); misses are counted by reason."""
        path = self.path_for(model, precision, key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            metrics.ENGINE_CACHE_MISSES.labels(model, "absent").inc()
            return None
        except OSError as exc:
            log.warning("engine plan %s unreadable (%s); rebuilding", path, exc)
            metrics.ENGINE_CACHE_MISSES.labels(model, "corrupt").inc()
            return None
        payload = _unwrap(blob, key)
        if payload is None:
            self.discard(model, precision, key, "corrupt")
            return None
        # Used now: kept over plans stored later but not used since (:meth:`_drop_old_plans` goes by mtime),
        # so a rollback finds it; while an engine runs it, :meth:`hold` keeps it whatever is stored later.
        with contextlib.suppress(OSError):  # a read-only cache: nothing is dropped from it either
            os.utime(path)
        return payload

    def discard(self, model: str, precision: str, key: str, reason: str) -> None:
        """Count a miss and move the plan aside (kept once, for a bug report), e.g. if it failed to load."""
        path = self.path_for(model, precision, key)
        metrics.ENGINE_CACHE_MISSES.labels(model, reason).inc()
        log.warning("engine plan %s is %s; moved aside and rebuilding", path, reason)
        try:
            os.replace(path, path.with_suffix(".plan.bad"))
        except FileNotFoundError:
            pass
        except OSError as exc:  # a read-only cache: still a miss, not an error that ends the engine's load
            log.warning("engine plan %s could not be moved aside: %s", path, exc.strerror or exc)

    def store(self, model: str, precision: str, key: str, plan: bytes) -> Path:
        path = self.path_for(model, precision, key)
        with atomic_writer(path) as out:
            out.write(_MAGIC + key.encode() + hashlib.sha256(plan).hexdigest().encode() + plan)
        with contextlib.suppress(OSError):  # a new plan: whether it loads is not known yet
            self._unloadable_path(path).unlink(missing_ok=True)
        self._drop_old_plans(model, precision)
        return path

    def mark_unloadable(self, model: str, precision: str, key: str, why: str) -> None:
        """Remember that TensorRT could not deserialize the plan it had just built for ``key``: the next
        start loads it once more (a failure for lack of memory may pass) but neither discards it as corrupt
        nor builds it again, minutes for the same end. A change of TensorRT, GPU or model is a new key."""
        marker = self._unloadable_path(self.path_for(model, precision, key))
        try:
            with atomic_writer(marker) as out:
                out.write(f"{key}\n{why}\n".encode())
        except OSError as exc:  # then it is built again at the next start; nothing worse
            log.warning("could not record %s: %s", marker, exc.strerror or exc)

    def unloadable(self, model: str, precision: str, key: str) -> bool:
        """Whether :meth:`mark_unloadable` recorded the plan for ``key``."""
        marker = self._unloadable_path(self.path_for(model, precision, key))
        try:
            return marker.read_text(encoding="utf-8").split("\n", 1)[0] == key
        except (OSError, UnicodeDecodeError):
            return False

    @staticmethod
    def _unloadable_path(plan: Path) -> Path:
        return plan.with_name(plan.name + _UNLOADABLE)

    def hold(self, model: str, precision: str, key: str) -> Callable[[], None]:
        """Keep the plan for ``key`` from :meth:`_drop_old_plans` until the returned function is called
        (once the engine running it is closed; calling it again does nothing)."""
        held = _held_name(self.path_for(model, precision, key))
        with _HELD_LOCK:
            _HELD[held] += 1
        released = threading.Event()

        def release() -> None:
            with _HELD_LOCK:
                if not released.is_set():
                    released.set()
                    _HELD[held] -= 1
                    if _HELD[held] <= 0:
                        del _HELD[held]

        return release

    def _drop_old_plans(self, model: str, precision: str) -> None:
        """Keep the :data:`KEEP_PLANS` plans of ``model`` and ``precision`` used last (newest mtime), and
        those open engines run (:meth:`hold`)."""
        name = re.compile(rf"{re.escape(model)}-{re.escape(precision)}-[0-9a-f]{{16}}\.plan")
        plans = sorted(
            (p for p in self.directory.glob("*.plan") if name.fullmatch(p.name)),
            key=lambda p: p.stat().st_mtime_ns,
            reverse=True,
        )
        with _HELD_LOCK:
            held = {p for p in plans[KEEP_PLANS:] if _held_name(p) in _HELD}
        for old in plans[KEEP_PLANS:]:
            if old in held:
                continue
            old.unlink(missing_ok=True)
            log.info("deleted the engine plan %s (not used lately: an earlier model or TensorRT)", old.name)
        kept = {p.name for p in plans[:KEEP_PLANS]} | {p.name for p in held}
        for suffix in (".bad", _UNLOADABLE):  # a damaged plan moved aside, a marker: kept while their key is
            for extra in self.directory.glob(f"*.plan{suffix}"):
                plan_name = extra.name[: -len(suffix)]
                if name.fullmatch(plan_name) and plan_name not in kept:
                    extra.unlink(missing_ok=True)
        # a store (of any key) cut short by a kill or a power cut: its key may never be stored again
        remove_stale_parts(self.directory, f"{glob.escape(model)}-{glob.escape(precision)}-*.plan")


def _held_name(plan: Path) -> str:
    return os.path.abspath(plan)  # two PlanCache objects of one directory hold the same files


def _unwrap(blob: bytes, key: str) -> bytes | None:
    if len(blob) <= _HEADER or not blob.startswith(_MAGIC):
        return None
    stored_key = blob[len(_MAGIC) : len(_MAGIC) + 64].decode("ascii", "replace")
    stored_sha = blob[len(_MAGIC) + 64 : _HEADER].decode("ascii", "replace")
    payload = blob[_HEADER:]
    if stored_key != key or hashlib.sha256(payload).hexdigest() != stored_sha:
        return None
    return payload
