"""The static TensorRT check passes on our adapters and demonstrably fails on TensorRT 8 calls."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_tensorrt_api.py"
BACKEND = REPO / "edge_agent/inference/tensorrt_backend.py"
BUILD = REPO / "edge_agent/inference/trt_build.py"

_spec = importlib.util.spec_from_file_location("check_tensorrt_api", SCRIPT)
assert _spec and _spec.loader
check = importlib.util.module_from_spec(_spec)
sys.modules["check_tensorrt_api"] = check
_spec.loader.exec_module(check)


@pytest.fixture(scope="module")
def names(shared_dir: Path) -> frozenset[str]:
    return check.load_names(shared_dir / "reference" / "tensorrt-10.3-python-api-names.txt")


@pytest.fixture(scope="module")
def newer(shared_dir: Path, names: frozenset[str]) -> frozenset[str]:
    return check.load_names(shared_dir / "reference" / "tensorrt-10.13-python-api-names.txt") - names


def _mutated(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, f"{old!r} no longer in {source.name}; update this test"
    out = tmp_path / source.name
    out.write_text(text.replace(old, new))
    return out


def test_our_tensorrt_modules_use_only_tensorrt_10_3_names(names, newer):
    assert check.check_files([BACKEND, BUILD], names, newer) == []


@pytest.mark.parametrize(
    ("source", "old", "new", "flagged"),
    [
        (
            BUILD,
            "builder.build_serialized_network(network, config)",
            "builder.build_engine(network, config)",
            "build_engine",
        ),
        (BACKEND, "self._context.execute_async_v3(", "self._context.execute_async_v2(", "execute_async_v2"),
        (
            BUILD,
            "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)",
            "config.max_workspace_size = workspace_mib << 20",
            "max_workspace_size",
        ),
        (BACKEND, "self._engine.num_io_tensors", "self._engine.num_bindings", "num_bindings"),
    ],
)
def test_removed_tensorrt_8_call_fails_the_check(tmp_path, names, newer, source, old, new, flagged):
    bad = _mutated(tmp_path, source, old, new)
    problems = check.check_files([bad], names, newer)
    assert any(flagged in p.message and "removed in TensorRT 10" in p.message for p in problems), problems
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-typecheck", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and flagged in done.stdout


def test_unknown_or_newer_names_on_tensorrt_objects_fail(tmp_path, names, newer):
    bad = _mutated(
        tmp_path,
        BUILD,
        "builder.build_serialized_network(network, config)",
        "builder.build_engine_with_config(network, config)",
    )
    problems = check.check_files([bad], names, newer)
    assert [p.message for p in problems] == ["'build_engine_with_config' is only in TensorRT newer than 10.3"]
    bad = _mutated(tmp_path, BUILD, "trt.MemoryPoolType.WORKSPACE", "trt.MemoryPoolType.WORKSPACE_V2")
    assert any("WORKSPACE_V2" in p.message for p in check.check_files([bad], names, newer))


def test_attributes_of_non_tensorrt_objects_are_not_flagged(names):
    source = (
        "import tensorrt as trt\nimport numpy as np\n\ndef f(a: np.ndarray) -> int:\n    return a.itemsize\n"
    )
    assert check.check_source(Path("x.py"), source, names) == []


@pytest.mark.skipif(
    not check.stubs_installed(), reason="tensorrt-stubs not installed: pip install --no-deps tensorrt-stubs"
)
def test_type_check_against_tensorrt_stubs_passes_and_catches_a_removed_call(tmp_path):
    code, output = check.typecheck([BACKEND, BUILD])
    assert code == 0, output
    bad = _mutated(tmp_path, BACKEND, "self._context.execute_async_v3(", "self._context.execute_async_v2(")
    code, output = check.typecheck([bad])
    assert code == 1 and "execute_async_v2" in output
