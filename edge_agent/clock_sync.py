"""Whether this board's own clock is known to be right, for judging the times clients send.

The kernel's own answer (adjtimex) is not readable inside the unit's sandbox: ProtectClock denies the
call, and so does SystemCallFilter=@system-service without it (EPERM in both, under systemd 252 on
2026-12-01). So this reads systemd-timesyncd's flag file, which JetPack 6 (Ubuntu 22.04) runs by default,
and on a board that runs chrony instead asks chronyd over its command port on localhost (UDP 323: the
unauthenticated "tracking" request `chronyc tracking` sends; chronyd answers it from localhost by
default). A board that syncs with neither, or not at all, reads as "not known to be synchronised".
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

TIMESYNC_FLAG = Path("run/systemd/timesync/synchronized")  # below the root: timesyncd writes it once synced
CHRONY_RUN_DIR = Path("run/chrony")  # below the root: chronyd's runtime folder (Debian, Ubuntu) while it runs
CHRONY_ADDRESS = ("127.0.0.1", 323)

# chrony's command protocol (candm.h), version 6 (chrony 2.2 and later; Ubuntu 22.04 under JetPack 6 has 4.2)
_PROTOCOL, _REQUEST, _REPLY = 6, 1, 2
_REQ_TRACKING, _RPY_TRACKING, _STT_SUCCESS = 33, 5, 0
_REQUEST_HEADER = struct.Struct("!BBBBHHIII")  # version, type, 2 reserved, command, attempt, seq, 2 pads
_REPLY_HEADER = struct.Struct("!BBBBHHHHHHIII")  # version, type, 2 reserved, command, reply, status, ...
_TRACKING_LENGTH = 104  # the reply's length; chronyd refuses a shorter request (no amplification)
_LEAP_UNSYNCHRONISED = 3
# `local stratum N` in chrony.conf: chronyd serves its own clock and reports "Normal" with this reference
# id, also when it never reached a server. That is not a clock known to be right.
_LOCAL_REFERENCE = 0x7F7F0101


class ChronyReplyError(ValueError):
    """A datagram on the chrony command port that is not a tracking reply to our request."""


def tracking_request(sequence: int) -> bytes:
    header = _REQUEST_HEADER.pack(_PROTOCOL, _REQUEST, 0, 0, _REQ_TRACKING, 0, sequence, 0, 0)
    return header + bytes(_TRACKING_LENGTH - len(header))


def synchronised_from_tracking(reply: bytes, sequence: int) -> bool:
    """True when chronyd's tracking reply says it is synchronised to a real source (not its own clock)."""
    if len(reply) < _TRACKING_LENGTH:
        raise ChronyReplyError(f"tracking reply of {len(reply)} bytes, expected {_TRACKING_LENGTH}")
    version, kind, _, _, command, answer, status, _, _, _, seq, _, _ = _REPLY_HEADER.unpack_from(reply)
    if (version, kind, command, seq) != (_PROTOCOL, _REPLY, _REQ_TRACKING, sequence):
        raise ChronyReplyError(f"not a reply to this request (version {version}, type {kind}, seq {seq})")
    if status != _STT_SUCCESS or answer != _RPY_TRACKING:
        raise ChronyReplyError(f"chronyd refused the tracking request (status {status})")
    reference, = struct.unpack_from("!I", reply, _REPLY_HEADER.size)
    leap, = struct.unpack_from("!H", reply, _REPLY_HEADER.size + 26)  # after ref id, address, stratum
    return leap != _LEAP_UNSYNCHRONISED and reference != _LOCAL_REFERENCE


def chrony_synchronised(address: tuple[str, int] = CHRONY_ADDRESS, timeout_s: float = 0.2) -> bool | None:
    """Asks chronyd; None when it does not answer (not running, or its command port is off)."""
    sequence = int.from_bytes(os.urandom(4), "big")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)  # connected: a closed port fails at once (ICMP) instead of timing out
            sock.send(tracking_request(sequence))
            return synchronised_from_tracking(sock.recv(512), sequence)
    except (OSError, ChronyReplyError):
        return None


class ClockSyncFlag:
    """Called: True while timesyncd's flag file exists or chronyd says it is synchronised; looked at no
    more than every ``recheck_s``. chronyd is asked only while its runtime folder exists (a board on
    timesyncd sends nothing), from whichever thread calls: at most ``timeout_s`` once a minute."""

    def __init__(
        self,
        root: Path = Path("/"),
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        chrony_address: tuple[str, int] = CHRONY_ADDRESS,
    ) -> None:
        self._path = root / TIMESYNC_FLAG
        self._chrony_dir = root / CHRONY_RUN_DIR
        self._chrony_address = chrony_address
        self._recheck_s = recheck_s
        self._clock = clock
        self._checked = -float("inf")
        self._synced = False

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._checked >= self._recheck_s:
            self._checked = now
            self._synced = self._path.exists() or (
                self._chrony_dir.is_dir() and chrony_synchronised(self._chrony_address) is True
            )
        return self._synced
