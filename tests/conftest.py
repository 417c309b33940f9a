"""Fixtures every test may use: the shared data beside the repo, and a private state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import edge_agent  # noqa: F401  (before any test module imports onnxruntime: its telemetry stays off)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (CI places it beside the repo)")
    return SHARED


@pytest.fixture(scope="session")
def model_mirror(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture(scope="session")
def faces_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "faces"


@pytest.fixture()
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _umask_as_it_was() -> object:
    """The process's umask back after each test: `edge-agent run` and `demo` set 077 (the daemon's files
    are its own), and a test calling them in-process left it for every later test in that pytest worker:
    files it wrote for another account were then 0600 (a CA test failed in CI, in that order only)."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
