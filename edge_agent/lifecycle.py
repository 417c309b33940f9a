"""What a daemon component is, how it reports health, and how its worker threads prove they are alive.

The daemon starts components in dependency order and stops them in reverse. A component that fails to
start degrades the daemon (unless it is essential); the systemd watchdog is fed only while every
registered :class:`Heartbeat` has beaten recently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""  # words an IT person can act on, e.g. "camera /dev/video0 cannot be opened"


@runtime_checkable
class Component(Protocol):
    name: str
    essential: bool  # a failed essential component stops the daemon; others only degrade it

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> Health: ...


@dataclass
class Heartbeat:
    """A worker's proof of life: the worker calls :meth:`beat` each loop turn, within ``max_gap_s``;
    ``excused()`` True means the worker waits on something a restart would not fix (a stalled disk)."""

    name: str
    max_gap_s: float = 10.0
    excused: Callable[[], bool] | None = None
    _last: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._last

    def fresh(self) -> bool:
        return self.age() <= self.max_gap_s or (self.excused is not None and self.excused())


class HeartbeatRegistry:
    """The heartbeats the watchdog checks; workers register on start and unregister on stop."""

    def __init__(self) -> None:
        self._beats: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()

    def register(
        self, name: str, max_gap_s: float = 10.0, excused: Callable[[], bool] | None = None
    ) -> Heartbeat:
        beat = Heartbeat(name, max_gap_s, excused)
        with self._lock:
            self._beats[name] = beat
        return beat

    def unregister(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)

    def stale(self) -> list[str]:
        """Names of workers that have not beaten in time (empty when all are alive)."""
        with self._lock:
            beats = list(self._beats.values())
        return [b.name for b in beats if not b.fresh()]
