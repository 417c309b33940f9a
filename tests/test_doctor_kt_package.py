"""doctor checks the KT model the daemon runs: kt.package_dir's (or the signed update's), not the shipped
one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_agent import doctor
from tests.test_doctor import REPO, synced_root, write_config


def _board_with_package(tmp_path: Path, model_mirror: Path, damaged: bool) -> Path:
    package = tmp_path / "school-package"
    shutil.copytree(REPO / "engines/kt-default", package)
    if damaged:  # cut off, as a copy to the board that ran out of room leaves it
        step = package / "kt_step.onnx"
        step.write_bytes(step.read_bytes()[:5000])
    return write_config(tmp_path, f'[kt]\npackage_dir = "{package}"\n', mirror=model_mirror)


def test_doctor_fails_the_kt_engine_of_a_damaged_package_the_daemon_would_run(
    tmp_path: Path, model_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: with kt.package_dir naming a package whose kt_step.onnx was cut off, doctor checked the
    # shipped model, said "ok models" and "ok engine kt-step" and exited 0; the daemon's KT failed to start
    # (INVALID_PROTOBUF).
    monkeypatch.delenv("EDGE_AGENT_MODEL_MIRROR", raising=False)
    config = _board_with_package(tmp_path, model_mirror, damaged=True)
    results = {r.name: r for r in doctor.run_checks(config, root=synced_root(tmp_path))}
    engine = results["engine kt-step"]
    assert not engine.ok and str(tmp_path / "school-package/kt_step.onnx") in engine.detail, engine


def test_doctor_passes_the_kt_engine_of_a_whole_package(
    tmp_path: Path, model_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_AGENT_MODEL_MIRROR", raising=False)
    config = _board_with_package(tmp_path, model_mirror, damaged=False)
    results = doctor.run_checks(config, root=synced_root(tmp_path))
    assert all(r.ok for r in results), doctor.render_table(results)
    checked = [r.name for r in results if r.name.startswith(("models", "engine"))]
    assert checked == ["models", "engine kt-step"]
