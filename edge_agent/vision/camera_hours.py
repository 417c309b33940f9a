"""When the camera may run: the school's hours and closed days, from ``camera.active_hours`` and
``camera.closed_dates`` (pure).

Entries such as ``"mon-fri 07:30-17:30"``, ``"sat 08:00-12:00"`` or ``"daily 19:00-21:30"`` (evening study),
in the board's local time; closed days such as ``"2026-10-01..2026-10-07"`` (a holiday week) or
``"2027-01-01"``. Outside them the daemon closes the camera, so an empty classroom, the cleaners, the night
and the holidays are not watched, and a day-and-night board stops storing empty windows (~900 a night).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")
EXAMPLE = '"mon-fri 07:30-17:30"'
DATES_EXAMPLE = '"2026-10-01..2026-10-07" or "2027-01-01"'
ALWAYS = "daily 00:00-24:00"  # the hours of a board that sets only closed dates
MAX_CLOSED_DAYS = 366  # a longer range is a typo in the year (a board switched off for good: camera.enabled)


@dataclass(frozen=True)
class Span:
    day: int  # Monday 0, as datetime.weekday()
    start: int  # minutes after midnight
    end: int  # minutes after midnight, after start; 1440 is midnight at the end of the day


def _minutes(text: str, entry: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"camera hours {entry!r}: {text} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


def _day(name: str, entry: str) -> int:
    try:
        return DAYS.index(name)
    except ValueError:
        raise ValueError(
            f"camera hours {entry!r}: {name!r} is not a day; use {', '.join(DAYS)}, a range such as "
            "mon-fri, or daily"
        ) from None


def _days(text: str, entry: str) -> list[int]:
    if text == "daily":
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        start = _day(first, entry)
        end = _day(last, entry) if dash else start
        days.extend((start + k) % 7 for k in range((end - start) % 7 + 1))  # fri-mon wraps the weekend
    return days


def _closed_range(entry: str) -> tuple[date, date]:
    first, dots, last = entry.strip().partition("..")
    try:
        start = date.fromisoformat(first.strip())
        end = date.fromisoformat(last.strip()) if dots else start
    except ValueError:
        raise ValueError(f"camera closed dates {entry!r}: write dates like {DATES_EXAMPLE}") from None
    if end < start:
        raise ValueError(f"camera closed dates {entry!r}: the last day comes before the first")
    if (end - start).days >= MAX_CLOSED_DAYS:
        raise ValueError(
            f"camera closed dates {entry!r}: more than a year; check the years (to switch the camera off "
            "for good, set camera.enabled = false)"
        )
    return start, end


class CameraHours:
    """The weekly spans in which the camera may run, less the closed days (holidays, closures)."""

    def __init__(self, spans: Sequence[Span], closed: Sequence[tuple[date, date]] = ()) -> None:
        self.spans = tuple(spans)
        self.closed = tuple(closed)  # (first, last) days, both closed

    @classmethod
    def parse(cls, entries: Sequence[str], closed_dates: Sequence[str] = ()) -> CameraHours:
        """Raises ValueError naming the entry that cannot be read. No entries but closed dates: every
        hour of the other days."""
        closed = [_closed_range(entry) for entry in closed_dates]
        spans: list[Span] = []
        for entry in entries:
            match = _ENTRY.match(entry.lower())
            if match is None:
                raise ValueError(f"camera hours {entry!r}: write days and times like {EXAMPLE}")
            start, end = _minutes(match["start"], entry), _minutes(match["end"], entry)
            if end <= start:
                raise ValueError(
                    f"camera hours {entry!r}: the end must come after the start on the same day; "
                    "past midnight, write two entries (e.g. \"fri 20:00-24:00\" and \"sat 00:00-02:00\")"
                )
            spans.extend(Span(day, start, end) for day in _days(match["days"], entry))
        if not entries and closed:
            return cls(cls.parse([ALWAYS]).spans, closed)
        return cls(spans, closed)

    def closed_on(self, day: date) -> bool:
        return any(first <= day <= last for first, last in self.closed)

    def is_open(self, when: datetime) -> bool:
        day, minute = when.weekday(), when.hour * 60 + when.minute
        in_span = any(s.day == day and s.start <= minute < s.end for s in self.spans)
        return in_span and not self.closed_on(when.date())

    def next_open(self, when: datetime) -> datetime | None:
        """The next start of a span after ``when`` on a day that is not closed (within a year and a week),
        or None when there is none. ``when`` may be aware: the days are then counted in its zone."""
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        for offset in range(MAX_CLOSED_DAYS + 8):
            day = midnight + timedelta(days=offset)
            if self.closed_on(day.date()):
                continue
            starts = [day + timedelta(minutes=s.start) for s in self.spans if s.day == day.weekday()]
            later = [start for start in starts if start > when]
            if later:
                return min(later)
            if offset >= 7 and not self.closed:
                return None  # a week without a span: there is none
        return None


NOT_PLACES = ("posixrules", "localtime", "Factory")  # files among tzdata's zones that name no place


def _not_a_place(name: str) -> bool:
    """tzdata's second copies of the zones (posix/, right/) and its files that are no zone: a heartbeat sent
    "posix/Asia/Shanghai" as the school's zone, and the teacher view's browser refused it."""
    return name.startswith(("posix/", "right/")) or name in NOT_PLACES


def board_zone(name: str) -> tzinfo | None:
    """The zone named by ``device.timezone``; None (empty name) means the operating system's own zone.

    Raises ValueError for a name that is not an IANA zone."""
    if not name:
        return None
    try:
        if _not_a_place(name):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Asia" is a folder of zones
        raise ValueError(
            f"{name!r} is not a time zone; use an IANA name such as Asia/Shanghai or Europe/London "
            "(timedatectl list-timezones lists them)"
        ) from None


# The system's zone, read again when $TZ or the file it comes from changes: `timedatectl set-timezone`
# under a running daemon left the camera's hours and the heartbeat in the old zone until a restart (a
# review: 8 h off). A few stat calls a look, against reading and parsing the zone file each time.
_system: tuple[tuple[object, ...], tzinfo | None, str | None] | None = None


def _system_state() -> tuple[tzinfo | None, str | None]:
    """The system's zone and its IANA name (None where there is none), cached while $TZ and the file it
    names (or /etc/localtime) stay the same: the same link target, file and modification time."""
    global _system
    tz = os.environ.get("TZ", "")
    name = tz.lstrip(":")
    key: tuple[object, ...] = (tz,)
    if not name or name.startswith("/"):
        path = os.path.realpath(name or "/etc/localtime")
        try:
            stat = os.stat(path)
            key = (tz, path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = (tz, path)
    cached = _system
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    zone, known = _read_system_zone(), _system_zone_name()
    if known is not None and zone is not None:
        zone = ZoneInfo(known)  # the same rules, with its name (doctor tells UTC from London by it)
    _system = (key, zone, known)
    return zone, known


def _read_system_zone() -> tzinfo | None:
    name = os.environ.get("TZ", "").lstrip(":")
    try:
        if name and not name.startswith("/"):
            return ZoneInfo(name)
        with open(name or "/etc/localtime", "rb") as data:
            return ZoneInfo.from_file(data)
    except (OSError, ValueError, ZoneInfoNotFoundError):  # a POSIX rule ("CST-8"), no file: today's offset
        return None


def _system_zone_name() -> str | None:
    system = os.environ.get("TZ", "").lstrip(":")
    if not system or system.startswith("/"):
        path = os.path.realpath(system or "/etc/localtime")
        _, found, system = path.partition("/zoneinfo/")
        if not found or not os.path.isfile(path):  # a missing file: the clock runs on UTC, not on its name
            return None
    # the same zones under tzdata's posix/ and right/ folders: the IANA name is the rest
    while system.startswith(("posix/", "right/")):
        system = system.split("/", 1)[1]
    if system in NOT_PLACES:
        return None
    try:
        return ZoneInfo(system).key
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: TZ=Asia, a folder (a review: it
        return None  # raised in the heartbeat, and the board sent nothing at all)


def system_zone() -> tzinfo | None:
    """The operating system's zone with its rules ($TZ, else /etc/localtime), or None where it has none.
    ``datetime.now().astimezone()`` gives only today's fixed offset: the opening after a daylight-saving
    change was shown an hour off (08:30 for 07:30) from Friday's close to the change."""
    return _system_state()[0]


