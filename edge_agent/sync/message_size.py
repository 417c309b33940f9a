"""How large a message the uplink carries: smaller after a session that ended while one was still going.

Over a slow or flaky uplink a large message may never get through. paho sends PINGREQ once nothing has
come from the broker for a keepalive; it queues behind the messages being sent, and when no byte comes
back within another keepalive, paho cuts the session. A 256 KiB message over 16 kbit/s (a weak or shared
4G link, GPRS) takes 128 s, two keepalives of the default 60 s: the session was cut before the first
PUBACK every time and the backlog was sent again and again. A link that is reset every few seconds (4G
handovers, a firewall that cuts long connections) does the same to any message that takes longer.

So the limit halves after a session ends with a message in flight and no PUBACK for ``STALLED_S`` (over a
link fit for the size, PUBACKs come well within it), and doubles again once a message of at least half
the limit is acknowledged within a quarter of that, its queue included (so the doubled size takes at most
half of it on that link).
"""

from __future__ import annotations

FLOOR_BYTES = 8 * 1024  # a lesson window of the knowledge-tracing stream is about 7 KB
STALLED_S = 2.5


class MessageSizer:
    def __init__(self, ceiling: int, floor: int = FLOOR_BYTES) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = ceiling

    def acknowledged(self, size: int, waited_s: float) -> bool:
        """A message of ``size`` bytes got its PUBACK ``waited_s`` after it was handed over; True if the
        limit grew."""
        if self.limit < self.ceiling and size * 2 >= self.limit and waited_s <= STALLED_S / 4:
            self.limit = min(self.ceiling, self.limit * 2)
            return True
        return False

    def session_lost(self, unacknowledged_s: float | None) -> bool:
        """The session ended; ``unacknowledged_s`` is how long messages had been in flight without a
        PUBACK (None when none were). True if the limit shrank."""
        if unacknowledged_s is None or unacknowledged_s < STALLED_S or self.limit <= self.floor:
            return False
        self.limit = max(self.floor, self.limit // 2)
        return True
