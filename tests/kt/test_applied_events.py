"""AppliedEvents: idempotency keys are kept for the retention window, then forgotten."""

from __future__ import annotations

import pytest

from edge_agent.kt.applied_events import AppliedEvents


def test_a_key_is_remembered_until_the_window_has_passed() -> None:
    events = AppliedEvents(keep_s=100.0)
    events.add("a", 0.0)
    events.add("b", 50.0)
    assert events.expire(99.0) == 0 and "a" in events
    assert events.expire(100.5) == 1
    assert "a" not in events and "b" in events and len(events) == 1


def test_a_repeated_key_keeps_its_first_time() -> None:
    events = AppliedEvents(keep_s=10.0)
    events.add("a", 0.0)
    events.add("a", 9.0)
    events.expire(10.5)
    assert "a" not in events and len(events) == 0


def test_keys_loaded_from_the_database_expire_in_time_order() -> None:
    events = AppliedEvents(keep_s=10.0)
    events.add("live", 20.0)
    events.load([("late", 15.0), ("early", 5.0), ("live", 1.0)])
    assert len(events) == 3
    assert events.expire(20.0) == 1 and "early" not in events
    assert events.expire(30.5) == 2 and len(events) == 0


def test_memory_stays_bounded_under_a_steady_stream() -> None:
    events = AppliedEvents(keep_s=60.0)
    for n in range(10_000):
        events.add(f"k{n}", n * 1.0)
        events.expire(n * 1.0)
    assert len(events) == 61


def test_a_window_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError):
        AppliedEvents(keep_s=0)


def test_an_erase_keeps_the_students_keys_without_what_they_said_or_whose() -> None:
    events = AppliedEvents(keep_s=10.0)
    events.add("a1", 0.0, "c-a1", "stu-a")
    events.add("b1", 1.0, "c-b1", "stu-b")
    events.add("a2", 2.0, "c-a2", "stu-a")
    assert events.erase({"stu-a", "stu-x"}) == 2
    assert "a1" in events and "a2" in events  # a retry is still found, as a duplicate
    assert (events.content_of("a1"), events.content_of("a2"), events.content_of("b1")) == (None, None, "c-b1")
    assert events.erase({"stu-a"}) == 0 and "stu-a" not in str(vars(events))
    assert events.expire(11.5) == 2 and "stu-b" not in str(vars(events))
