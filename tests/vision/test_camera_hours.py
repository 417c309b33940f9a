"""The camera's hours (camera.active_hours, camera.closed_dates, device.timezone): parsing, open or closed
at a moment, and the next opening."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from edge_agent.vision.camera_hours import CameraHours, board_clock, board_zone, opening_text, zone_name

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


# --- closed days (camera.closed_dates) and the board's time zone (device.timezone) ---------------------

HOLIDAY_WEEK = CameraHours.parse(["mon-fri 07:30-17:30"], ["2026-12-07..2026-12-11", "2026-12-16"])


def test_a_closed_day_keeps_the_camera_closed_in_lesson_hours_and_the_next_opening_skips_it():
    assert not HOLIDAY_WEEK.is_open(at(7, "09:00"))  # Monday of the holiday week
    assert not HOLIDAY_WEEK.is_open(at(11, "17:29"))  # its Friday: the last day is included
    assert HOLIDAY_WEEK.is_open(at(15, "09:00")) and not HOLIDAY_WEEK.is_open(at(16, "09:00"))
    assert HOLIDAY_WEEK.next_open(at(4, "18:00")) == at(14, "07:30")  # Friday before -> Monday after
    assert HOLIDAY_WEEK.next_open(at(15, "18:00")) == at(17, "07:30")  # a single closed Wednesday


def test_closed_dates_alone_leave_every_other_hour_open():
    hours = CameraHours.parse([], ["2026-12-01"])
    assert hours.is_open(at(0, "23:59")) and hours.is_open(at(2, "00:00"))
    assert not hours.is_open(at(1, "12:00"))
    assert hours.next_open(at(1, "12:00")) == at(2, "00:00")


def test_a_summer_holiday_longer_than_a_week_is_skipped_to_the_first_lesson_after_it():
    summer = CameraHours.parse(["mon-fri 07:30-17:30"], ["2027-07-10..2027-08-31"])
    assert summer.next_open(datetime(2027, 7, 9, 18, 0)) == datetime(2027, 9, 1, 7, 30)


def test_a_closed_day_is_the_day_in_the_zone_of_the_time_given():
    shanghai = ZoneInfo("Asia/Shanghai")
    # 2026-12-07 00:30 in Shanghai is still Sunday 16:30 in UTC: the Shanghai date decides
    assert HOLIDAY_WEEK.closed_on(datetime(2026, 12, 7, 0, 30, tzinfo=shanghai).date())
    opens = HOLIDAY_WEEK.next_open(datetime(2026, 12, 8, 9, 0, tzinfo=shanghai))
    assert opens == datetime(2026, 12, 14, 7, 30, tzinfo=shanghai)
    assert opens.timestamp() == datetime(2026, 12, 13, 23, 30, tzinfo=timezone.utc).timestamp()


def test_the_opening_time_shows_the_date_when_it_is_a_week_or_more_away():
    assert opening_text(at(1, "07:30"), at(0, "18:00")) == "Tue 07:30"
    assert opening_text(at(14, "07:30"), at(4, "18:00")) == "Mon 2026-12-14 07:30"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("2026-13-01", "write dates like"),
        ("1 Oct", "write dates like"),
        ("2026-10-07..2026-10-01", "the last day comes before the first"),
        ("2026-10-01..", "write dates like"),
        ("2026-07-01..2027-08-31", "more than a year"),
        ("", "write dates like"),
    ],
)
def test_closed_dates_that_cannot_be_read_are_refused_with_the_entry_and_what_to_write(entry, says):
    with pytest.raises(ValueError, match=says) as error:
        CameraHours.parse(["mon-fri 07:30-17:30"], ["2026-10-01..2026-10-07", entry])
    assert repr(entry) in str(error.value)


def test_the_board_clock_follows_the_configured_zone_and_refuses_unknown_names():
    now = board_clock("Asia/Shanghai")()
    assert now.utcoffset() == timedelta(hours=8)
    assert board_clock("")().utcoffset() == datetime.now().astimezone().utcoffset()  # the system's zone
    for bad in ("Asia/Shangai", "UTC+8", "../etc/passwd"):
        with pytest.raises(ValueError, match="is not a time zone; use an IANA name"):
            board_zone(bad)


def test_without_device_timezone_the_opening_after_a_daylight_saving_change_is_at_its_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Time review: the system's zone was taken as today's fixed offset, so from Friday's close until the
    # change the opening on Monday (Berlin, clocks forward on Sunday) was shown as 08:30, not 07:30
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        zone = board_clock("")().tzinfo
        friday = datetime(2027, 3, 26, 17, 0).replace(tzinfo=zone)
        opens = CameraHours.parse(["mon-fri 07:30-17:30"]).next_open(friday)
        assert opens is not None
        assert opens.astimezone(ZoneInfo("Europe/Berlin")).strftime("%a %H:%M") == "Mon 07:30"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_zone_the_board_reports_is_the_configured_one_else_the_systems_iana_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    assert zone_name("Asia/Shanghai") == "Asia/Shanghai"
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert zone_name("") == "Europe/Berlin"
    monkeypatch.setenv("TZ", "CST-8")  # a POSIX rule names no zone: the heartbeat's offset says it
    assert zone_name("") is None
    linked = tmp_path / "localtime"
    linked.symlink_to("/usr/share/zoneinfo/Asia/Shanghai")
    monkeypatch.setenv("TZ", str(linked))  # as /etc/localtime is on a board (timedatectl set-timezone)
    assert zone_name("") == "Asia/Shanghai"
    copied = tmp_path / "copied"
    copied.write_bytes(b"TZif")
    monkeypatch.setenv("TZ", str(copied))
    assert zone_name("") is None
    monkeypatch.setenv("TZ", "posix/Europe/Berlin")  # tzdata's second copy of the zones
    assert zone_name("") == "Europe/Berlin"
    monkeypatch.setenv("TZ", "right/posix/Asia/Shanghai")
    assert zone_name("") == "Asia/Shanghai"
    for none in ("posixrules", "/nonexistent/zoneinfo/Asia/Shanghai"):  # the latter: the clock runs on UTC
        monkeypatch.setenv("TZ", none)
        assert zone_name("") is None
    # a folder of zones: it raised IsADirectoryError in the heartbeat, and such a board sent nothing
    for folder in ("Asia", "posix", "x" * 300):
        monkeypatch.setenv("TZ", folder)
        assert zone_name("") is None
        with pytest.raises(ValueError, match="is not a time zone"):  # device.timezone: a config error
            board_zone(folder)
