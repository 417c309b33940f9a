"""The class roster: the students whose answers this board takes (``kt.roster_file``).

Without a roster any student id is taken, and whoever holds the board's web token can push the real
students out of ``kt.max_students`` with invented ids (security audit, finding 6). The file holds
pseudonyms only, one per line (32 hex characters; blank lines and ``#`` comments allowed), so the raw
ids never reach the board's disk: ``edge-agent kt roster`` makes it from the school's list. The daemon
reads it again when it changes, so a student added during the term needs no restart.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)

_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
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


def format_roster(pseudonyms: Iterable[str]) -> str:
    header = "# edge-agent class roster: student pseudonyms, one per line (edge-agent kt roster)\n"
    return header + "".join(f"{p}\n" for p in sorted(pseudonyms))


class Roster:
    """The roster in ``path``, read again when its size or mtime changes (looked at no more than every
    ``recheck_s``). A file that cannot be read or parsed keeps the roster last read; with none read yet,
    :meth:`current` raises ConfigError (the answer API then says why it takes no answers)."""

    def __init__(
        self, path: Path, recheck_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._checked = -float("inf")
        self._students: frozenset[str] | None = None
        self.problem: str | None = None
        self._reload()  # at start: the log says how many students, or why none
        self._checked = clock()

    def current(self) -> frozenset[str]:
        now = self._clock()
        if now - self._checked >= self._recheck_s:
            self._checked = now
            self._reload()
        if self._students is None:
            raise ConfigError([("kt.roster_file", self.problem or f"{self.path} not read yet")])
        return self._students

    def _reload(self) -> None:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            students = parse_roster(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            reason = exc.problems[0][1] if isinstance(exc, ConfigError) else f"cannot read {self.path}: {exc}"
            if reason != self.problem:  # once per problem, not on every answer
                kept = "" if self._students is None else f"; the last one read ({len(self._students)}) stays"
                log.error("class roster not read%s: %s", kept, reason)
            self.problem, self._stamp = reason, None
            return
        self._stamp, self._students, self.problem = stamp, students, None
        log.info("class roster: %d students (%s)", len(students), self.path)


def read_student_ids(source: Path, column: str | None = None) -> list[str]:
    """Student ids from a text file (one per line; ``#`` comments) or, with ``column``, a CSV with a
    header row; ``-`` reads standard input. ValueError names what is wrong."""
    import csv
    import io
    import sys

    text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8-sig")
    if column is None:
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or column not in reader.fieldnames:
            columns = ", ".join(reader.fieldnames or [])
            raise ValueError(f"{source} has no column {column!r} (its columns: {columns})")
        ids = [(row.get(column) or "").strip() for row in reader]
    ids = [i for i in ids if i]
    if not ids:
        raise ValueError(f"{source} holds no student ids")
    return ids


def update_roster(path: Path, action: str, pseudonyms: set[str], owner_of: Path) -> tuple[int, int]:
    """Apply ``action`` (set, add, remove, count) to the roster file; returns the counts before and after.
    The file is replaced in one rename, mode 0600, owned like ``owner_of`` (the daemon's pseudonym secret)
    when run as root, so the daemon can read what root wrote."""
    from edge_agent.provisioning.files import write_private

    current = parse_roster(path.read_text(encoding="utf-8"), str(path)) if path.exists() else frozenset()
    if action == "count":
        return len(current), len(current)
    updated = {"set": pseudonyms, "add": current | pseudonyms, "remove": current - pseudonyms}[action]
    write_private(path, format_roster(updated).encode())
    if os.geteuid() == 0:
        owner = owner_of.stat()
        os.chown(path, owner.st_uid, owner.st_gid)
    return len(current), len(updated)
