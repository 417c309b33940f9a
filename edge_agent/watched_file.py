"""A small file the daemon reads again when it changes (the class roster, the clicker tokens), so that
the school's IT edits it without restarting the board.

The file is looked at (stat) no more than every ``recheck_s``. A change (of its inode, mtime, ctime or
size) is read once the file has stayed so for one check, so one still being written is not taken
half-way; at start it is read at once. A file that cannot be read or parsed keeps what was read last and
says so once per problem, and is not parsed again until it changes; with nothing read yet,
:meth:`WatchedFile.current` raises ConfigError with the reason. A file given ``missing=`` (the clicker
tokens) is different only when it is gone: that value stands for it; one given ``narrow=`` (the clicker
tokens too) keeps, when it cannot be parsed, only what it still says.
:meth:`WatchedFile.health` says the same to the daemon's health (the teacher view, /readyz, systemd's
STATUS line, ``edge_component_up``), so a broken file is seen without reading the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from edge_agent.errors import ConfigError
from edge_agent.lifecycle import Health
from edge_agent.spreadsheet_text import likely_encoding

EMPTY_GRACE_CHECKS = 3  # an empty (or, with missing=, absent) file is taken as meant after this many checks

log = logging.getLogger(__name__)

T = TypeVar("T")
Stamp = tuple[int, int, int, int, int]


def not_utf8(data: bytes, path: Path) -> str:
    """Why ``data``, read from ``path``, is not taken, and how to convert it: saved by a Chinese Windows
    editor (GBK), the roster was only "'utf-8' codec can't decode byte 0xc8" in the health (a review)."""
    return f"{path} is not UTF-8 text ({likely_encoding(data, path)}); save it as UTF-8"


class WatchedFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        parse: Callable[[str, str], T],
        key: str,
        describe: Callable[[T], str],
        *,
        recheck_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        missing: T | None = None,
        narrow: Callable[[T, str], T] | None = None,
    ) -> None:
        """``parse(text, where)`` returns the content or raises ConfigError; ``key`` is the config key
        that names the file; ``describe`` says what was read, for the log. ``missing``: what a file that
        does not exist means (the clicker tokens: none, so that deleting the file revokes them all); None
        (the roster): a problem, and what was read before stays in use. ``narrow(old, text)``: what of
        ``old`` still holds when ``text`` cannot be parsed (the clicker tokens: those still written in it,
        so that a token whose line was deleted is refused even if another line has a typo); None (the
        roster): all of it."""
        self.path = path
        self.key = key
        self._parse = parse
        self._describe = describe
        self._recheck_s = recheck_s
        self._clock = clock
        self._stamp: Stamp | None = None  # of what was read last, taken or not (None: read again)
        self._seen: Stamp | None = None  # at the last check, so that a change is read once it holds still
        self._value: T | None = None
        self._missing_value = missing
        self._narrow = narrow
        self.missing = False  # True while ``missing`` stands for a file that is gone
        self.problem: str | None = None
        self._empty_since: float | None = None  # when the file was first seen empty, while it stays so
        self._reload(at_start=True)  # the log says what was read, or why nothing
        self._checked = clock()

    def current(self) -> T:
        now = self._clock()
        if now - self._checked >= self._recheck_s:
            self._checked = now
            self._reload()
        if self._value is None:
            raise ConfigError([(self.key, self.problem or f"{self.path} not read yet")])
        return self._value

    def health(self) -> Health:
        """Looks at the file again when due; unhealthy while it cannot be read."""
        with contextlib.suppress(ConfigError):
            self.current()
        if self.problem is None and self._value is not None:
            where = f"{self.path} is missing" if self.missing else str(self.path)
            return Health(True, f"{self._describe(self._value)} ({where})")
        if self._value is None:
            return Health(False, f"{self.problem}; nothing has been read from it since the start")
        return Health(False, f"{self.problem}; {self._kept()}")

    def _kept(self) -> str:
        if self._narrow is None or self._value is None:
            return "what was read before stays in use"
        kept = self._describe(self._value)
        return f"of what was read before, only what the file still lists stays in use ({kept})"

    def _reload(self, *, at_start: bool = False) -> None:
        data: bytes | None = None
        previous, self._seen = self._seen, None
        try:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                if self._missing_value is None:
                    raise
                self._gone(self._missing_value)
                return
            # Inode and ctime too: a file renamed or linked into place (`ln -sfn`, an rsync -a or tar of
            # the same size and whole-second mtime) kept a revoked clicker token, and a chmod that made it
            # unreadable went unseen until a restart (a review)
            stamp = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
            self._seen = stamp
            if info.st_size != 0:  # back (moved away and back unchanged too): a later emptying gets a grace
                self._empty_since = None
            if stamp == self._stamp:
                return
            if info.st_size == 0 and self._value is not None and self._in_grace():
                # An editor saving in place truncates first: read then, the roster or the clients' tokens
                # refused everyone until the next check. Still empty a few checks later, it was meant.
                return
            if stamp != previous and not at_start:
                # Changed since the last check, so perhaps still being written (scp, `cat >`): the part
                # written so far parsed as a smaller roster, and its missing students got a final 400
                return
            data = self.path.read_bytes()
            value = self._parse(data.decode("utf-8-sig"), str(self.path))  # an editor's BOM: no text
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            reason = exc.problems[0][1] if isinstance(exc, ConfigError) else f"cannot read {self.path}: {exc}"
            if isinstance(exc, UnicodeDecodeError) and data is not None:
                reason = not_utf8(data, self.path)
            if self._narrow is not None and self._value is not None and data is not None:
                # Read but not parsed: keeping all of the old value kept a clicker token whose line IT had
                # deleted, if another line had a typo (a review: 200 until the typo was found). Nothing is
                # added from such a file: narrowed from the value in use, never from the file alone.
                self._value = self._narrow(self._value, data.decode("utf-8-sig", errors="replace"))
            if reason != self.problem:  # once per problem, not on every request
                kept = "" if self._value is None else f"; {self._kept()}"
                log.error("%s not read%s: %s", self.key, kept, reason)
            # Back but broken, it is no longer missing: gone again, the problem was never cleared (a review:
            # /readyz 503 for good). Not parsed again until it changes: a large broken roster was read and
            # parsed on the event loop at every check; a file that could not be read is tried again.
            self.problem, self.missing = reason, False
            self._stamp = stamp if data is not None else None
            return
        self._stamp, self._value, self.problem, self.missing = stamp, value, None, False
        log.info("%s: %s (%s)", self.key, self._describe(value), self.path)

    def _gone(self, value: T) -> None:
        """The file does not exist and ``missing`` says what that means. Deleted by IT, it was read as a
        problem and the old tokens stayed valid (a review: 200 for a deleted file's token after 10 s,
        and /readyz 503 for the whole board). An editor that renames the old file away before writing
        the new one gets the same grace as an empty file."""
        if self.missing or (self._value is not None and self._in_grace()):
            return
        self._empty_since = None
        self._stamp, self._value, self.problem, self.missing = None, value, None, True
        log.warning("%s: %s is gone: %s", self.key, self.path, self._describe(value))

    def _in_grace(self) -> bool:
        """Whether the file has been empty (or gone) for less than EMPTY_GRACE_CHECKS checks, counted from
        the first check that saw it so."""
        if self._empty_since is None:
            self._empty_since = self._clock()
        return self._clock() - self._empty_since < EMPTY_GRACE_CHECKS * self._recheck_s
