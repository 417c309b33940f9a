"""The README's first command, `bash scripts/demo.sh`, on a fresh Ubuntu 22.04 (JetPack 6's userland, made by
scripts/jetpack-userland.sh, seen through an overlay so it stays fresh): Python without its venv module,
nothing installed, the daemon's packages from PyPI."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
USERLAND = REPO / ".jetpack6"

# second_python: about a minute of pip in the userland, beside the main run in CI (it balances the two)
pytestmark = [
    pytest.mark.slow, pytest.mark.second_python,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mounts need root"),
    pytest.mark.skipif(not (USERLAND / ".complete").is_file(),
                       reason="no JetPack 6 userland: `bash scripts/jetpack-userland.sh 6`"),
]


def _in_fresh_ubuntu(tmp_path: Path, shared: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash as root in a private copy of the userland, with a clone of this work tree at
    /work/main and ../shared (read-only) beside it, as the README lays them out."""
    root, upper, work = (tmp_path / name for name in ("root", "upper", "work"))
    for folder in (root, upper, work):
        folder.mkdir()
    clone = upper / "work/main"
    clone.parent.mkdir()
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
    pack = subprocess.run(["tar", "cf", "-", "--null", "--ignore-failed-read", "-T", "-"], cwd=REPO,
                          input=tracked, capture_output=True, check=True)
    clone.mkdir()
    subprocess.run(["tar", "xf", "-"], cwd=clone, input=pack.stdout, check=True)
    q = shlex.quote
    mounts = "\n".join([
        "set -e",
        f"mount -t overlay overlay -o lowerdir={q(str(USERLAND))},upperdir={q(str(upper))},"
        f"workdir={q(str(work))} {q(str(root))}",
        f"mkdir -p {q(str(root / 'work/shared'))}",
        f"mount --bind {q(str(shared))} {q(str(root / 'work/shared'))}",
        f"mount -o remount,bind,ro {q(str(root / 'work/shared'))}",
        f"mount -t proc proc {q(str(root / 'proc'))}",
        f"mount --rbind /dev {q(str(root / 'dev'))}",
        f"mount -t tmpfs tmpfs {q(str(root / 'tmp'))}",
        f"cp /etc/resolv.conf {q(str(root / 'etc/resolv.conf'))}",
        f"exec chroot {q(str(root))} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root"
        f" LANG=C.UTF-8 bash -c {q('cd /work/main && ' + script)}",
    ])
    # a mount namespace of its own: every mount goes when the command ends, whatever happens
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts],
                          capture_output=True, text=True, timeout=900, check=False)


def test_the_readme_demo_command_on_a_fresh_ubuntu_says_what_to_install_and_then_runs(
    tmp_path: Path, shared_dir: Path
) -> None:
    # Found on 2026-12-05: without python3-venv the first try left a venv without pip, so the second try,
    # after installing python3-venv as Python's own message said, failed "No module named pip". And the demo
    # installed torch and the test tools it never uses (on a Python other than 3.11 here: torch from PyPI).
    demo = f"bash scripts/demo.sh --duration 15 --port {free_port()} --metrics-port {free_port()}"
    done = _in_fresh_ubuntu(tmp_path, shared_dir, " ; ".join([
        f"{demo} ; echo first=$?",
        "ls -d .venv 2>/dev/null ; echo",
        "apt-get install -y -qq python3-venv >/dev/null 2>&1 && echo venv-installed",
        f"{demo} ; echo second=$?",
        ".venv/bin/python -c 'import torch' 2>/dev/null && echo torch-installed ; true",
    ]))
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err[-3000:]
    assert "first=1" in out
    assert "apt-get install python3.10-venv), then run this again" in err
    assert ".venv" not in out.split("first=1", 1)[1].split("venv-installed", 1)[0]  # nothing half-made left
    assert "venv-installed" in out, err[-2000:]
    assert "second=0" in out, (out[-3000:], err[-3000:])
    assert "demo stopped:" in out and '"answers_applied": 0' not in out
    assert "torch-installed" not in out
