"""AppliedEvents: idempotency keys stay until their commit has run, then for the retention window, at most
so many of them."""

from __future__ import annotations

import pytest

from edge_agent.kt.applied_events import AppliedEvents


def _stored(events: AppliedEvents) -> AppliedEvents:
    events.stored(events.added)
    return events


def test_a_key_is_remembered_until_the_window_has_passed() -> None:
    events = AppliedEvents(keep_s=100.0)
    events.add("a", 0.0)
    events.add("b", 50.0)
    _stored(events)
    assert events.expire(99.0) == 0 and "a" in events
    assert events.expire(100.5) == 1
    assert "a" not in events and "b" in events and len(events) == 1


def test_a_repeated_key_keeps_its_first_time() -> None:
    events = AppliedEvents(keep_s=10.0)
    events.add("a", 0.0)
    events.add("a", 9.0)
    _stored(events).expire(10.5)
    assert "a" not in events and len(events) == 0


def test_keys_whose_commit_has_not_run_stay_however_old_and_however_many() -> None:
    events = AppliedEvents(keep_s=60.0, max_keys=10)
    for n in range(50):
        events.add(f"k{n}", 0.0)
    assert events.expire(10_000.0) == 0 and len(events) == 50


def test_only_the_keys_stored_so_far_go_and_an_older_mark_changes_nothing() -> None:
    events = AppliedEvents(keep_s=60.0)
    for key in ("a1", "a2", "a3"):
        events.add(key, 0.0)
    mark = events.added
    for key in ("b1", "b2", "b3"):  # their commit has not run
        events.add(key, 0.0)
    events.stored(mark)
    assert events.expire(1_000.0) == 3
    assert [k in events for k in ("a1", "a3", "b1", "b3")] == [False, False, True, True]
    events.stored(mark - 1)  # a callback that read an earlier count, run late
    assert events.expire(1_000.0) == 0


def test_stored_keys_beyond_the_limit_go_oldest_first_within_the_window() -> None:
    events = AppliedEvents(keep_s=60.0, max_keys=4)
    keys = [f"k{n}" for n in range(10)]
    for key in keys:
        events.add(key, 0.0)
    assert _stored(events).expire(1.0) == 6
    assert [key for key in keys if key in events] == keys[-4:]


def test_memory_stays_bounded_under_a_steady_stream() -> None:
    events = AppliedEvents(keep_s=60.0)
    for n in range(10_000):
        events.add(f"k{n}", n * 1.0)
        _stored(events).expire(n * 1.0)
    assert len(events) == 61


def test_at_the_apis_sustained_rate_memory_holds_at_the_limit() -> None:
    # 2,000 answers/s for 2 minutes in micro-batches of 20, each batch's commit one batch behind. Before,
    # memory kept 10 minutes of keys whatever the rate: at this one 1.2 million, about 400 MiB.
    events = AppliedEvents(keep_s=60.0, max_keys=10_000)
    largest = mark = 0
    for batch in range(12_000):
        now = batch / 100
        for i in range(20):
            events.add(f"{batch}-{i}", now)
        events.stored(mark)  # the previous batch committed
        mark = events.added
        events.expire(now)
        largest = max(largest, len(events))
    assert largest == 10_000


@pytest.mark.parametrize(("keep_s", "max_keys"), [(0.0, None), (-1.0, None), (60.0, -1)])
def test_a_window_that_is_not_positive_or_a_negative_limit_is_refused(
    keep_s: float, max_keys: int | None
) -> None:
    with pytest.raises(ValueError, match="must"):
        AppliedEvents(keep_s=keep_s, max_keys=max_keys)


def test_an_erase_keeps_the_students_keys_without_what_they_said_or_whose() -> None:
    events = AppliedEvents(keep_s=10.0)
    events.add("a1", 0.0, "c-a1", "stu-a")
    events.add("b1", 1.0, "c-b1", "stu-b")
    events.add("a2", 2.0, "c-a2", "stu-a")
    assert events.erase({"stu-a", "stu-x"}) == 2
    assert "a1" in events and "a2" in events  # a retry is still found, as a duplicate
    assert (events.content_of("a1"), events.content_of("a2"), events.content_of("b1")) == (None, None, "c-b1")
    assert events.erase({"stu-a"}) == 0 and "stu-a" not in str(vars(events))
    assert _stored(events).expire(11.5) == 2 and "stu-b" not in str(vars(events))
