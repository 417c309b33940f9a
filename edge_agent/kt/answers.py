"""Validating answers from outside (pure): JSON objects in, :class:`Answer` values out, or InputRejected.

A whole batch is validated before anything is applied, so a bad answer anywhere rejects the request.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.config import KTSettings
from edge_agent.errors import InputRejected
from edge_agent.kt.package import KTPackage

MAX_TEXT = 128
OLDEST_ACCEPTED = 946684800.0  # 2000-01-01: anything earlier is a client clock or unit bug
# With the board's clock not known to be right, times this far ahead still read as a unit or client bug
# (milliseconds, a year off); a board clock behind by days (a holiday without an RTC battery) does not.
UNSYNCED_MAX_AHEAD_S = 30 * 86400.0
# Epoch seconds pass 1e11 in the year 5138, epoch milliseconds in 1973: a number above is milliseconds.
MILLISECONDS_FROM = 1e11
# Local time sent without a zone reads as UTC, up to 14 h ahead (UTC+14:00, Kiribati): Beijing 28,800 s.
MAX_ZONE_AHEAD_S = 14 * 3600.0
NO_ZONE_HINT = "'answered_at' has no time zone, so it was read as UTC: send it with Z or +08:00"
# Control characters and unpaired surrogates (valid JSON, "\ud800"): a NUL would let two (student, event
# id) pairs share an idempotency key ("a" + "b\0c" and "a\0b" + "c"), and a surrogate cannot be encoded
# for the pseudonym's HMAC.
NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters, unpaired surrogates
# What shows nothing: spaces, zero-width and text-direction marks, fillers, blanks and selectors (an id of
# U+200B alone was a student). Only an id of nothing else is refused: Hebrew or Arabic names wrapped in
# direction marks, as RTL-aware software sends them, are ids like any other (round 2).
_INVISIBLE_CHARS = (
    "\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f"
)
INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]*")
# Around an id they are dropped as spaces are: a copy from a web page or Excel left "2026001" + U+200B,
# which no clicker sends, so the student was refused as not on the roster, and `kt erase --file` erased
# nothing and said "had none" (a review). NFKC makes none of them from a visible character, so an id
# typed without them keeps its pseudonym.
_INVISIBLE_AROUND = re.compile(f"^[{_INVISIBLE_CHARS}]+|[{_INVISIBLE_CHARS}]+$")
# Inside an id these do no work in any script, so one there is a copy's leftover, refused rather than
# taken as another student: zero-width spaces, word joiners, invisible operators, the BOM, a soft hyphen
_HIDDEN_INSIDE = re.compile("[\u00ad\u180e\u200b\u2060-\u2064\ufeff]")
# Direction marks and embeddings do work inside only beside right-to-left letters ("שלום" + U+200F + " 3");
# in "2026" + U+200E + "001" they are a leftover too
_DIRECTION = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Answer:
    student: str  # pseudonym, never the raw id
    event_key: str  # pseudonymised (student, client_event_id): the idempotency key
    client_event_id: str
    item_id: str
    skills: tuple[int, ...]
    correct: int
    answered_at: float

    @functools.cached_property  # read for the duplicate check and again when the event is stored
    def content(self) -> str:
        """What the answer says, in 16 hex characters: a retry says the same; another answer sent under
        the same client event id does not (its time may differ on a retry, so it is left out)."""
        # sorted: a base station that rebuilds the list from a set sends it in another order on a retry
        text = f"{self.item_id}\0{self.correct}\0{','.join(map(str, sorted(self.skills)))}"
        return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _text(obj: dict[str, Any], key: str, where: str, *, strip: bool = False) -> str:
    """``obj[key]`` as text of 1-MAX_TEXT characters; with ``strip``, spaces around it dropped first
    (" stu-4 " padded to 130 characters was refused, though it is "stu-4")."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and key != "item_id":
        value = str(value)
    if isinstance(value, str) and strip:
        value = value.strip()
    if not isinstance(value, str) or INVISIBLE.fullmatch(value):
        raise InputRejected(f"{where}: '{key}' is required and must be a non-empty string (of visible "
                            "characters)", field=key)
    if len(value) > MAX_TEXT:
        raise InputRejected(f"{where}: '{key}' is longer than {MAX_TEXT} characters", field=key)
    if NOT_TEXT.search(value):
        raise InputRejected(
            f"{where}: '{key}' holds a control character or an unpaired surrogate; send plain text", field=key
        )
    return value


