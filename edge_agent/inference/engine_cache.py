"""The TensorRT plan cache: which plan fits this board, and whether a stored plan is intact.

A plan is only valid for the TensorRT version, GPU and builder inputs it was built with, so its file name
carries a key over all of them (:func:`engine_cache_key`, pure). Each plan is stored with a small header
(magic, key, payload sha256) so truncation or bit rot is seen before TensorRT is handed the bytes; such a
file is a cache miss ("corrupt"), moved aside and counted, and the engine is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.inference.fetch import atomic_writer
from edge_agent.inference.manifest import InputProfile
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

# Plans kept per model and precision: the one in use and the one before it, so rolling a model or
# JetPack back does not cost a rebuild of minutes; older ones (tens of MB each) go when a new one is stored.
KEEP_PLANS = 2
_MAGIC = b"EAPLAN1\n"
_HEADER = len(_MAGIC) + 64 + 64  # magic, key (hex), payload sha256 (hex)


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
        self._drop_old_plans(model, precision)
        return path

    def _drop_old_plans(self, model: str, precision: str) -> None:
        name = re.compile(rf"{re.escape(model)}-{re.escape(precision)}-[0-9a-f]{{16}}\.plan")
        plans = sorted(
            (p for p in self.directory.glob("*.plan") if name.fullmatch(p.name)),
            key=lambda p: p.stat().st_mtime_ns,
            reverse=True,
        )
        for old in plans[KEEP_PLANS:]:
            old.unlink(missing_ok=True)
            log.info("deleted the engine plan %s (built for an earlier model or TensorRT)", old.name)
        kept = {p.name for p in plans[:KEEP_PLANS]}
        for bad in self.directory.glob("*.plan.bad"):  # a damaged plan moved aside, kept while its key is
            if name.fullmatch(bad.name[: -len(".bad")]) and bad.name[: -len(".bad")] not in kept:
                bad.unlink(missing_ok=True)


def _unwrap(blob: bytes, key: str) -> bytes | None:
    if len(blob) <= _HEADER or not blob.startswith(_MAGIC):
        return None
    stored_key = blob[len(_MAGIC) : len(_MAGIC) + 64].decode("ascii", "replace")
    stored_sha = blob[len(_MAGIC) + 64 : _HEADER].decode("ascii", "replace")
    payload = blob[_HEADER:]
    if stored_key != key or hashlib.sha256(payload).hexdigest() != stored_sha:
        return None
    return payload
