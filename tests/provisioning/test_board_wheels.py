"""What install.sh gets from PyPI on a Jetson: pip resolves the package with its `jetson` extra for JetPack 6
(Python 3.10, aarch64, glibc 2.35) and JetPack 7 (Python 3.12, glibc 2.39), from wheels only (a board has
no compilers to build one), with CUDA bindings the board's driver can load. It runs
provisioning/board-wheels.sh with BOARD_WHEELS_REPORT: only pip's resolver (metadata from PyPI), nothing
fetched or installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JETPACKS = {"JetPack 6": "jetpack6", "JetPack 7": "jetpack7"}  # board-wheels.sh's names for them
_SPEC = importlib.util.spec_from_file_location("board_wheels_missing",
                                               REPO / "provisioning/board_wheels_missing.py")
assert _SPEC is not None and _SPEC.loader is not None
board_wheels_missing = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(board_wheels_missing)


def resolve_for(jetpack: str, tmp_path: Path) -> dict[str, str]:
    """name -> version of every distribution provisioning/board-wheels.sh would fetch for the board."""
    report = tmp_path / "report.json"
    env = os.environ | {"BOARD_WHEELS_REPORT": str(report), "PYTHON": sys.executable}
    env.pop("EDGE_AGENT_EXTRAS", None)  # the script's default: jetson
    done = subprocess.run(["sh", str(REPO / "provisioning/board-wheels.sh"), str(tmp_path / "wheels"),
                           JETPACKS[jetpack], "aarch64"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    errors = "\n".join(line for line in done.stderr.splitlines() if "is ignored" not in line)
    assert done.returncode == 0, f"pip cannot install edge-agent[jetson] on {jetpack} from wheels:\n{errors}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


@pytest.mark.slow
@pytest.mark.parametrize("jetpack", JETPACKS)
def test_the_jetson_install_resolves_to_wheels_with_cuda_12_bindings(jetpack: str, tmp_path: Path) -> None:
    versions = resolve_for(jetpack, tmp_path)
    for needed in ("numpy", "onnxruntime", "opencv-python-headless", "paho-mqtt", "sqlite-utils",
                   "cryptography", "cuda-python", "jetson-stats"):
        assert needed in versions, sorted(versions)
    # cuda-python 13 needs driver 580 or later; JetPack 6's is 540 (CUDA 12.2 to 12.6), so the CUDA memory
    # layer would fail at its first call on every such board. 12.x runs on 580 too (on an H200).
    for bindings in ("cuda-python", "cuda-bindings"):
        if bindings in versions:
            assert versions[bindings].startswith("12."), versions[bindings]
    # pip applies markers for the Python that runs it: fetched with 3.11 for JetPack 6's 3.10, the folder
    # lacked both and the board's offline install failed (a review: "No matching distribution found for
    # tomli>=2.0")
    if jetpack == "JetPack 6":
        assert "tomli" in versions and "async-timeout" in versions, sorted(versions)


def _report(*items: tuple[str, list[str], bool]) -> dict[str, object]:
    """A pip --report of these (name, requires_dist, requested)."""
    return {"install": [{"metadata": {"name": name, "version": "1.0", "requires_dist": requires},
                         "requested": requested} for name, requires, requested in items]}


def test_requirements_the_boards_python_and_architecture_need_are_named() -> None:
    report = _report(
        ("edge-agent", ['tomli>=2.0; python_version < "3.11"', "aiohttp>=3.9"], True),
        ("aiohttp", ['async-timeout<6.0,>=4.0; python_version < "3.11"', "yarl",
                     'brotli; extra == "speedups"'], False),
        ("yarl", ['cuda-bindings~=12.6; platform_machine == "aarch64"'], False),
    )
    missing = board_wheels_missing.missing_requirements
    jetpack6 = missing(report, board_wheels_missing.board_environment("3.10", "aarch64"))
    assert jetpack6 == ["async-timeout<6.0,>=4.0", "cuda-bindings~=12.6", "tomli>=2.0"]
    assert missing(report, board_wheels_missing.board_environment("3.12", "x86_64")) == []
    # a requested extra's requirements count; another's do not
    report["install"][1]["requested"] = True  # type: ignore[index]
    report["install"][1]["requested_extras"] = ["speedups"]  # type: ignore[index]
    assert "brotli" in missing(report, board_wheels_missing.board_environment("3.12", "x86_64"))
