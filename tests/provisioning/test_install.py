"""provisioning/install.sh for real: virtual environments from PyPI (or pip's cache) in a temp prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# In CI on Python 3.10, JetPack 6's, beside the main run (scripts/test.sh): it is the longest test after the
# systemd ones (about 90 s of four venv builds).
pytestmark = [pytest.mark.slow, pytest.mark.second_python]


def _install_env(prefix: Path, **env: str) -> dict[str, str]:
    # The test interpreter may live in a home folder (pyenv): fine for a prefix the units never run.
    return os.environ | {"EDGE_AGENT_PREFIX": str(prefix), "EDGE_AGENT_EXTRAS": "", "PYTHON": sys.executable,
                         "EDGE_AGENT_PYTHON_ANYWHERE": "1", **env}


def _install(source: Path, prefix: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = str(source / "provisioning/install.sh")
    return subprocess.run(["sh", script, *args], env=_install_env(prefix, **env), capture_output=True,
                          text=True, timeout=600, check=False)


def _install_in_background(source: Path, prefix: Path) -> subprocess.Popen[bytes]:
    """install.sh in its own process group, to be killed whole part-way."""
    return subprocess.Popen(["sh", str(source / "provisioning/install.sh")], env=_install_env(prefix),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _release(tmp_path: Path, name: str, note: str) -> Path:
    """A copy of the release as install.sh reads it (the work tree's files), with one file changed."""
    target = tmp_path / name
    target.mkdir()
    parts = ["pyproject.toml", "README.md", "edge_agent", "engines", "systemd", "provisioning"]
    pack = subprocess.run(["tar", "cf", "-", "--exclude=__pycache__", "--exclude=BUILD", *parts], cwd=REPO,
                          capture_output=True, check=True)
    subprocess.run(["tar", "xf", "-"], cwd=target, input=pack.stdout, check=True)
    (target / "engines/NOTE").write_text(note)
    return target


def _running(prefix: Path) -> str:
    """What the units would run: /opt/edge-agent/venv/bin/edge-agent, through the links."""
    out = subprocess.run([str(prefix / "venv/bin/edge-agent"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    return out.strip()


def test_releases_switch_whole_and_a_failed_or_interrupted_install_never_touches_the_running_one(
    tmp_path: Path,
) -> None:
    # One prefix through install, upgrade, rollback, a failed pip, and a third release whose first install
    # is killed (each full install builds a venv: about 17 s with pip's cache).
    prefix = tmp_path / "opt"
    first = _install(_release(tmp_path, "r1", "one\n"), prefix)
    assert first.returncode == 0, first.stderr
    version = (prefix / "VERSION").read_text()
    release_id = version.split()[1]
    assert version.startswith("0.1.0 ") and _running(prefix) == f"edge-agent 0.1.0 (build {release_id})"
    probe = subprocess.run(
        [str(prefix / "venv/bin/python"), "-c",
         "from edge_agent.inference.manifest import ENGINES_DIR, load_manifests;"
         "from edge_agent.provisioning.system import units_dir;"
         "print(ENGINES_DIR); print(units_dir()); print(sorted(load_manifests()))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.split("\n")
    engines = prefix / f"releases/{release_id}/app/engines"
    assert Path(probe[0]) == (prefix / "app/engines").resolve() == engines
    assert Path(probe[1]) == (prefix / "app/systemd").resolve()
    assert "kt-step" in probe[2] and "yunet" in probe[2]
    assert (prefix / "venv/pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1
    assert "restart edge-agent" in first.stderr  # not under systemd here: it says so

    # An upgrade with changed code: a new release and VERSION (the engines unit rebuilds), the old one kept.
    second = _install(_release(tmp_path, "r2", "two\n"), prefix)
    assert second.returncode == 0, second.stderr
    new_version = (prefix / "VERSION").read_text()
    assert new_version != version and (prefix / "app/engines/NOTE").read_text() == "two\n"
    assert (prefix / "previous/app/engines/NOTE").read_text() == "one\n"

    back = _install(REPO, prefix, "--rollback")
    assert back.returncode == 0, back.stderr
    assert (prefix / "VERSION").read_text() == version and _running(prefix).endswith(f"(build {release_id})")
    assert (prefix / "previous/VERSION").read_text() == new_version  # and forward again the same way

    # Found by the upgrade audit: install.sh moved the running code aside and deleted app.old before pip
    # ran; a failed pip left nothing to roll back to, and a power cut during pip left unfinished code in
    # app/ with a VERSION naming another release.
    broken = _release(tmp_path, "broken", "broken\n")
    pyproject = broken / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=1.24,<3",', '"numpy>=999",', 1))
    failed = _install(broken, prefix)
    assert failed.returncode == 1 and "nothing was switched" in failed.stderr
    assert (prefix / "VERSION").read_text() == version and _running(prefix).endswith(f"(build {release_id})")
    assert len(list((prefix / "releases").iterdir())) == 2  # the failed one is gone

    # A third release, its first install killed while pip runs (a power cut, Ctrl-C): nothing switched,
    # and the next run rebuilds it rather than using the half-made one.
    third_source = _release(tmp_path, "r3", "three\n")
    known = set((prefix / "releases").iterdir())
    cut = _install_in_background(third_source, prefix)
    try:
        deadline = time.monotonic() + 120
        while not any((p / "venv/bin/pip").exists() for p in set((prefix / "releases").iterdir()) - known):
            assert cut.poll() is None and time.monotonic() < deadline, "install.sh never reached pip"
            time.sleep(0.05)
        time.sleep(1.0)  # into pip's work
    finally:
        os.killpg(cut.pid, signal.SIGKILL)
        cut.wait(30)
    assert (prefix / "VERSION").read_text() == version and _running(prefix).endswith(f"(build {release_id})")
    third = _install(third_source, prefix)
    assert third.returncode == 0, third.stderr
    third_id = (prefix / "VERSION").read_text().split()[1]
    assert _running(prefix).endswith(f"(build {third_id})") and third_id != release_id
    # the two before it were kept until the switch; then only current and previous
    assert len(list((prefix / "releases").iterdir())) == 2
    assert (prefix / "previous/VERSION").read_text() == version

    # A release that changes only a unit file (or only a dependency pin) is a new release: its id covered
    # edge_agent/ and engines/ only, so it was "already installed", pip never ran and the old units stayed.
    units_only = _release(tmp_path, "r3-units", "three\n")
    with (units_only / "systemd/edge-agent.service").open("a") as unit:
        unit.write("# hardened in r3-units\n")
    fourth = _install(units_only, prefix)
    assert fourth.returncode == 0 and "already installed" not in fourth.stderr, fourth.stderr
    assert (prefix / "VERSION").read_text().split()[1] != third_id
    assert "# hardened in r3-units" in (prefix / "app/systemd/edge-agent.service").read_text()


def test_install_refuses_a_partial_release_or_an_earlier_layout(tmp_path: Path) -> None:
    release = _release(tmp_path, "partial", "p\n")
    subprocess.run(["rm", "-rf", str(release / "engines")], check=True)
    result = _install(release, tmp_path / "opt")
    assert result.returncode == 2 and "engines is missing" in result.stderr
    assert not (tmp_path / "opt").exists()
    old = tmp_path / "old-layout"
    (old / "app").mkdir(parents=True)
    result = _install(REPO, old)
    assert result.returncode == 2 and "earlier install.sh" in result.stderr
    assert _install(REPO, tmp_path / "empty", "--rollback").returncode == 2


def test_an_interpreter_the_service_cannot_run_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # Under a real systemd, a venv on pyenv's Python in /root failed with status=203/EXEC: the unit hides
    # /root, /home and /tmp. An interpreter in /tmp stands for it here.
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        python = Path(folder) / "python3"
        python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
        python.chmod(0o755)
        prefix = tmp_path / "opt"
        refused = _install(REPO, prefix, PYTHON=str(python), EDGE_AGENT_PYTHON_ANYWHERE="")
    assert refused.returncode == 2
    assert f"{python}, which the edge-agent service cannot run" in refused.stderr
    assert "PYTHON=/usr/bin/python3" in refused.stderr
    assert not prefix.exists()


def _system_python_with_opencv(tmp_path: Path, cv2_source: str) -> Path:
    """A system interpreter (this machine's /usr/bin/python3) in a prefix of its own, whose system
    packages hold a stand-in for JetPack's cv2: a venv made from it with --system-site-packages sees that
    cv2 as a board's venv sees JetPack's, without PYTHONPATH."""
    real = Path("/usr/bin/python3").resolve()
    fits = "import sys, ensurepip, venv; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))"
    if not real.is_file() or subprocess.run([str(real), "-c", fits], check=False).returncode != 0:
        pytest.skip("needs /usr/bin/python3 (3.10-3.12, with venv) to stand in for JetPack's")
    version = subprocess.run([str(real), "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    system = tmp_path / "system"
    (system / "bin").mkdir(parents=True)
    (system / "lib").mkdir()
    subprocess.run(["cp", str(real), str(system / "bin/python3")], check=True)
    (system / "lib" / version).symlink_to(f"/usr/lib/{version}")  # its standard library
    cv2 = system / "lib/python3/dist-packages/cv2"  # where Debian's and Ubuntu's python3-opencv put it
    cv2.mkdir(parents=True)
    (cv2 / "__init__.py").write_text(cv2_source)
    return system / "bin/python3"


GSTREAMER_CV2 = """
def getBuildInformation():
    return "  Video I/O:\\n    GStreamer:                   YES (1.20.3)\\n    v4l/v4l2:   YES\\n"
"""


def _venv_cv2(prefix: Path) -> str:
    return subprocess.run([str(prefix / "venv/bin/python"), "-c", "import cv2; print(cv2.__file__)"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()


def test_the_venv_uses_the_systems_opencv_with_gstreamer_for_csi_cameras(tmp_path: Path) -> None:
    """opencv-python-headless (no GStreamer) in the venv hid JetPack's OpenCV (with GStreamer): a CSI
    camera's nvarguscamerasrc pipeline could never open, although the README said the venv sees it."""
    system = _system_python_with_opencv(tmp_path, GSTREAMER_CV2)
    prefix = tmp_path / "opt"
    done = _install(REPO, prefix, PYTHON=str(system))
    assert done.returncode == 0, done.stderr
    assert "removed opencv-python-headless" in done.stderr
    assert _venv_cv2(prefix) == str(system.parents[1] / "lib/python3/dist-packages/cv2/__init__.py")


def test_the_opencv_wheel_stays_where_the_systems_opencv_does_not_load_in_the_venv(tmp_path: Path) -> None:
    # JetPack 6's OpenCV is built for Ubuntu's numpy 1.21; pip puts numpy 2 in the venv, where it fails
    # to import ("numpy.core.multiarray failed to import"): without the wheel there would be no cv2 at all.
    system = _system_python_with_opencv(tmp_path, GSTREAMER_CV2 + """
import sys
if sys.prefix != sys.base_prefix:
    raise ImportError("numpy.core.multiarray failed to import")
""")
    prefix = tmp_path / "opt"
    done = _install(REPO, prefix, PYTHON=str(system))
    assert done.returncode == 0, done.stderr
    assert "kept opencv-python-headless" in done.stderr and "numpy.core.multiarray" in done.stderr
    assert "/venv/" in _venv_cv2(prefix)
