"""Which answer events were applied recently: the in-memory side of answer idempotency.

A client that did not see its response retries with the same client event id; the event is applied once.
SQLite (``kt_applied_events``) holds every key for a week and is read for each micro-batch's new keys, so
memory only has to cover what SQLite does not have yet: the keys whose commit has not run. It keeps those,
and committed keys for ``keep_s`` (a retry within it is found without a read), at most ``max_keys`` of them.
Without that bound, the 10 minutes memory kept grew with the answer rate: about 340 bytes a key, 2.5 MiB
at a lesson's 12.5 answers/s and 400 MiB at the 2,000 answers/s the API sustains.
"""

from __future__ import annotations

from collections import deque


class AppliedEvents:
    """Event keys applied recently, each with what the event said (``Answer.content``) and whose it was:
    a dict to look up, a FIFO to expire.

    Keys are stored in the order they were added, by one writer that commits in order: :meth:`stored`
    says how many of the keys added so far (:attr:`added`) are on disk, or listed by the caller as unsaved.
    Only those may go; the others stay however old they are or however many there are."""

    def __init__(self, keep_s: float, max_keys: int | None = None) -> None:
        if keep_s <= 0:
            raise ValueError("keep_s must be positive")
        if max_keys is not None and max_keys < 0:
            raise ValueError("max_keys must not be negative")
        self.keep_s = keep_s
        self.max_keys = max_keys
        self._keys: dict[str, str | None] = {}
        self._students: dict[str, str] = {}  # key -> the student's pseudonym, for an erase to find them
        self._order: deque[tuple[float, str]] = deque()
        self.added = 0  # keys ever added; the oldest kept is number added - len(_order)
        self._stored = 0  # keys numbered below this are on disk

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
            self.added += 1

    def stored(self, upto: int) -> None:
        """The first ``upto`` keys added (a value of :attr:`added` read earlier) are on disk."""
        self._stored = max(self._stored, upto)

    def erase(self, students: set[str]) -> int:
        """Keep the keys of ``students``' answers (a retry is still a duplicate) but forget what each said
        and whose it was (KTService.erase); gives how many keys were theirs."""
        theirs = [key for key, student in self._students.items() if student in students]
        for key in theirs:
            self._keys[key] = None
            del self._students[key]
        return len(theirs)

    def expire(self, now: float) -> int:
        """Forget stored keys applied before ``now - keep_s``, and the oldest stored ones beyond
        ``max_keys``; gives how many went."""
        cutoff = now - self.keep_s
        limit = len(self._order) if self.max_keys is None else self.max_keys
        gone = 0
        while self._order and self.added - len(self._order) < self._stored and (
            self._order[0][0] < cutoff or len(self._order) > limit
        ):
            key = self._order.popleft()[1]
            self._keys.pop(key, None)
            self._students.pop(key, None)
            gone += 1
        return gone
