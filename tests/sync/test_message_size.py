"""The message size an uplink carries: halved after a session that ended with a message still going,
grown back on evidence of a faster link."""

from __future__ import annotations

from edge_agent.sync.message_size import MessageSizer

KIB = 1024


def test_a_session_lost_with_no_puback_for_seconds_halves_the_messages() -> None:
    sizer = MessageSizer(256 * KIB)
    assert sizer.session_lost(unacknowledged_s=121.0)  # cut by the keepalive over a 16 kbit/s link
    assert sizer.limit == 128 * KIB
    assert sizer.session_lost(unacknowledged_s=4.9)  # a link reset every 5 s
    assert sizer.limit == 64 * KIB


def test_a_session_lost_while_pubacks_flowed_or_with_nothing_in_flight_keeps_the_size() -> None:
    # A broker restart or a pulled cable says nothing about the link's speed when PUBACKs were coming.
    sizer = MessageSizer(256 * KIB)
    assert not sizer.session_lost(unacknowledged_s=0.3)
    assert not sizer.session_lost(unacknowledged_s=None)
    assert sizer.limit == 256 * KIB


def test_the_size_never_falls_below_one_lesson_window() -> None:
    sizer = MessageSizer(256 * KIB)
    for _ in range(20):
        sizer.session_lost(unacknowledged_s=600.0)
    assert sizer.limit == 8 * KIB
    assert not sizer.session_lost(unacknowledged_s=600.0)


def test_a_message_near_the_limit_acknowledged_quickly_doubles_it_up_to_the_ceiling() -> None:
    sizer = MessageSizer(256 * KIB)
    sizer.session_lost(unacknowledged_s=120.0)
    sizer.session_lost(unacknowledged_s=120.0)
    assert sizer.limit == 64 * KIB
    assert sizer.acknowledged(40 * KIB, waited_s=0.2)
    assert sizer.limit == 128 * KIB
    assert sizer.acknowledged(100 * KIB, waited_s=0.6)
    assert sizer.limit == 256 * KIB
    assert not sizer.acknowledged(250 * KIB, waited_s=0.1)
    assert sizer.limit == 256 * KIB


def test_small_or_slow_acknowledgements_prove_nothing_and_keep_the_size() -> None:
    sizer = MessageSizer(256 * KIB)
    sizer.session_lost(unacknowledged_s=120.0)
    assert not sizer.acknowledged(300, waited_s=0.05)  # a heartbeat-sized message: any link carries it
    assert not sizer.acknowledged(120 * KIB, waited_s=0.7)  # past a quarter of 2.5 s
    assert sizer.limit == 128 * KIB


def test_one_session_cut_at_once_is_a_restart_the_same_first_row_cut_again_is_a_broker_size_limit() -> None:
    sizer = MessageSizer(256 * KIB)
    assert sizer.cut_quickly(first_row=1, rows=42, size=250 * KIB) == ""  # a broker restart, maybe
    assert sizer.cut_quickly(first_row=1, rows=42, size=250 * KIB) == "shrunk"
    assert sizer.limit == 128 * KIB
    assert sizer.cut_quickly(first_row=1, rows=21, size=125 * KIB) == "shrunk"  # still too large
    assert sizer.limit == 64 * KIB


def test_sessions_cut_at_once_on_other_rows_or_on_small_messages_keep_the_size() -> None:
    sizer = MessageSizer(256 * KIB)
    assert sizer.cut_quickly(first_row=1, rows=42, size=250 * KIB) == ""
    assert sizer.cut_quickly(first_row=43, rows=42, size=250 * KIB) == ""  # row 1 went: not a limit
    assert sizer.cut_quickly(first_row=85, rows=1, size=7 * KIB) == ""
    assert sizer.cut_quickly(first_row=85, rows=1, size=7 * KIB) == ""  # any broker takes a lesson window
    assert sizer.limit == 256 * KIB


def test_a_single_row_still_cut_at_the_floor_is_too_large_for_the_broker() -> None:
    sizer = MessageSizer(256 * KIB)
    verdicts = [sizer.cut_quickly(first_row=7, rows=1, size=100 * KIB) for _ in range(7)]
    assert verdicts == ["", "shrunk", "shrunk", "shrunk", "shrunk", "shrunk", "too_large"]
    assert sizer.limit == 8 * KIB



def test_at_a_floor_a_slow_link_brought_a_row_is_dropped_only_after_as_many_cuts_as_from_the_top() -> None:
    # A slow link brought the size down, and it is reset every 2 s: two quick cuts prove no broker limit.
    sizer = MessageSizer(256 * KIB)
    while sizer.session_lost(unacknowledged_s=30.0):
        pass
    verdicts = [sizer.cut_quickly(first_row=9, rows=1, size=9 * KIB) for _ in range(7)]
    assert verdicts == ["", "", "", "", "", "", "too_large"]
