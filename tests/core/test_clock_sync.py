"""Whether the board's clock is known to be right: timesyncd's flag file, or chronyd's own answer over its
command port, asked of real chronyd processes (tests/chrony.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from edge_agent.clock_sync import (
    CHRONY_RUN_DIR,
    TIMESYNC_FLAG,
    ChronyReplyError,
    ClockSyncFlag,
    chrony_synchronised,
    synchronised_from_tracking,
    tracking_request,
)
from tests.chrony import Chronyd, chronyd_unavailable, free_udp_port, synchronised_chrony

needs_chronyd = pytest.mark.skipif(chronyd_unavailable() is not None, reason=str(chronyd_unavailable()))


@needs_chronyd
def test_chronyd_synchronised_to_a_server_reads_as_synchronised_and_one_without_a_source_does_not(
    tmp_path: Path,
) -> None:
    with synchronised_chrony(tmp_path) as client:
        assert chrony_synchronised(client.address) is True
    alone = Chronyd(tmp_path, "alone", ["port 0"])  # port 0: no NTP server of its own
    own_clock = Chronyd(tmp_path, "own", ["port 0", "local stratum 8"])
    try:
        assert chrony_synchronised(alone.address) is False
        # `local stratum 8` says "Leap status: Normal" with nothing behind it: not a clock known to be right
        assert chrony_synchronised(own_clock.address) is False
    finally:
        alone.stop()
        own_clock.stop()


@needs_chronyd
def test_the_daemon_flag_asks_chronyd_only_on_a_board_where_chronyd_runs(tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    with synchronised_chrony(tmp_path) as client:
        address = client.address
        assert ClockSyncFlag(board, recheck_s=0.0, chrony_address=address)() is False  # no /run/chrony
        (board / CHRONY_RUN_DIR).mkdir(parents=True)
        assert ClockSyncFlag(board, recheck_s=0.0, chrony_address=address)() is True
    # chronyd stopped: its folder may stay behind; the answer is "not known", at once (a refused port)
    flag = ClockSyncFlag(board, recheck_s=0.0, chrony_address=address)
    started = time.perf_counter()
    assert flag() is False
    assert time.perf_counter() - started < 0.2


def test_timesyncd_flag_file_is_enough_without_asking_chronyd(tmp_path: Path) -> None:
    (tmp_path / TIMESYNC_FLAG).parent.mkdir(parents=True)
    (tmp_path / TIMESYNC_FLAG).touch()
    assert ClockSyncFlag(tmp_path, recheck_s=0.0, chrony_address=("127.0.0.1", free_udp_port()))() is True


def _reply(sequence: int, *, version: int = 6, status: int = 0, reply: int = 5, leap: int = 0,
           reference: int = 0x0A000001, length: int = 104) -> bytes:
    header = struct.pack("!BBBBHHHHHHIII", version, 2, 0, 0, 33, reply, status, 0, 0, 0, sequence, 0, 0)
    body = struct.pack("!I20sHH", reference, bytes(20), 3, leap)
    return (header + body).ljust(length, b"\0")[:length]


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (_reply(7, length=60), "60 bytes"),
        (b"", "0 bytes"),
        (_reply(8), "not a reply to this request"),  # another request's answer (a late retry)
        (_reply(7, version=5), "not a reply"),
        (_reply(7, status=19, reply=1), "refused the tracking request (status 19)"),
    ],
)
def test_a_reply_that_is_not_a_tracking_answer_to_this_request_is_refused(reply: bytes, says: str) -> None:
    with pytest.raises(ChronyReplyError, match=says.replace("(", r"\(").replace(")", r"\)")):
        synchronised_from_tracking(reply, 7)


def test_leap_status_and_reference_decide_synchronised() -> None:
    assert synchronised_from_tracking(_reply(7), 7) is True
    assert synchronised_from_tracking(_reply(7, leap=3), 7) is False  # "Not synchronised"
    assert synchronised_from_tracking(_reply(7, reference=0x7F7F0101), 7) is False  # LOCAL
    assert len(tracking_request(7)) == 104  # chronyd refuses requests shorter than the reply


def test_garbage_or_silence_on_the_command_port_reads_as_not_known() -> None:
    """Something else on the port: a datagram of junk, or nothing (then the 0.2 s timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        address = server.getsockname()

        def answer_junk() -> None:
            _, peer = server.recvfrom(512)
            server.sendto(b"\x06\x02junk", peer)

        thread = threading.Thread(target=answer_junk)
        thread.start()
        assert chrony_synchronised(address) is None
        thread.join(5)
        started = time.perf_counter()
        assert chrony_synchronised(address, timeout_s=0.2) is None
        assert 0.15 < time.perf_counter() - started < 2.0
