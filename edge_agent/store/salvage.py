"""Carrying what still reads of a damaged database into the one made to replace it (Database._replace): the
students' learning states, the answers' idempotency keys and the meta rows they depend on, read row by row
past damaged pages."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.store.schema import set_meta

log = logging.getLogger(__name__)

# What the database made to replace a damaged one takes over from it, as far as it still reads: without it
# one damaged page of the teacher's lesson record or the outbox started every student afresh, and a
# clicker's retry of an answer acknowledged before was applied again (a review). The students' states and
# the answers' idempotency keys, by table, with the columns left behind: ``lesson_tail`` holds the answers
# the teacher's lesson record (meta, not carried) lacked, a lesson of a few answers without it.
SALVAGED_TABLES = {"kt_student_state": frozenset({"lesson_tail"}), "kt_applied_events": frozenset[str]()}
# The meta rows that say under which pseudonym secret and which package skills those states were stored
# (kt/component.py, kt/persistence.py align_skills): without them a changed secret or package goes unseen.
SALVAGED_META = ("pseudonym_fingerprint", "pseudonym_fingerprints", "kt_skill_ids", "kt_last_shape")
# Not the outbox: its rows are counted as dropped (damaged) by _continue_sequence, which keeps the cloud's
# gap accounted for; carrying some would need an exact count of those that do not read, which a damaged
# B-tree cannot be trusted to give, and a wrong one makes a gap nobody explains or drops that arrive.
SALVAGE_BATCH = 500  # rows read per query from the damaged file
_ROWID_MIN, _ROWID_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Salvaged:
    """What the new database took over from the damaged one: rows carried and rows that did not read
    (None: not known, a stretch of the table did not read and its row count neither)."""

    states: int = 0
    states_unread: int | None = 0
    keys: int = 0
    keys_unread: int | None = 0

    def sentence(self) -> str:
        unread = [n for n in (self.states_unread, self.keys_unread) if n != 0]
        text = (f"{self.states} student learning states and {self.keys} answer idempotency keys were "
                "carried over from it")
        if unread:
            said = ["an unknown number" if n is None else str(n)
                    for n in (self.states_unread, self.keys_unread)]
            text += (f" ({said[0]} of the states and {said[1]} of the keys did not read: those students "
                     "start afresh, and a retry of those answers is applied again)")
        return text

    @classmethod
    def from_record(cls, value: Any) -> Salvaged | None:
        """As stored in the REPLACES_KEY record; None where it is not there (made by a release before)."""
        fields = ("states", "states_unread", "keys", "keys_unread")
        if not isinstance(value, list) or len(value) != len(fields):
            return None
        if not all(n is None or (isinstance(n, int) and n >= 0) for n in value) or None in value[::2]:
            return None
        return cls(*value)

    def record(self) -> list[int | None]:
        return [self.states, self.states_unread, self.keys, self.keys_unread]


class _RowSalvage:
    """The rows of one table of a damaged database that still read, walked by rowid: a damaged page of the
    table's B-tree makes a scan raise "database disk image is malformed" midway, so a query that fails is
    read again row by row, and a stretch whose rows cannot even be found is stepped over (``gap``)."""

    def __init__(self, old: sqlite3.Connection, table: str, columns: list[str]) -> None:
        self._old, self._table = old, table
        names = ", ".join(f'"{c}"' for c in columns)
        self._select = f'SELECT rowid, {names} FROM "{table}" WHERE rowid'
        self.failed = 0  # rows found whose content did not read
        self.gap = False  # a stretch of rows not even found

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        low: int | None = _ROWID_MIN
        while low is not None:
            try:
                rows = self._old.execute(f"{self._select} >= ? ORDER BY rowid LIMIT ?",
                                         (low, SALVAGE_BATCH)).fetchall()
            except sqlite3.DatabaseError:
                rows, low = self._one_by_one(low)
            else:
                low = None if len(rows) < SALVAGE_BATCH else self._after(rows[-1][0])
            if rows:
                yield [row[1:] for row in rows]

    @staticmethod
    def _after(rowid: int) -> int | None:
        return None if rowid >= _ROWID_MAX else rowid + 1

    def _next_rowid(self, low: int) -> int | None:
        """The first rowid from ``low`` on (None: none); raises where the B-tree there does not read."""
        row = self._old.execute(f'SELECT rowid FROM "{self._table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1',
                                (low,)).fetchone()
        return None if row is None else int(row[0])

    def _one_by_one(self, low: int) -> tuple[list[tuple[Any, ...]], int | None]:
        """Up to a batch of rows from ``low`` read alone, those that fail skipped; (rows, where next)."""
        rows: list[tuple[Any, ...]] = []
        at: int | None = low
        while at is not None and len(rows) < SALVAGE_BATCH:
            try:
                rowid = self._next_rowid(at)
            except sqlite3.DatabaseError:
                self.gap = True
                return rows, self._past_damage(at)
            if rowid is None:
                return rows, None
            try:
                rows.extend(self._old.execute(f"{self._select} = ?", (rowid,)).fetchall())
            except sqlite3.DatabaseError:
                self.failed += 1
            at = self._after(rowid)
        return rows, at

    def _past_damage(self, low: int) -> int | None:
        """The lowest rowid above ``low`` from which rows can be found again (None: none): further and
        further ahead until one is, then back by halves to the edge of the damage."""
        failing, step = low, 1
        while True:
            probe = low + step
            if probe > _ROWID_MAX:
                return None
            try:
                self._next_rowid(probe)
                break
            except sqlite3.DatabaseError:
                failing, step = probe, step * 2
        while probe - failing > 1:
            middle = (failing + probe) // 2
            try:
                self._next_rowid(middle)
                probe = middle
            except sqlite3.DatabaseError:
                failing = middle
        return probe


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')]


def _salvage_table(
    old: sqlite3.Connection, conn: sqlite3.Connection, table: str, left_out: frozenset[str]
) -> tuple[int, int | None]:
    """Copy the rows of ``table`` that read from the damaged ``old`` into ``conn``, in their order (the
    event keys' prune keeps the newest by rowid); (rows carried, rows that did not read or None)."""
    expected: int | None = None
    try:
        have = set(_columns(old, table))
    except sqlite3.DatabaseError as exc:  # its schema does not read: the rows, if any, are not known
        log.warning("the damaged database's table %s does not read (%s): none of its rows are carried over",
                    table, exc)
        return 0, None
    if not have:  # no such table: another program's database, or one whose tables were dropped
        return 0, 0
    with contextlib.suppress(sqlite3.DatabaseError):
        expected = int(old.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    # the columns of both: a table of an older release's shape (or altered) gives what it has
    columns = [c for c in _columns(conn, table) if c in have and c not in left_out]
    if not columns:
        log.warning("the damaged database's table %s has none of this release's columns: none of its rows "
                    "are carried over", table)
        return 0, expected
    walk, carried, read = _RowSalvage(old, table, columns), 0, 0
    names, marks = ", ".join(f'"{c}"' for c in columns), ", ".join("?" * len(columns))
    for rows in walk.batches():
        read += len(rows)
        # OR IGNORE: a row the new table refuses (a NULL where one is required, a key twice) is left out
        cursor = conn.executemany(f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})', rows)
        carried += max(cursor.rowcount, 0)
    unread = walk.failed + read - carried
    if expected is not None:
        return carried, max(expected - carried, unread)
    return carried, None if walk.gap else unread


def salvage(conn: sqlite3.Connection, damaged: Path) -> Salvaged | None:
    """Carry the students' states, the answers' keys and the meta rows they depend on (SALVAGED_TABLES,
    SALVAGED_META) from ``damaged`` into the new database, inside its transaction; None where that failed
    as a whole (nothing carried: the new database starts empty, as it always could)."""
    conn.execute("SAVEPOINT salvage")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)) as old:
            # a damaged cell is refused as it is read instead of giving bytes from beyond it
            old.execute("PRAGMA cell_size_check = ON")
            counts = [_salvage_table(old, conn, table, left) for table, left in SALVAGED_TABLES.items()]
            keys = []
            for key in SALVAGED_META:
                with contextlib.suppress(sqlite3.DatabaseError):
                    row = old.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                    if row is not None and isinstance(row[0], str):
                        set_meta(conn, key, row[0])
                        keys.append(key)
    except Exception:  # whatever fails here (a damaged file can raise anything), the board must start
        log.exception("nothing could be carried over from the damaged database %s: every student starts "
                      "afresh", damaged)
        conn.execute("ROLLBACK TO salvage")
        conn.execute("RELEASE salvage")
        return None
    conn.execute("RELEASE salvage")
    salvaged = Salvaged(*counts[0], *counts[1])
    log.warning("from the damaged database: %s; meta rows carried: %s", salvaged.sentence(),
                ", ".join(keys) or "none")
    return salvaged
