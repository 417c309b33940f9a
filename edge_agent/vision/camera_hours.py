"""When the camera may run: the school's hours, from ``camera.active_hours`` (pure).

Entries such as ``"mon-fri 07:30-17:30"``, ``"sat 08:00-12:00"`` or ``"daily 19:00-21:30"`` (evening study),
in the board's local time. Outside them the daemon closes the camera, so an empty classroom, the cleaners
and the night are not watched, and a day-and-night board stops storing empty windows (~900 a night).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")
EXAMPLE = '"mon-fri 07:30-17:30"'


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


class CameraHours:
    """The weekly spans in which the camera may run."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = tuple(spans)

    @classmethod
    def parse(cls, entries: Sequence[str]) -> CameraHours:
        """Raises ValueError naming the entry that cannot be read."""
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
        return cls(spans)

    def is_open(self, when: datetime) -> bool:
        day, minute = when.weekday(), when.hour * 60 + when.minute
        return any(s.day == day and s.start <= minute < s.end for s in self.spans)

    def next_open(self, when: datetime) -> datetime | None:
        """The next start of a span after ``when`` (within a week), or None when there is none."""
        midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
        starts = (
            midnight + timedelta(days=offset, minutes=span.start)
            for offset in range(8)
            for span in self.spans
            if span.day == (when.weekday() + offset) % 7
        )
        return min((start for start in starts if start > when), default=None)
