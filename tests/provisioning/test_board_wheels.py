"""What install.sh gets from PyPI on a Jetson: pip resolves the package with its `jetson` extra for JetPack 6
(Python 3.10, aarch64, glibc 2.35), from wheels only (a board has no compilers to build one), with CUDA
bindings the board's driver can load. Only pip's resolver runs (metadata from PyPI): nothing is installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# JetPack 6 (L4T r36): Ubuntu 22.04's glibc 2.35 and Python 3.10, on arm64
GLIBC_MINOR = 35
PYTHON_VERSION = "3.10"

pytestmark = pytest.mark.slow


def resolve_for_jetpack6(tmp_path: Path) -> dict[str, str]:
    """name -> version of every distribution pip would install on the board."""
    # pip matches --platform tags literally: list every manylinux a glibc 2.35 board accepts
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in range(GLIBC_MINOR, 16, -1)]
    platforms += ["manylinux2014_aarch64", "linux_aarch64"]
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
            "--disable-pip-version-check", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--abi", "cp310", "--abi", "abi3", "--abi", "none",
            *(arg for platform in platforms for arg in ("--platform", platform)),
            "--target", str(tmp_path / "target"), "--report", str(report), f"{REPO}[jetson]"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    errors = "\n".join(line for line in done.stderr.splitlines() if "is ignored" not in line)
    assert done.returncode == 0, f"pip cannot install edge-agent[jetson] on JetPack 6 from wheels:\n{errors}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_the_jetson_install_resolves_to_wheels_with_cuda_12_bindings_for_jetpack_6(tmp_path: Path) -> None:
    versions = resolve_for_jetpack6(tmp_path)
    for needed in ("numpy", "onnxruntime", "opencv-python-headless", "paho-mqtt", "sqlite-utils",
                   "cryptography", "cuda-python", "jetson-stats"):
        assert needed in versions, sorted(versions)
    # cuda-python 13 needs driver 580 or later; JetPack 6's is 540 (CUDA 12.2 to 12.6), so the CUDA memory
    # layer would fail at its first call on every board.
    for bindings in ("cuda-python", "cuda-bindings"):
        if bindings in versions:
            assert versions[bindings].startswith("12."), versions[bindings]