def student_id_key(text: str) -> str:
    """The student id that names one student, whichever way it was typed: NFKC, then spaces around it
    dropped. A Chinese IME in full-width mode types "２０２３０１０１" for 20230101, and a combining accent
    is another form of "é": each was a second student, in the class's figures beside the real one (a
    review: "7 students answered" in a class of 6). Spaces inside an id are kept: "2023 01" may be an id.
    Invisible characters around it are dropped too; InputRejected for one inside that no script needs there
    (a zero-width space, or a direction mark among left-to-right text)."""
    key = _INVISIBLE_AROUND.sub("", unicodedata.normalize("NFKC", text))
    hidden = _HIDDEN_INSIDE.search(key)
    if hidden is None and (mark := _DIRECTION.search(key)) is not None:  # letters looked at only then
        hidden = None if any(unicodedata.bidirectional(c) in ("R", "AL") for c in key) else mark
    if hidden is not None:
        name = unicodedata.name(hidden[0], "a format character")
        raise InputRejected(
            f"student id {key[:40]!r} holds an invisible character (U+{ord(hidden[0]):04X} {name}), left by "
            "a copy from a web page or spreadsheet; type the id again without it", field="student_id")
    return key


def student_id(obj: dict[str, Any], where: str) -> str:
    """``obj["student_id"]`` as the board takes a student id: text or a number, read by student_id_key."""
    value = _text(obj, "student_id", where, strip=True)
    try:
        return student_id_key(value)
    except InputRejected as exc:
        raise InputRejected(f"{where}: {exc}", field="student_id") from None


def parse_timestamp(value: Any, where: str) -> float:
    """ISO 8601 (with or without zone; without means UTC) or epoch seconds."""
    if isinstance(value, bool) or value is None:
        raise InputRejected(f"{where}: 'answered_at' must be ISO 8601 text or epoch seconds", "answered_at")
    if isinstance(value, (int, float)):
        try:
            stamp = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise InputRejected(f"{where}: 'answered_at' is not a plausible time", "answered_at") from None
        if not math.isfinite(stamp):  # 1e400 reads as inf: it was called "milliseconds"
            raise InputRejected(f"{where}: 'answered_at' is not a plausible time", "answered_at")
        if stamp > MILLISECONDS_FROM * 1000:  # not a time in milliseconds either (1e308 was called one)
            raise InputRejected(f"{where}: 'answered_at' is not a plausible time", "answered_at")
        if stamp > MILLISECONDS_FROM:  # read as seconds it was "20769385 days ahead", blaming the clocks
            raise InputRejected(
                f"{where}: 'answered_at' {str(value)[:24]} looks like milliseconds since 1970; send seconds",
                "answered_at",
            )
    elif isinstance(value, str):
        try:
            parsed = _iso(value)
        except ValueError as exc:
            raise InputRejected(
                f"{where}: 'answered_at' {value[:40]!r} is not ISO 8601", "answered_at"
            ) from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        stamp = parsed.timestamp()
    else:
        raise InputRejected(f"{where}: 'answered_at' must be ISO 8601 text or epoch seconds", "answered_at")
    if not math.isfinite(stamp) or stamp < OLDEST_ACCEPTED:
        raise InputRejected(f"{where}: 'answered_at' is not a plausible time", "answered_at")
    return stamp


# Python 3.10 (JetPack 6) takes only 3 or 6 fraction digits and only +HH:MM offsets, where 3.11 takes any:
# .NET sends 7 digits, Go trims trailing zeros, Java sends 9, strftime's %z gives +0800. Written the way
# 3.10 reads them, so that the board takes what a vendor's PC demo took.
_FRACTION = re.compile(r"(\d\d:\d\d:\d\d)[.,](\d+)")
_BASIC_OFFSET = re.compile(r"(:\d\d(?:\.\d+)?)([+-]\d\d)(\d\d)$")


def _iso(text: str) -> dt.datetime:
    """ISO 8601 text as sent ("Z" or "z" for UTC too: RFC 3339 allows both); ValueError when it is not."""
    text = text.strip()
    if text[-1:] in ("Z", "z") and text[-2:-1].isdigit():  # "zz" is no time zone (a review)
        text = text[:-1] + "+00:00"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:  # rewritten only then: the two substitutions cost 3.8 µs an answer
        text = _FRACTION.sub(lambda m: f"{m[1]}.{(m[2] + '000000')[:6]}", text, count=1)
        return dt.datetime.fromisoformat(_BASIC_OFFSET.sub(r"\1\2:\3", text))


def without_zone(value: Any) -> bool:
    """Whether ``value`` (answered_at as sent) is ISO 8601 text without a time zone."""
    if not isinstance(value, str):
        return False
    try:
        return _iso(value).tzinfo is None
    except ValueError:
        return False


