"""How large a message the uplink carries within the MQTT keepalive.

The keepalive (paho's on the board, the broker's at 1.5 times it) counts whole packets: a session in
which no packet has been completely sent or received for a keepalive is cut. A 256 KiB message over a
32 kbit/s uplink (a rural school's shared 4G, a congested link) takes 64 s, past the default keepalive of
60 s, so the session ended before the first PUBACK every time: the backlog was sent again and again and
never shrank. Here the limit halves after a session ends with messages in flight and no PUBACK for a
keepalive, and doubles again once a message near the limit is acknowledged within an eighth of it (so
the doubled size takes at most half a keepalive on that link).
"""

from __future__ import annotations

FLOOR_BYTES = 8 * 1024  # a lesson window of the knowledge-tracing stream is about 7 KB


class MessageSizer:
    def __init__(self, ceiling: int, keepalive_s: float, floor: int = FLOOR_BYTES) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.keepalive_s = keepalive_s
        self.limit = ceiling

    def acknowledged(self, size: int, waited_s: float) -> bool:
        """A message of ``size`` bytes got its PUBACK ``waited_s`` after it was handed over; True if the
        limit grew."""
        if self.limit < self.ceiling and size * 2 >= self.limit and waited_s <= self.keepalive_s / 8:
            self.limit = min(self.ceiling, self.limit * 2)
            return True
        return False

    def session_lost(self, unacknowledged_s: float | None) -> bool:
        """The session ended; ``unacknowledged_s`` is how long messages had been in flight without a
        PUBACK (None when none were). True if the limit shrank."""
        if unacknowledged_s is None or unacknowledged_s < self.keepalive_s or self.limit <= self.floor:
            return False
        self.limit = max(self.floor, self.limit // 2)
        return True
