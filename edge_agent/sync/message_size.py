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

A broker's own size limit looks the same, only faster: Mosquitto's ``message_size_limit`` (and its
``max_packet_size`` under MQTT 3.1.1) is not in CONNACK; the broker refuses the message in its PUBACK (0x95,
which paho takes for a protocol error and ends the session) or cuts the session at once. The oldest rows
are claimed first, so every session rebuilt the same oversized message and sync stopped for good (a
review). A session that ends within ``STALLED_S`` of a message larger than the floor, with no PUBACK for
it, is once a broker restart; the same first row twice in a row is a limit: the size halves at each such
loss from the second on, and one row still cut at the floor, as often in a row as the halvings from the
ceiling take, can never go (``cut_quickly``). Under MQTT 3.1.1 a broker over ``message_size_limit``
acknowledges and discards, which nothing here can see: ``mqtt.max_message_bytes`` is the only guard there.
"""

from __future__ import annotations

from typing import Literal

FLOOR_BYTES = 8 * 1024  # a lesson window of the knowledge-tracing stream is about 7 KB
STALLED_S = 2.5


class MessageSizer:
    def __init__(self, ceiling: int, floor: int = FLOOR_BYTES) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = ceiling
        self._suspect: int | None = None  # the first row of the last message cut quickly
        self._cuts = 0  # ... and how many sessions in a row were cut so on it

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
        self._suspect, self._cuts = None, 0
        return True

    def cut_quickly(self, first_row: int, rows: int, size: int) -> Literal["", "shrunk", "too_large"]:
        """The session ended (or the broker refused the message as too large) less than ``STALLED_S`` after a
        message of ``size`` bytes and ``rows`` rows, the first ``first_row``, was sent, with no PUBACK for
        it. "shrunk": the limit halved; "too_large": one row the broker will never take, to drop."""
        if size <= self.floor:
            return ""  # any broker takes a lesson window: a flaky link or a restart, not a size limit
        self._cuts = self._cuts + 1 if first_row == self._suspect else 1
        self._suspect = first_row
        if self._cuts < 2:
            return ""
        if self.limit > self.floor:
            self.limit = max(self.floor, self.limit // 2)
            return "shrunk"
        # A drop takes as many cuts in a row as the halvings from the ceiling, however the limit came down:
        # at a floor reached over a slow link, a link reset every 2 s (4G handovers) cuts one row twice too.
        if rows == 1 and self._cuts >= (self.ceiling // self.floor).bit_length() + 1:
            self._suspect, self._cuts = None, 0
            return "too_large"
        return ""
