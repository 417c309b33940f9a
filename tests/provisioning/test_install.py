"""provisioning/install.sh for real: a virtual environment from PyPI (or pip's cache) in a temp prefix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "provisioning" / "install.sh"

pytestmark = pytest.mark.slow


def _install(source: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"EDGE_AGENT_PREFIX": str(prefix), "EDGE_AGENT_EXTRAS": "", "PYTHON": sys.executable}
    return subprocess.run(["sh", str(source / "provisioning/install.sh")], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _release(tmp_path: Path, name: str) -> Path:
    """A copy of the release as install.sh reads it (the work tree's files)."""
    target = tmp_path / name
    target.mkdir()
    parts = ["pyproject.toml", "README.md", "edge_agent", "engines", "systemd", "provisioning"]
    pack = subprocess.run(["tar", "cf", "-", "--exclude=__pycache__", *parts], cwd=REPO, capture_output=True,
                          check=True)
    subprocess.run(["tar", "xf", "-"], cwd=target, input=pack.stdout, check=True)
    return target


def test_install_makes_the_layout_the_units_expect_and_an_upgrade_changes_version(tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    first = _install(REPO, prefix)
    assert first.returncode == 0, first.stderr
    version = (prefix / "VERSION").read_text()
    assert version.startswith("0.1.0 ")
    probe = subprocess.run(
        [str(prefix / "venv/bin/python"), "-c",
         "from edge_agent.inference.manifest import ENGINES_DIR, load_manifests;"
         "from edge_agent.provisioning.system import units_dir;"
         "print(ENGINES_DIR); print(units_dir()); print(sorted(load_manifests()))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.split("\n")
    assert probe[0] == str(prefix / "app/engines") and probe[1] == str(prefix / "app/systemd")
    assert "kt-step" in probe[2] and "yunet" in probe[2]
    assert (prefix / "venv/pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1

    # An upgrade with changed code: a new VERSION (the engines unit rebuilds), the old code kept.
    release = _release(tmp_path, "release-2")
    (release / "engines/NOTE").write_text("a changed manifest folder\n")
    second = _install(release, prefix)
    assert second.returncode == 0, second.stderr
    assert (prefix / "VERSION").read_text() != version
    assert (prefix / "app/engines/NOTE").exists() and not (prefix / "app.old/engines/NOTE").exists()


def test_a_failed_upgrade_leaves_the_running_version_in_place(tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    assert _install(REPO, prefix).returncode == 0
    version = (prefix / "VERSION").read_text()
    broken = _release(tmp_path, "broken")
    pyproject = broken / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=1.24,<3",', '"numpy>=999",', 1))
    result = _install(broken, prefix)
    assert result.returncode == 1 and "previous version is back in place" in result.stderr
    assert (prefix / "VERSION").read_text() == version
    assert "numpy>=1.24" in (prefix / "app/pyproject.toml").read_text()
    ok = subprocess.run([str(prefix / "venv/bin/edge-agent"), "--version"], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("edge-agent 0.1.0")


def test_install_refuses_a_partial_release(tmp_path: Path) -> None:
    release = _release(tmp_path, "partial")
    subprocess.run(["rm", "-rf", str(release / "engines")], check=True)
    result = _install(release, tmp_path / "opt")
    assert result.returncode == 2 and "engines is missing" in result.stderr
    assert not (tmp_path / "opt").exists()
