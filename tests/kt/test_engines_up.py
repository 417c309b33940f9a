"""edge_engines_up follows the KT engine that answers: a model update closes the engine it replaces (or, when
refused, its own) and that engine's series goes to 0, unless the engine answering has the same labels.

Real packages, the real loader and ONNX Runtime; TensorRT through the tests' fake of its port."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from edge_agent.config import DeviceSettings, InferenceSettings, KTSettings, PathSettings
from edge_agent.errors import ModelError
from edge_agent.inference.manifest import Manifest, load_manifests
from edge_agent.inference.select import LoadedEngine, load_engine
from edge_agent.kt.component import KTComponent
from edge_agent.kt.package import KTPackage
from edge_agent.kt.updates import KTModelActivator, step_manifest_for
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from edge_agent.telemetry import metrics
from tests.inference.fake_tensorrt import FakeTensorRT
from tests.kt.test_model_trial import _step_model

TENSORRT = ("kt-step", "fake-tensorrt", "fp32")
ONNXRUNTIME = ("kt-step", "onnxruntime", "fp32")


def _up() -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[k] for k in ("engine", "backend", "precision")): s.value
        for family in metrics.ENGINES_UP.collect()
        for s in family.samples
        if s.labels["engine"] == "kt-step"
    }


@pytest.fixture()
def paths(tmp_path: Path) -> PathSettings:
    return PathSettings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")


@pytest.fixture()
def step(package: KTPackage) -> Manifest:
    return step_manifest_for(load_manifests()["kt-step"], package.path)


def _load(step: Manifest, paths: PathSettings, backend: str) -> LoadedEngine:
    if backend == "fake-tensorrt":
        return load_engine(step, InferenceSettings(backend="tensorrt"), paths, tensorrt=FakeTensorRT())
    return load_engine(step, InferenceSettings(backend="onnxruntime"), paths)


@pytest.mark.parametrize(("running_on", "left"), [("fake-tensorrt", 0.0), ("onnxruntime", 1.0)])
def test_a_refused_kt_update_leaves_its_engines_series_at_0_unless_the_running_engine_shares_it(
    package: KTPackage, device: DeviceSettings, paths: PathSettings, step: Manifest, tmp_path: Path,
    running_on: str, left: float,
) -> None:
    # A review: the refused update's engine was closed, and its series stayed at 1 beside the running one's.
    running = _load(step, paths, running_on)
    component = KTComponent(KTSettings(), device, running.engine, None, None, None, HeartbeatRegistry())
    update = tmp_path / "kt-2.0"
    shutil.copytree(package.path, update)
    (update / "manifest.json").write_text(json.dumps({"name": "kt", "version": "2.0"}), encoding="utf-8")
    # a step model whose state goes NaN: it loads, and its trial answer refuses it
    _step_model(update / "kt_step.onnx", package.hidden, len(package.skills), 0.5, 1.0, float("nan"))
    activator = KTModelActivator(step, InferenceSettings(backend="onnxruntime"), paths, lambda: component)
    loaded = activator.load(update)
    assert _up()[ONNXRUNTIME] == 1.0
    with pytest.raises(ModelError, match=r"kt kt-2\.0 refused: .*non-finite state"):
        activator.sanity(loaded)
    up = _up()
    assert up[ONNXRUNTIME] == left
    assert up[TENSORRT if running_on == "fake-tensorrt" else ONNXRUNTIME] == 1.0  # the running one's
    running.engine.close()


def test_a_kt_model_swap_sets_the_replaced_engines_series_to_0_unless_the_new_one_shares_it(
    device: DeviceSettings, db: Database, outbox: Outbox, paths: PathSettings, step: Manifest
) -> None:
    # A review: an update running on ONNX Runtime where the model it replaced ran on TensorRT left both at 1.
    async def run() -> list[dict[tuple[str, ...], float]]:
        component = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await component.start()
        assert component.service is not None
        package, seen = component.service.package, []
        try:
            for backend in ("fake-tensorrt", "onnxruntime", "onnxruntime"):
                loaded = await asyncio.to_thread(_load, step, paths, backend)
                await asyncio.to_thread(component.swap_model, package, loaded.engine)
                seen.append(_up())
        finally:
            await component.stop()
        return seen

    on_tensorrt, moved_to_onnxruntime, onnxruntime_again = asyncio.run(run())
    assert on_tensorrt[TENSORRT] == 1.0
    assert moved_to_onnxruntime[TENSORRT] == 0.0 and moved_to_onnxruntime[ONNXRUNTIME] == 1.0
    assert onnxruntime_again[ONNXRUNTIME] == 1.0  # the closed engine had the same labels as the new one
