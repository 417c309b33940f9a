"""The camera's hours (camera.active_hours): parsing, open or closed at a moment, and the next opening."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from edge_agent.vision.camera_hours import CameraHours

SCHOOL = CameraHours.parse(["mon-fri 07:30-17:30", "sat 08:00-12:00"])
MONDAY = datetime(2026, 11, 30)  # 2026-11-30 is a Monday


def at(day: int, hhmm: str) -> datetime:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return MONDAY + timedelta(days=day, hours=hours, minutes=minutes)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (at(0, "07:29"), False),
        (at(0, "07:30"), True),  # the start is inside
        (at(2, "12:00"), True),
        (at(4, "17:29"), True),
        (at(4, "17:30"), False),  # the end is not
        (at(5, "09:00"), True),
        (at(5, "12:00"), False),
        (at(6, "10:00"), False),  # Sunday
        (at(0, "03:00"), False),
    ],
)
def test_a_school_week_is_open_in_lessons_and_closed_at_night_and_on_sunday(when, open_):
    assert SCHOOL.is_open(when) is open_


def test_the_next_opening_skips_the_night_and_the_weekend():
    assert SCHOOL.next_open(at(0, "18:00")) == at(1, "07:30")
    assert SCHOOL.next_open(at(5, "12:30")) == at(7, "07:30")  # Saturday noon -> Monday
    assert SCHOOL.next_open(at(0, "06:00")) == at(0, "07:30")
    assert CameraHours([]).next_open(at(0, "06:00")) is None


def test_days_are_read_as_ranges_lists_wrapping_ranges_and_daily():
    days = lambda entry: sorted({s.day for s in CameraHours.parse([entry]).spans})  # noqa: E731
    assert days("mon-fri 08:00-09:00") == [0, 1, 2, 3, 4]
    assert days("Mon,Wed,fri 08:00-09:00") == [0, 2, 4]
    assert days("fri-mon 08:00-09:00") == [0, 4, 5, 6]
    assert days("daily 19:00-21:30") == list(range(7))


def test_midnight_at_the_end_of_a_day_is_24_00():
    late = CameraHours.parse(["fri 20:00-24:00"])
    assert late.is_open(at(4, "23:59")) and not late.is_open(at(5, "00:00"))


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("weekdays 08:00-17:00", "'weekdays' is not a day"),
        ("mon-fri 8-17", "write days and times like"),
        ("mon-fri", "write days and times like"),
        ("mon 17:00-08:00", "past midnight, write two entries"),
        ("mon 08:00-08:00", "the end must come after the start"),
        ("mon 25:00-26:00", "25:00 is not a time of day"),
        ("mon 08:61-09:00", "08:61 is not a time of day"),
        ("mon 08:00-24:30", "24:30 is not a time of day"),
        ("", "write days and times like"),
    ],
)
def test_hours_that_cannot_be_read_are_refused_with_the_entry_and_what_to_write(entry, says):
    with pytest.raises(ValueError, match=says) as error:
        CameraHours.parse(["mon-fri 07:30-17:30", entry])
    assert repr(entry) in str(error.value)
