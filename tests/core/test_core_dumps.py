"""A daemon that aborts (the watchdog's SIGABRT) leaves no core file: its memory holds camera frames."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

ABORT = """
import os, sys
import numpy as np
frame = np.full((480, 640, 3), 77, np.uint8)  # a stand-in for a camera frame
if sys.argv[1] == "forbid":
    from edge_agent.core_dumps import forbid_core_dumps
    assert forbid_core_dumps()
os.abort()
"""


def _abort_in(folder: Path, mode: str) -> list[Path]:
    folder.mkdir()
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    allow = lambda: resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # noqa: E731
    proc = subprocess.run(
        [sys.executable, "-c", ABORT, mode], check=False, cwd=folder, preexec_fn=allow, timeout=60
    )
    assert proc.returncode < 0
    return list(folder.glob("core*"))


def test_an_aborted_daemon_process_leaves_no_core_file(tmp_path: Path) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern")
    if not pattern.is_file() or pattern.read_text().strip() not in ("core", "core.%p"):
        pytest.skip("this machine's core_pattern does not write cores into the working folder")
    if not _abort_in(tmp_path / "control", "allow"):
        pytest.skip("this machine writes no core file even when allowed (container limit?)")
    assert _abort_in(tmp_path / "forbidden", "forbid") == []
