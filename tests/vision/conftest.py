"""Real engines on the shared models, loaded once per test session (ONNX Runtime CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.vision.pose import FsaNetPose
from edge_agent.vision.yunet import YuNetDetector


@pytest.fixture(scope="session")
def face_engine(model_mirror: Path) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(model_mirror / "yunet" / "yunet_s_dynamic.onnx", model_name="yunet")


@pytest.fixture(scope="session")
def pose_engines(model_mirror: Path) -> list[OnnxRuntimeEngine]:
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
