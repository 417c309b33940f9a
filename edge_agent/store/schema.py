"""The database layout and its migrations, versioned by ``PRAGMA user_version``.

Each migration runs once, in order, inside the transaction that bumps ``user_version``, so a crash
mid-migration leaves the previous version intact. Migrations only ever add: a board that is rolled back
to an older release refuses a newer database (clear error) instead of guessing.

A nullable column that older releases can ignore is added at open instead (:func:`add_side_columns`),
without a new version: such a release names its columns in every statement and checks only that its own
columns exist, so a rollback keeps the board's data in use.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable

import sqlite_utils

from edge_agent.errors import StoreError

Migration = Callable[[sqlite_utils.Database], None]


def _v1(db: sqlite_utils.Database) -> None:
    db.table("outbox").create(
        {
            "id": int,
            "message_id": str,
            "seq": int,
            "stream": str,
            "topic": str,
            "payload": str,
            "created_at": float,
            "expires_at": float,
            "attempts": int,
            "state": str,
            "bytes": int,
        },
        pk="id",
        not_null={
            "message_id", "seq", "stream", "topic", "payload", "created_at", "attempts", "state", "bytes",
        },
        defaults={"attempts": 0, "state": "pending"},
    )
    db.table("outbox").create_index(["seq"], unique=True)
    db.table("outbox").create_index(["message_id"], unique=True)
    db.table("outbox").create_index(["state", "id"])
    db.table("outbox").create_index(["created_at"])
    db.table("outbox").create_index(["expires_at"])
    db.table("aggregates").create(
        {"id": int, "stream": str, "created_at": float, "payload": str},
        pk="id",
        not_null={"stream", "created_at", "payload"},
    )
    db.table("aggregates").create_index(["stream", "created_at"])
    db.table("kt_student_state").create(
        {"student": str, "state": bytes, "answers": int, "updated_at": float},
        pk="student",
        not_null={"state", "answers", "updated_at"},
    )
    db.table("kt_applied_events").create({"event_key": str, "applied_at": float}, pk="event_key")
    db.table("kt_applied_events").create_index(["applied_at"])
    db.table("drop_counters").create({"reason": str, "count": int}, pk="reason", not_null={"count"})
    db.table("meta").create({"key": str, "value": str}, pk="key")


MIGRATIONS: list[Migration] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


# (table, column, type): added where missing, NULL in rows written before or by an older release
SIDE_COLUMNS = [
    ("kt_applied_events", "content", "TEXT"),  # what the event said, to tell a reused client event id
    # the student's pseudonym, so that an erase finds the student's rows (and sets it and content to NULL)
    ("kt_applied_events", "student", "TEXT"),
    ("kt_student_state", "kept", "BLOB"),  # the model id and kept answers (StudentState.kept_bytes)
    # JSON {"answers": n, "kept": [[skill id, 0/1], ...]}: kept answers by skill id, taken when the package's
    # skills changed and some had gone (StatePersistence.align_skills), for a package that has them again
    ("kt_student_state", "set_aside", "TEXT"),
    # JSON [answers, [item id, ...]]: the items of the student's latest answers, never recommended
    # (StudentState.recent_items); for the answer count it was written at, as ``kept``
    ("kt_student_state", "recent", "TEXT"),
    # JSON [[seq, [skill index, ...], applied at], ...]: the student's answers since the lesson records were
    # last saved (StatePersistence.load_journal), so a power cut loses none of a lesson window's answers.
    # Beside the state, which each answer rewrites anyway: a table of its own cost a page a commit (+19 %)
    ("kt_student_state", "lesson_tail", "TEXT"),
    ("outbox", "clock_unsynced", "INTEGER"),  # 1: queued while the clock was not known right (no max_age)
    ("aggregates", "clock_unsynced", "INTEGER"),  # 1: recorded while the clock was not known right (kept)
]


def add_side_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in SIDE_COLUMNS:
        have = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if have and column not in have:
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the number of migrations applied."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version} but this edge-agent knows only {SCHEMA_VERSION}; "
            "it was written by a newer release: upgrade edge-agent or restore the matching database"
        )
    db = sqlite_utils.Database(conn)
    applied = 0
    for number in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number](db)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied += 1
    return applied


def _tables(conn: sqlite3.Connection) -> dict[str, set[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {n: {r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')} for n in names}


@functools.cache
def _tables_at(version: int) -> dict[str, set[str]]:
    """The tables and columns the first ``version`` migrations make."""
    conn = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS[:version]:
            migration(sqlite_utils.Database(conn))
        return _tables(conn)
    finally:
        conn.close()


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """None when the file holds what its ``user_version`` promises (extra tables are left alone), else
    what is wrong: another program's database, or one whose tables were dropped or altered."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        return None  # migrate() refuses it: a newer release's database is not damaged
    if version < 0:  # no release writes one: a damaged header
        return f"schema version {version}"
    actual = _tables(conn)
    if version == 0:
        return f"it has tables {sorted(actual)[:5]} but no edge-agent schema version" if actual else None
    missing = {
        table: sorted(columns - actual.get(table, set()))
        for table, columns in _tables_at(version).items()
        if not columns <= actual.get(table, set())
    }
    if missing:
        return f"schema version {version} but tables or columns are missing: {missing}"
    return None


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set one key of the ``meta`` table (on the writer's connection, inside its transaction)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
