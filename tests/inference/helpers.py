"""Shared helpers for the inference tests."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.inference.manifest import Manifest, load_manifests

MANIFESTS: dict[str, Manifest] = load_manifests()


def paths_for(cache: Path, mirror: Path | None) -> PathSettings:
    return PathSettings(state_dir=cache / "state", cache_dir=cache, model_mirror=mirror)


def settings(backend: str = "auto", **kwargs: object) -> InferenceSettings:
    return InferenceSettings(backend=backend, **kwargs)  # type: ignore[arg-type]
