"""Real engines on the shared models, loaded once per test session (ONNX Runtime CPU): YuNet as the daemon
runs it (the manifest's derived copy), FSA-Net as published."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import PathSettings
from edge_agent.inference.fetch import engine_model
from edge_agent.inference.manifest import load_manifests
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.vision.pose import FsaNetPose
from edge_agent.vision.yunet import YuNetDetector


def _engine(name: str, mirror: Path, cache: Path) -> OnnxRuntimeEngine:
    paths = PathSettings(state_dir=cache / "state", cache_dir=cache, model_mirror=mirror)
    return OnnxRuntimeEngine(engine_model(load_manifests()[name], paths), model_name=name)


@pytest.fixture(scope="session")
def face_engine(model_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxRuntimeEngine:
    return _engine("yunet", model_mirror, tmp_path_factory.mktemp("face-cache"))


@pytest.fixture(scope="session")
def pose_engines(model_mirror: Path) -> list[OnnxRuntimeEngine]:
    """The published exports as they are (batch fixed at 1): tests/vision/test_pose.py compares them with
    the product's derived copies."""
    folder = model_mirror / "headpose"
    return [
        OnnxRuntimeEngine(folder / "fsanet-1x1-iter-688590.onnx", model_name="fsanet-1x1"),
        OnnxRuntimeEngine(folder / "fsanet-var-iter-688590.onnx", model_name="fsanet-var"),
    ]


@pytest.fixture(scope="session")
def detector(face_engine: OnnxRuntimeEngine) -> YuNetDetector:
    return YuNetDetector(face_engine, score_threshold=0.6, nms_threshold=0.3)


@pytest.fixture(scope="session")
def fsanet(pose_engines: list[OnnxRuntimeEngine]) -> FsaNetPose:
    return FsaNetPose(pose_engines)
