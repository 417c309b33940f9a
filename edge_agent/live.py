"""The live picture the teacher view shows: latest values per section, pushed to subscribers.

Producers (KT service, attention pipeline, sync, daemon health) call :meth:`LiveBoard.publish` from any
thread; the web view reads :meth:`snapshot` for the first paint and :meth:`subscribe` for live updates
(server-sent events). Only class-level aggregates go in here: never a student id or an image.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from typing import Any

from edge_agent.telemetry import metrics

SECTIONS = ("attention", "learning", "health", "sync", "device")
# In a subscriber's queue in place of the updates it fell behind on: send it the whole board again.
RESYNC: dict[str, Any] = {"resync": True}


class LiveBoard:
    def __init__(self, queue_size: int = 64) -> None:
        self._state: dict[str, Any] = {name: None for name in SECTIONS}
        self._updated: dict[str, float] = {}
        self._lock = threading.Lock()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue_size = queue_size
        self.dropped_updates = 0  # updates a slow subscriber did not take (it gets the board again)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, section: str, data: Any) -> None:
        if section not in self._state:
            raise ValueError(f"unknown live section {section!r}")
        with self._lock:
            self._state[section] = data
            self._updated[section] = time.time()
        event = {"section": section, "data": data, "at": self._updated[section]}
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The loop may close between the check and the call while shutting down.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fan_out, event)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"sections": copy.deepcopy(self._state), "updated": dict(self._updated)}

    def get(self, section: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._state.get(section))

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _fan_out(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # Dropping this update alone left its section stale on the page until the next one, which
                # after a lesson's last answer never came (a review: 64 dropped, the final count never
                # shown). What it missed is replaced by the whole board, which holds every latest value.
                missed = 1
                while not queue.empty():
                    queue.get_nowait()
                    missed += 1
                queue.put_nowait(RESYNC)
                self.dropped_updates += missed
                metrics.TEACHER_VIEW_DROPS.labels(reason="slow_subscriber").inc(missed)
