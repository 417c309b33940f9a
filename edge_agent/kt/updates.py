"""Knowledge-tracing model updates: load a verified package, check it, and swap it into the running service.

:class:`KTModelActivator` supplies the ``loader`` and ``sanity`` callables of
:class:`~edge_agent.provisioning.model_update.ModelUpdater` (both run on the updater's thread). The swap
into the service happens inside the sanity check on purpose: if the running service refuses the model
(other hidden size or skills, not running), the check fails and the store rolls ``current`` back, so the
version on disk is always the one answering students.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.errors import EdgeAgentError, ModelError
from edge_agent.inference.engine import Engine
from edge_agent.inference.manifest import Manifest as EngineManifest
from edge_agent.inference.select import load_engine, mark_closed
from edge_agent.kt.component import KTComponent, check_engine
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.provisioning.model_package import MANIFEST

log = logging.getLogger(__name__)

MODEL_NAME = "kt"  # the name KT packages are signed with (``edge-agent-provision model sign --name kt``)


@dataclass(frozen=True)
class LoadedKT:
    package: KTPackage
    engine: Engine
    version: str


def step_manifest_for(manifest: EngineManifest, package_dir: Path) -> EngineManifest:
    """The kt-step engine manifest pointed at ``package_dir``'s step model (TensorRT plans are keyed by
    the file's sha256, so a new model gets its own plan)."""
    step = package_dir / "kt_step.onnx"
    source = dataclasses.replace(manifest.source, url=None, repo_path=step, sha256=None)
    return dataclasses.replace(manifest, source=source)


def package_name(package_dir: Path) -> str:
    """The signed name of an installed package (the store verified the manifest before loading)."""
    try:
        name = json.loads((package_dir / MANIFEST).read_text(encoding="utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{package_dir}: cannot read the package manifest: {exc}") from exc
    return str(name)


def trial_inference(engine: Engine, package: KTPackage) -> None:
    """One step from the empty state, then a second from the state it returned, must each give a probability
    per skill and a finite state of the right size: a model whose state goes NaN passed a check of the
    probabilities alone, was swapped in, and then failed every student's second answer (a review)."""
    h = np.zeros((1, package.hidden), np.float32)
    c = np.zeros((1, package.hidden), np.float32)
    for step in ("first", "second"):
        out = engine.infer({
            "skill": np.zeros(1, np.int64),
            "correct": np.ones(1, np.int64),
            "h": h,
            "c": c,
        })
        probs, h_out, c_out = out.get("probs"), out.get("h_out"), out.get("c_out")
        if probs is None or h_out is None or c_out is None:
            raise ModelError("the KT step model gave no probs/h_out/c_out output")
        if probs.shape != (1, len(package.skills)) or h_out.shape != (1, package.hidden):
            raise ModelError(
                f"the KT step model gave probs {probs.shape} and state {h_out.shape}; "
                f"expected (1, {len(package.skills)}) and (1, {package.hidden})"
            )
        if c_out.shape != (1, package.hidden):
            raise ModelError(
                f"the KT step model gave cell state {c_out.shape}; expected (1, {package.hidden})"
            )
        if not (np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()):
            raise ModelError(f"the KT step model gave probabilities outside [0, 1] on a {step} trial answer")
        if not (np.isfinite(h_out).all() and np.isfinite(c_out).all()):
            raise ModelError(
                f"the KT step model gave a non-finite state (h_out/c_out) on a {step} trial answer: every "
                "student's next answer would fail"
            )
        h, c = np.asarray(h_out, np.float32), np.asarray(c_out, np.float32)


class KTModelActivator:
    """Loader and sanity check for KT packages, bound to the daemon's KT component."""

    def __init__(
        self,
        step_manifest: EngineManifest,
        inference: InferenceSettings,
        paths: PathSettings,
        component: Callable[[], KTComponent | None],
        *,
        swap_timeout_s: float = 30.0,
    ) -> None:
        self._manifest = step_manifest
        self._inference = inference
        self._paths = paths
        self._component = component
        self._swap_timeout_s = swap_timeout_s
        self.engine_row: dict[str, object] | None = None  # the LiveBoard engines entry after a swap
        self._last_row: dict[str, object] = {}

    def load(self, package_dir: Path) -> LoadedKT:
        name = package_name(package_dir)
        if name != MODEL_NAME:
            raise ModelError(f"this board updates only the {MODEL_NAME!r} model, not {name!r}")
        package = load_package(package_dir)
        loaded = load_engine(step_manifest_for(self._manifest, package_dir), self._inference, self._paths)
        self._last_row = loaded.status()
        return LoadedKT(package, loaded.engine, package_dir.name)

    def sanity(self, loaded: LoadedKT) -> bool:
        """Check, try, and swap into the running service; raises ModelError (engine closed) on failure, so
        the store rolls back with the reason."""
        component = self._component()
        try:
            check_engine(loaded.engine, loaded.package)
            trial_inference(loaded.engine, loaded.package)
            if component is None:
                raise ModelError("knowledge tracing is not running, so a new model cannot be tried")
            component.swap_model(loaded.package, loaded.engine, self._swap_timeout_s)
        except (EdgeAgentError, ValueError, RuntimeError) as exc:
            log.warning("KT model %s refused: %s", loaded.version, exc)
            loaded.engine.close()
            mark_closed(loaded.engine, running=component.engine if component is not None else None)
            raise ModelError(f"kt {loaded.version} refused: {exc}") from exc
        self.engine_row = self._last_row
        return True
