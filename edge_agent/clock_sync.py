"""Whether this board's own clock is known to be right, for judging the times clients send.

The kernel's own answer (adjtimex) is not readable inside the unit's sandbox: ProtectClock denies the
call, and so does SystemCallFilter=@system-service without it (EPERM in both, under systemd 252 on
2026-12-01). So this reads systemd-timesyncd's flag file, which JetPack 6 (Ubuntu 22.04) runs by default. A
board that syncs with chrony, or not at all, reads as "not known to be synchronised".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

TIMESYNC_FLAG = Path("run/systemd/timesync/synchronized")  # below the root: timesyncd writes it once synced


class ClockSyncFlag:
    """Called: True while timesyncd's flag file exists; looked at no more than every ``recheck_s``."""

    def __init__(
        self, root: Path = Path("/"), recheck_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = root / TIMESYNC_FLAG
        self._recheck_s = recheck_s
        self._clock = clock
        self._checked = -float("inf")
        self._synced = False

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._checked >= self._recheck_s:
            self._checked = now
            self._synced = self._path.exists()
        return self._synced
