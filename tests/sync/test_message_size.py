"""The message size an uplink carries within the keepalive: halved after a stalled session, grown back on
evidence of a faster link."""

from __future__ import annotations

from edge_agent.sync.message_size import MessageSizer

KIB = 1024


def test_a_session_lost_with_no_puback_for_a_keepalive_halves_the_messages() -> None:
    sizer = MessageSizer(256 * KIB, keepalive_s=60)
    assert sizer.session_lost(unacknowledged_s=121.0)
    assert sizer.limit == 128 * KIB
    assert sizer.session_lost(unacknowledged_s=60.0)
    assert sizer.limit == 64 * KIB


def test_a_session_lost_while_pubacks_flowed_or_with_nothing_in_flight_keeps_the_size() -> None:
    # A broker restart or a pulled cable with nothing waiting says nothing about the link's speed.
    sizer = MessageSizer(256 * KIB, keepalive_s=60)
    assert not sizer.session_lost(unacknowledged_s=12.0)
    assert not sizer.session_lost(unacknowledged_s=None)
    assert sizer.limit == 256 * KIB


def test_the_size_never_falls_below_one_lesson_window() -> None:
    sizer = MessageSizer(256 * KIB, keepalive_s=60)
    for _ in range(20):
        sizer.session_lost(unacknowledged_s=600.0)
    assert sizer.limit == 8 * KIB
    assert not sizer.session_lost(unacknowledged_s=600.0)


def test_a_message_near_the_limit_acknowledged_quickly_doubles_it_up_to_the_ceiling() -> None:
    sizer = MessageSizer(256 * KIB, keepalive_s=60)
    sizer.session_lost(unacknowledged_s=120.0)
    sizer.session_lost(unacknowledged_s=120.0)
    assert sizer.limit == 64 * KIB
    assert sizer.acknowledged(40 * KIB, waited_s=2.0)
    assert sizer.limit == 128 * KIB
    assert sizer.acknowledged(100 * KIB, waited_s=7.5)
    assert sizer.limit == 256 * KIB
    assert not sizer.acknowledged(250 * KIB, waited_s=0.1)
    assert sizer.limit == 256 * KIB


def test_small_or_slow_acknowledgements_prove_nothing_and_keep_the_size() -> None:
    sizer = MessageSizer(256 * KIB, keepalive_s=60)
    sizer.session_lost(unacknowledged_s=120.0)
    assert not sizer.acknowledged(300, waited_s=0.05)  # a heartbeat-sized message: any link carries it
    assert not sizer.acknowledged(120 * KIB, waited_s=8.0)  # past an eighth of the keepalive (7.5 s)
    assert sizer.limit == 128 * KIB
