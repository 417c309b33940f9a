"""What a daemon component is, how it reports health, and how its worker threads prove they are alive.

The daemon starts components in dependency order and stops them in reverse. A component that fails to
start degrades the daemon (unless it is essential); the systemd watchdog is fed only while every
registered :class:`Heartbeat` has beaten recently.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# A restart cannot unblock a disk, and a worn eMMC that stalls again and again would run the unit into
# systemd's start limit: a worker waiting on the disk is excused, but not for longer than this.
DISK_WAIT_EXCUSED_S = 600.0


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
    """A worker's proof of life: the worker calls :meth:`beat` each loop turn, within ``max_gap_s``, and
    is excused while it waits on the disk (see :func:`waiting_on_disk`)."""

    name: str
    max_gap_s: float = 10.0
    _last: float = field(default_factory=time.monotonic)
    _disk_since: float | None = None  # monotonic start of the disk wait in progress, if any
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._last

    def disk_wait_s(self) -> float:
        """How long the worker's wait on the disk has lasted so far; 0 when it is not waiting."""
        since = self._disk_since
        return 0.0 if since is None else time.monotonic() - since

    def fresh(self) -> bool:
        return self.age() <= self.max_gap_s or (
            self._disk_since is not None and self.disk_wait_s() < DISK_WAIT_EXCUSED_S
        )

    @contextlib.contextmanager
    def _on_disk(self) -> Iterator[None]:
        self._disk_since = time.monotonic()
        try:
            yield
        finally:
            self._disk_since = None
            self.beat()


def waiting_on_disk(beat: Heartbeat | None) -> contextlib.AbstractContextManager[None]:
    """Wrap a database call that may wait on a stalled disk, so that ``beat``'s worker is not taken for
    hung meanwhile (up to DISK_WAIT_EXCUSED_S)."""
    return contextlib.nullcontext() if beat is None else beat._on_disk()


class HeartbeatRegistry:
    """The heartbeats the watchdog checks; workers register on start and unregister on stop."""

    def __init__(self) -> None:
        self._beats: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()

    def register(self, name: str, max_gap_s: float = 10.0) -> Heartbeat:
        beat = Heartbeat(name, max_gap_s)
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
