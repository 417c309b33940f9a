"""Camera work runs at a lower CPU priority than the answer path: per-thread nice on Linux, inherited."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.inference.engine_set import EngineSet
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.thread_priority import call_at_lower_priority, lower_this_thread
from tests.inference.helpers import MANIFESTS, paths_for, settings

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="nice is per thread only on Linux")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _tasks() -> set[int]:
    """This process's threads but its Python ones: another test's thread left running in this worker is
    not a session's worker (ONNX Runtime's are native threads)."""
    python = {thread.native_id for thread in threading.enumerate()}
    return {int(name) for name in os.listdir("/proc/self/task")} - python


def _nices(tids: set[int]) -> set[int]:
    """The nice values of those of ``tids`` still running: a thread that ended since it was listed was
    not a session's worker (a CI run with 2 test workers: one ended between the listing and its read)."""
    seen = set()
    for tid in tids:
        try:
            seen.add(_nice(tid))
        except ProcessLookupError:
            continue
    return seen


def _on_thread(fn: Callable[[], object]) -> object:
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def test_a_lowered_thread_leaves_the_rest_of_the_process_alone() -> None:
    base = _nice(threading.get_native_id())
    target = max(base, 10)
    seen = _on_thread(lambda: (lower_this_thread(10), _nice(threading.get_native_id())))
    assert seen == (True, target)
    assert _nice(threading.get_native_id()) == base


def test_a_thread_never_gains_priority_it_did_not_have() -> None:
    def twice() -> int:
        lower_this_thread(15)
        lower_this_thread(5)  # a lower nice would need privileges and raise the priority: not done
        return _nice(threading.get_native_id())

    assert _on_thread(twice) == max(15, _nice(threading.get_native_id()))


def test_nice_zero_changes_nothing() -> None:
    base = _nice(threading.get_native_id())
    assert _on_thread(lambda: (lower_this_thread(0), _nice(threading.get_native_id()))) == (False, base)
    assert call_at_lower_priority(0, threading.current_thread) is threading.current_thread()


def test_threads_started_at_lower_priority_inherit_it() -> None:
    target = max(10, _nice(threading.get_native_id()))

    def start_child() -> int:
        seen: list[int] = []
        child = threading.Thread(target=lambda: seen.append(_nice(threading.get_native_id())))
        child.start()
        child.join()
        return seen[0]

    assert call_at_lower_priority(10, start_child) == target


def test_an_error_inside_reaches_the_caller() -> None:
    def broken() -> None:
        raise ValueError("no model here")

    with pytest.raises(ValueError, match="no model here"):
        call_at_lower_priority(10, broken)


def test_onnx_runtime_workers_of_a_session_made_at_lower_priority_run_niced(model_mirror: Path) -> None:
    base = _nice(threading.get_native_id())
    model = model_mirror / "yunet" / "yunet_s_dynamic.onnx"
    before = _tasks()
    normal = OnnxRuntimeEngine(model, intra_op_threads=2)
    normal_workers = _tasks() - before
    before = _tasks()
    lowered = call_at_lower_priority(10, lambda: OnnxRuntimeEngine(model, intra_op_threads=2))
    lowered_workers = _tasks() - before
    try:
        assert normal_workers and lowered_workers, "a 2-thread session starts a worker thread"
        assert _nices(normal_workers) == {base}
        assert _nices(lowered_workers) == {max(10, base)}
        frame = np.zeros((1, 3, 480, 640), np.float32)
        assert lowered.infer({"input": frame}).keys() == normal.infer({"input": frame}).keys()
    finally:
        normal.close()
        lowered.close()


def test_engine_set_loads_camera_models_at_their_roles_priority(tmp_path: Path, model_mirror: Path) -> None:
    base = _nice(threading.get_native_id())
    yunet = MANIFESTS["yunet"]
    loaded = settings("onnxruntime")
    assert loaded.face_threads >= 2, "the face detector's session has a worker thread to look at"
    engines = EngineSet(
        [yunet], loaded, paths_for(tmp_path, model_mirror), nice_by_role={"face": 12, "kt": 0}
    )
    before = _tasks()
    engines.load_all()  # what start() runs in a worker thread; here no executor threads come and go
    try:
        workers = _tasks() - before
        assert _nices(workers) == {max(12, base)}
        assert _nice(threading.get_native_id()) == base
    finally:
        for engine in engines.loaded():
            engine.engine.close()
