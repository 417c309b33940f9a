"""An erase's WAL wipe that a reader blocked is tried again until the WAL is emptied (real SQLite files)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import StoreSettings
from edge_agent.store import db as db_module
from edge_agent.store.db import Database, set_meta

MARK = "erased-student-7f3a9c"  # stands for the erased student's pseudonym in their deleted row


@pytest.fixture()
def quick_db(state_dir: Path) -> Iterator[Database]:
    # the shortest busy wait: the first try waits that long on the reader
    database = Database(state_dir / "edge-agent.db", StoreSettings(busy_timeout_ms=100))
    database.open()
    yield database
    database.close()


def _wal(db: Database) -> bytes:
    wal = db.path.with_name(db.path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def _erase_behind_a_reader(db: Database) -> sqlite3.Connection:
    """The marked row stored, then deleted with ``wipe_wal`` while another program holds a read
    transaction (an IT person's sqlite3 shell); gives that reader, still in its transaction."""
    db.write(lambda conn: set_meta(conn, "student", MARK)).result()
    reader = sqlite3.connect(str(db.path), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM meta").fetchone()
    db.write(lambda conn: conn.execute("DELETE FROM meta WHERE key = 'student'"), wipe_wal=True).result()
    assert MARK.encode() in _wal(db)  # the reader kept the wipe from emptying it
    return reader


def test_the_wal_an_erase_could_not_empty_is_emptied_once_the_reader_has_gone_without_another_erase(
    quick_db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A review: the erase replied "erased", the log said "the next checkpoint empties it", and none came:
    # the student's state row stayed readable in the WAL until frames were overwritten or a stop
    monkeypatch.setattr(db_module, "WIPE_RETRY_S", 0.2, raising=False)
    caplog.set_level(logging.INFO, logger="edge_agent.store.db")
    reader = _erase_behind_a_reader(quick_db)
    time.sleep(0.6)  # retries while the reader is still there fail, and say nothing more
    assert MARK.encode() in _wal(quick_db)
    reader.execute("COMMIT")
    reader.close()
    deadline = time.monotonic() + 10
    while _wal(quick_db) and time.monotonic() < deadline:  # no write, no erase: the idle writer retries
        time.sleep(0.1)
    assert _wal(quick_db) == b""
    assert MARK.encode() not in quick_db.path.read_bytes()  # secure_delete: nor in the database file
    lines = [r.getMessage() for r in caplog.records if "write-ahead log" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "tried again every 0 s and after each write until it is" in lines[0]
    assert "is emptied: the rows deleted before it (an erase's) are gone from it" in lines[1]


def test_the_next_commit_after_the_reader_has_gone_empties_the_wal_an_erase_could_not(
    quick_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no timed retry here: the commit alone
    monkeypatch.setattr(db_module, "WIPE_RETRY_S", 3600.0, raising=False)
    reader = _erase_behind_a_reader(quick_db)
    quick_db.write(lambda conn: set_meta(conn, "other", "x")).result()
    assert MARK.encode() in _wal(quick_db)  # still held
    reader.execute("COMMIT")
    reader.close()
    quick_db.write(lambda conn: set_meta(conn, "other", "y")).result()  # another student's answer
    assert _wal(quick_db) == b""


def test_a_wipe_still_pending_at_a_stop_is_done_after_the_next_start(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regression review: the pending wipe was kept in memory only; the daemon restarted (an update, a
    # reload) while the reader stayed, and the next run never emptied the WAL once it had gone
    monkeypatch.setattr(db_module, "WIPE_RETRY_S", 0.2, raising=False)
    first = Database(state_dir / "edge-agent.db", StoreSettings(busy_timeout_ms=100))
    first.open()
    reader = _erase_behind_a_reader(first)
    first.close()
    assert MARK.encode() in _wal(first)  # the close could not checkpoint past the reader
    again = Database(state_dir / "edge-agent.db", StoreSettings(busy_timeout_ms=100))
    again.open()
    try:
        reader.execute("COMMIT")
        reader.close()
        deadline = time.monotonic() + 10
        while MARK.encode() in _wal(again) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert MARK.encode() not in _wal(again)
    finally:
        again.close()