def zone_name(name: str) -> str | None:
    """The IANA name of the board's zone: ``device.timezone``, else the system's ($TZ, else the zone file
    /etc/localtime links to); None where it has no name (a POSIX rule, a copied file)."""
    return name or _system_state()[1]


def board_time(zone: tzinfo | None, when: float | None = None) -> datetime:
    """``when`` (a Unix time; None: now), aware, in ``zone``, else (None) in the system's zone as it is
    now."""
    zone = zone or system_zone()
    if zone is None:
        return (datetime.now() if when is None else datetime.fromtimestamp(when)).astimezone()
    return datetime.now(zone) if when is None else datetime.fromtimestamp(when, zone)


def board_clock(name: str) -> Callable[[], datetime]:
    """The board's local time, aware: in ``device.timezone`` when set, else in the system's zone, looked up
    at each call (it may change under a running daemon)."""
    zone = board_zone(name)
    return lambda: board_time(zone)


def opening_text(opens: datetime, now: datetime) -> str:
    """When the camera opens again, for people: the weekday and time, with the date when that is a week
    or more away (after a holiday "Mon 07:30" would be read as the coming Monday)."""
    if opens - now < timedelta(days=6):
        return f"{opens:%a %H:%M}"
    return f"{opens:%a %Y-%m-%d %H:%M}"
