"""Which answer events were applied recently: the in-memory side of answer idempotency.

A client that did not see its response retries with the same client event id; the event is applied once.
Keys are kept for a retention window and then forgotten, in memory as in SQLite (``kt_applied_events``):
a set that only grew was the daemon's one unbounded structure (+7.5 MiB/h in the 40-minute lesson soak).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class AppliedEvents:
    """Event keys applied within the last ``keep_s`` seconds, each with what the event said
    (``Answer.content``) and whose it was: a dict to look up, a FIFO to expire."""

    def __init__(self, keep_s: float) -> None:
        if keep_s <= 0:
            raise ValueError("keep_s must be positive")
        self.keep_s = keep_s
        self._keys: dict[str, str | None] = {}
        self._students: dict[str, str] = {}  # key -> the student's pseudonym, for an erase to find them
        self._order: deque[tuple[float, str]] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def content_of(self, key: str) -> str | None:
        return self._keys.get(key)

    def add(self, key: str, at: float, content: str | None = None, student: str | None = None) -> None:
        """Remember ``key``; times are expected in non-decreasing order (the one KT thread's clock)."""
        if key not in self._keys:
            self._keys[key] = content
            if student is not None:
                self._students[key] = student
            self._order.append((at, key))

    def erase(self, students: set[str]) -> int:
        """Keep the keys of ``students``' answers (a retry is still a duplicate) but forget what each said
        and whose it was (KTService.erase); gives how many keys were theirs."""
        theirs = [key for key, student in self._students.items() if student in students]
        for key in theirs:
            self._keys[key] = None
            del self._students[key]
        return len(theirs)

    def load(self, rows: Iterable[tuple[str, float]]) -> None:
        """Keys from the database, any order: merged into time order."""
        merged = sorted([*((at, key) for key, at in rows if key not in self._keys), *self._order])
        self._order = deque(merged)
        for _, key in merged:
            self._keys.setdefault(key, None)

    def expire(self, now: float) -> int:
        """Forget keys applied before ``now - keep_s``; gives how many went."""
        cutoff = now - self.keep_s
        gone = 0
        while self._order and self._order[0][0] < cutoff:
            key = self._order.popleft()[1]
            self._keys.pop(key, None)
            self._students.pop(key, None)
            gone += 1
        return gone