def _correct(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise InputRejected(f"{where}: 'correct' must be true/false or 0/1", field="correct")


def _skills(obj: dict[str, Any], item_skill: str, index: dict[str, int], where: str) -> tuple[int, ...]:
    # null is absent (Jackson, Gson and pydantic write unset fields as null): a null skill_ids beside a
    # skill_id used the item's own skill and dropped the one sent
    raw, single = obj.get("skill_ids"), obj.get("skill_id")
    if raw is None:
        raw, single = single, None
    if raw is None:
        return (index[item_skill],)
    ids = raw if isinstance(raw, list) else [raw]
    if single is not None and ids != [single]:
        raise InputRejected(f"{where}: send 'skill_ids' or 'skill_id', not both", field="skill_ids")
    if not ids or len(ids) > 8 or not all(isinstance(s, str) for s in ids):
        raise InputRejected(f"{where}: 'skill_ids' must be 1-8 skill id strings", field="skill_ids")
    unknown = [s for s in ids if s not in index]
    if unknown:
        raise InputRejected(f"{where}: unknown skill {unknown[0][:MAX_TEXT]!r}", field="skill_ids")
    return tuple(dict.fromkeys(index[s] for s in ids))


def parse_answer(
    obj: Any,
    where: str,
    package: KTPackage,
    *,
    settings: KTSettings,
    pseudonym: Callable[[str], str],
    now: float,
    board_clock_synced: bool = True,
) -> Answer:
    if not isinstance(obj, dict):
        raise InputRejected(f"{where}: an answer must be a JSON object")
    # As `edge-agent kt roster` reads the school's ids (student_id_key): " stu-4" was another student
    # than "stu-4" and, with a roster, refused as not on it, though IT could never add it so. The client
    # event id stays as sent: a retry's idempotency key must match byte for byte.
    student = student_id(obj, where)
    event_id = _text(obj, "client_event_id", where)
    item_id = _text(obj, "item_id", where)
    item = package.item_index.get(item_id)
    if item is None:
        raise InputRejected(
            f"{where}: unknown item {item_id!r} (not in the model package's item bank)", field="item_id"
        )
    skills = _skills(obj, item.skill_id, package.skill_index, where)
    correct = _correct(obj.get("correct"), where)
    answered_at = parse_timestamp(obj.get("answered_at"), where)
    ahead = answered_at - now
    if board_clock_synced and ahead > settings.max_future_skew_s:
        # Local time sent without a zone (Beijing: 28,800 s ahead) is the usual cause, not a bad clock.
        hint = f" ({NO_ZONE_HINT})" if without_zone(obj.get("answered_at")) else "; check the device clock"
        raise InputRejected(f"{where}: 'answered_at' is {ahead:.0f} s in the future{hint}", "answered_at")
    if ahead > UNSYNCED_MAX_AHEAD_S:
        raise InputRejected(
            f"{where}: 'answered_at' is {ahead / 86400:.0f} days ahead of this board's clock, which is not "
            "NTP-synchronised; either clock may be wrong (check both; on the board: timedatectl)",
            "answered_at",
        )
    pseudo = pseudonym(student)
    return Answer(
        pseudo, pseudonym(f"event\0{student}\0{event_id}"), event_id, item_id, skills, correct, answered_at
    )


def parse_batch(
    body: Any,
    package: KTPackage,
    settings: KTSettings,
    pseudonym: Callable[[str], str],
    now: float,
    *,
    board_clock_synced: bool = True,
) -> list[Answer]:
    """One answer object, or {"answers": [...]}; raises InputRejected for the first problem found.

    Times more than ``kt.max_future_skew_s`` ahead are refused only while the board's clock is known to
    be synchronised: a board that booted hours behind (no RTC battery, NTP blocked) would otherwise refuse,
    and lose, every answer of the day while blaming the clickers' clocks."""
    if isinstance(body, dict) and "answers" in body:
        items = body["answers"]
        if not isinstance(items, list) or not items:
            raise InputRejected("'answers' must be a non-empty list", field="answers")
        # a request larger than the queue could never be admitted: it got 503 "retry in a moment" for ever
        limit = min(settings.max_answers_per_request, settings.queue_max)
        if len(items) > limit:
            raise InputRejected(f"{len(items)} answers in one request; the limit is {limit}", field="answers")
        return [
            parse_answer(a, f"answers[{n}]", package, settings=settings, pseudonym=pseudonym, now=now,
                         board_clock_synced=board_clock_synced)
            for n, a in enumerate(items)
        ]
    return [parse_answer(body, "answer", package, settings=settings, pseudonym=pseudonym, now=now,
                         board_clock_synced=board_clock_synced)]
