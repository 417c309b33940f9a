"""Obtain the vision engines by manifest name through the inference package (fetch + backend choice)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import Config
from edge_agent.errors import ModelError
from edge_agent.inference.engine import Engine
from edge_agent.inference.manifest import FACE_MODEL, POSE_MODELS, load_manifests
from edge_agent.inference.select import LoadedEngine, load_engine


@dataclass(frozen=True)
class VisionEngines:
    face: Engine
    pose: list[Engine]
    loaded: list[LoadedEngine]  # for the health page's engine list

    def close(self) -> None:
        for item in self.loaded:
            item.engine.close()


def load_vision_engines(config: Config) -> VisionEngines:
    """YuNet, plus both FSA-Net models when ``attention.pose_method`` is fsanet.

    Raises ModelError (missing or wrong-hash model) or EngineLoadError (no runtime can run it).
    """
    manifests = load_manifests()
    names = [FACE_MODEL]
    if config.attention.pose_method == "fsanet":
        names += list(POSE_MODELS)
    missing = [n for n in names if n not in manifests]
    if missing:
        raise ModelError(f"engine manifests {missing} are missing from engines/; reinstall edge-agent")
    loaded = [load_engine(manifests[n], config.inference, config.paths) for n in names]
    return VisionEngines(loaded[0].engine, [item.engine for item in loaded[1:]], loaded)
