"""Our error handling around TensorRT, without TensorRT: the optional build log and which load failure
condemns a cached plan. Nothing here builds or runs a plan; the stand-ins below only raise or return None
where TensorRT or CUDA would, so the classification of those failures is what is tested."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import pytest

from edge_agent.errors import EngineError, EngineLoadError
from edge_agent.inference import tensorrt_backend
from edge_agent.inference.engine_cache import PLAN_UNREADABLE
from edge_agent.inference.tensorrt_backend import TensorRTAdapter
from edge_agent.inference.trt_build import BuildLog

FULL = Path("/dev/full")  # every write to it fails with ENOSPC, as on a full disk


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.levelno == logging.WARNING and "build log" in r.getMessage()]


def test_a_build_log_that_cannot_be_opened_is_skipped_with_a_warning(tmp_path, caplog):
    # Review r2: open_log's OSError (a cache gone read-only) ended the build, and the model had no backend.
    not_a_folder = tmp_path / "engines"
    not_a_folder.write_text("a file where the engines folder should be\n")
    caplog.set_level(logging.WARNING)
    build_log = BuildLog(not_a_folder / "fsanet-1x1-fp16.build.log")
    assert not build_log.is_open
    build_log.write("2026-12-06T10:00:00 Severity.INFO [MemUsageChange] ...\n")
    build_log.close()
    assert len(_warnings(caplog)) == 1 and "cannot be opened" in _warnings(caplog)[0]


@pytest.mark.skipif(not FULL.exists(), reason="/dev/full (Linux) is not on this machine")
def test_a_full_disk_under_the_build_log_stops_the_logging_not_the_build(caplog):
    # Review r3: the buffered lines failed only at close(), in build_plan's finally, and the OSError replaced
    # the return of a plan built for minutes.
    caplog.set_level(logging.WARNING)
    at_close = BuildLog(FULL)
    assert at_close.is_open
    at_close.write("one buffered line\n")  # fits the buffer: fails only when flushed
    at_close.close()
    assert len(_warnings(caplog)) == 1 and "No space left on device" in _warnings(caplog)[0]
    caplog.clear()
    at_write = BuildLog(FULL)
    for i in range(400):  # past the buffer: a write fails; warned once, nothing more is written
        at_write.write(f"line {i} " + "x" * 100 + "\n")
    assert not at_write.is_open
    at_write.close()
    assert len(_warnings(caplog)) == 1


class _Memory:
    """Stands in for CudaMemory (no CUDA here): its first CUDA call fails as it does when Orin's shared
    memory is exhausted."""

    made: ClassVar[list[_Memory]] = []

    def __init__(self) -> None:
        self.closed = False
        _Memory.made.append(self)

    def stream(self) -> object:
        raise EngineError("CUDA cudaStreamCreate failed: cudaErrorMemoryAllocation")

    def close(self) -> None:
        self.closed = True


class _Runtime:
    """What deserialize_cuda_engine gives: an object, None (TensorRT refused the plan), or an exception."""

    def __init__(self, result: object) -> None:
        self.result = result

    def deserialize_cuda_engine(self, plan: bytes) -> object:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class _Deserialized:
    def create_execution_context(self) -> object:
        return object()


@pytest.mark.parametrize(
    ("deserialized", "reason"),
    [
        (None, PLAN_UNREADABLE),
        (RuntimeError("std::exception: plan from another TensorRT"), PLAN_UNREADABLE),
        (_Deserialized(), "load_failed"),  # CUDA out of memory after deserializing: the plan is sound
    ],
    ids=["returned-none", "raised", "cuda-error-after"],
)
def test_only_a_failed_deserialize_marks_a_plan_unreadable(monkeypatch, deserialized, reason):
    # Review r1: every load failure was reported as "deserialize": a sound plan was discarded, built again.
    monkeypatch.setattr(tensorrt_backend, "CudaMemory", _Memory)
    _Memory.made.clear()
    adapter = TensorRTAdapter.__new__(TensorRTAdapter)  # its __init__ needs a GPU
    adapter._runtime = _Runtime(deserialized)  # type: ignore[assignment]
    with pytest.raises(EngineLoadError) as raised:
        adapter.load_plan(b"plan bytes", "fsanet-1x1", "fp16", [])
    assert raised.value.reason == reason
    assert [m.closed for m in _Memory.made] == [True]
