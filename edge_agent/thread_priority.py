"""Lower the CPU priority of single threads, so the camera analysis yields the CPU to answers.

On a 2-core board one analysed frame keeps both cores busy for 10-25 ms (the face detector runs two ONNX
Runtime threads, the two pose networks run side by side); an answer arriving then waits for a core. On
Linux the nice value belongs to a thread, not the process, and a thread starts with its creator's
value. A nice of 10 weighs a thread at about a tenth of a nice-0 one (CFS weights 110 vs 1024) when both
want a core, and changes nothing while the answer path is idle, so the camera keeps its frame rate.

Raising a nice value needs no privilege. Elsewhere than Linux (and where a seccomp filter refuses it) the
calls do nothing but say so once in the log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_warned = False


def lower_this_thread(nice: int) -> bool:
    """Give the calling thread at least ``nice``; True when it now runs at that priority or lower."""
    global _warned
    if nice <= 0:
        return False
    if sys.platform != "linux":  # elsewhere PRIO_PROCESS with a thread id is not per thread
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning("could not lower the camera analysis' CPU priority (nice %s): %s", nice, exc)
        return False
    return True


def call_at_lower_priority(nice: int, fn: Callable[[], T]) -> T:
    """``fn()`` run on a short-lived thread at ``nice``: the threads it starts inherit that priority.

    ONNX Runtime starts its worker threads when a session is created and offers no hook to set their
    priority from Python, so sessions whose work should yield are created this way.
    """
    if nice <= 0 or sys.platform != "linux":
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        lower_this_thread(nice)
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    worker = threading.Thread(target=run, name="low-priority-start")
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]
