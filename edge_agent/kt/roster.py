"""The class roster: the students whose answers this board takes (``kt.roster_file``).

Without a roster any student id is taken, and whoever holds the board's web token can push the real
students out of ``kt.max_students`` with invented ids (security audit, finding 6). The file holds
pseudonyms only, one per line (32 hex characters; blank lines and ``#`` comments allowed), so the raw
ids never reach the board's disk: ``edge-agent kt roster`` makes it from the school's list. The daemon
reads it again when it changes (edge_agent/watched_file.py), so a student added during the term needs
no restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_agent.errors import ConfigError, InputRejected
from edge_agent.kt.answers import MAX_TEXT, NOT_TEXT, student_id_key
from edge_agent.spreadsheet_text import SAVE_AS, csv_rows, read_spreadsheet_text
from edge_agent.watched_file import WatchedFile, not_utf8

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
_COMMENT = re.compile(r"(?:^|\s)#")  # in a list of ids: "20260001  # Wang Xiaoming", not "3A#07"
MAX_STUDENTS = 1_000_000  # as kt.max_students: a bigger file is a mistake


def parse_roster(text: str, where: str) -> frozenset[str]:
    """The pseudonyms in a roster file's text; ConfigError names the first bad line."""
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not _PSEUDONYM.match(entry):
            raise ConfigError([(
                "kt.roster_file",
                f"{where} line {number} is not a student pseudonym (32 hex characters); make the file "
                "with `edge-agent kt roster`, which turns the school's student ids into pseudonyms",
            )])
        found.add(entry)
    if len(found) > MAX_STUDENTS:
        raise ConfigError([("kt.roster_file", f"{where} lists {len(found)} students, over {MAX_STUDENTS}")])
    return frozenset(found)


def roster_text(data: bytes, path: Path) -> str:
    """A roster file's bytes as text: UTF-8, an editor's byte-order mark dropped (Notepad's). ConfigError
    names the file and the conversion: saved by a Chinese Windows editor (GBK, a "# 三年级二班" comment),
    `kt roster add` and the daemon's health said only "'utf-8' codec can't decode byte 0xc8" (a review)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError([("kt.roster_file", f"{not_utf8(data, path)}, or make it again with `edge-agent kt "
                            "roster set`")]) from None


def format_roster(pseudonyms: Iterable[str]) -> str:
    header = "# edge-agent class roster: student pseudonyms, one per line (edge-agent kt roster)\n"
    return header + "".join(f"{p}\n" for p in sorted(pseudonyms))


Roster = WatchedFile[frozenset[str]]


def watch_roster(path: Path, recheck_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> Roster:
    """The roster in ``path``, read again when it changes (:class:`WatchedFile`)."""
    return WatchedFile(path, parse_roster, "kt.roster_file", lambda s: f"{len(s)} students",
                       recheck_s=recheck_s, clock=clock)


def read_student_ids(source: Path, column: str | None = None) -> list[str]:
    """Student ids from a text file (one per line; ``#`` at the start of a line or after a space starts a
    comment) or, with ``column``, a CSV with a header row; ``-`` reads standard input. ValueError or
    InputRejected (a file not in UTF-8) names what is wrong."""
    import sys

    text = sys.stdin.read() if str(source) == "-" else read_spreadsheet_text(source)
    if column is None:
        listed = []
        for number, line in enumerate(text.splitlines(), 1):
            # "#" inside an id is kept: the answer API takes "3A#07", which a cut at any "#" listed as "3A"
            entry = _COMMENT.split(line, 1)[0].strip()
            student = _unquoted(entry)
            # A table read as a list: "student_no,name" and each "2026001,王小明" went on the roster as one
            # student, and the whole class was refused as not on it (a review); so with ";", Excel's CSV
            # where the decimal point is a comma. A comma inside an id is read from a table (--column), or
            # from a quoted one-column list.
            key = _key(student, source, number)
            separator = next((s for s in (",", ";") if s in key), None) if student == entry else None
            if separator == ",":
                raise ValueError(f"{source} line {number}: {entry[:40]!r} holds a comma, and without "
                                 "--column each line is one student id (a tab or comma: give --column for a "
                                 "table)")
            if separator == ";":
                raise ValueError(f"{source} line {number}: {entry[:40]!r} holds a semicolon, and without "
                                 "--column each line is one student id (a table separated by semicolons: "
                                 f"{SAVE_AS}, then give --column)")
            listed.append(key)
    else:
        columns, rows = csv_rows(text, str(source))
        if column not in columns:
            raise ValueError(f"{source} has no column {column!r} (its columns: {', '.join(columns)})")
        listed = [_key(row.get(column, ""), source, line) for line, row in rows]
    ids = [key for key in listed if key]
    if not ids:
        raise ValueError(f"{source} holds no student ids")
    # As the answer API takes them: else the roster lists students no clicker can ever be accepted as
    # (a tab-separated export read without --column listed "stu-09<TAB>Wang Xiaoming")
    for student in ids:
        if len(student) > MAX_TEXT or NOT_TEXT.search(student):
            hint = " (a tab or comma: give --column for a table)" if "\t" in student or "," in student else ""
            raise ValueError(f"{source}: {student[:40]!r} is not a student id the answer API accepts: "
                             f"at most {MAX_TEXT} characters, no control characters{hint}")
    return ids


def _key(student: str, source: Path, line: int) -> str:
    """student_id_key, its refusal (an invisible character inside the id) naming the file and line."""
    try:
        return student_id_key(student)
    except InputRejected as exc:
        raise InputRejected(f"{source} line {line}: {exc}", field=exc.field) from None


def _unquoted(field: str) -> str:
    """A one-column CSV's quoted field unquoted ('"20260001"' was listed with its quotes, a review);
    anything else as it is."""
    import csv

    if not field.startswith('"'):
        return field
    row = next(csv.reader([field]), [field])
    return row[0].strip() if len(row) == 1 else field


def update_roster(path: Path, action: str, pseudonyms: set[str], owner_of: Path) -> tuple[int, int]:
    """Apply ``action`` (set, add, remove, count) to the roster file; returns the counts before and after.
    The file is replaced in one rename, mode 0600, owned like ``owner_of`` (the daemon's pseudonym secret)
    when run as root, so the daemon can read what root wrote."""
    import fcntl

    from edge_agent.provisioning.files import write_private_for_daemon

    # One change at a time: two 'add's run together each read the old file and the last rename won,
    # losing the other's students while both said they were added (a review: 7 of 8)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            # utf-8-sig, as the daemon reads it: once saved by Notepad (a BOM), it was refused here only
            text = roster_text(path.read_bytes(), path) if path.exists() else ""
            current = parse_roster(text, str(path))
        except ConfigError:
            if action != "set":
                raise
            # 'set' replaces it whatever it holds: a class list copied there by hand could not be replaced,
            # and the error sent IT back to this very command (a review)
            current = frozenset()
        if action == "count":
            return len(current), len(current)
        updated = {"set": pseudonyms, "add": current | pseudonyms, "remove": current - pseudonyms}[action]
        write_private_for_daemon(path, format_roster(updated).encode(), owner_of)
        return len(current), len(updated)
