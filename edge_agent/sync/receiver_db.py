"""The reference receiver's SQLite database: its tables, and the upgrade of a file an older receiver made."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

# store: the board database's id (protocol.py); "" for boards that predate it. clock_unsynced: 1 where the
# board said its clock was not known to be right when it stamped created_at (the item's "clock_synced":
# false); NULL otherwise, and for items stored before the column. tenant, site: the topic's, the board's
# claim (the broker's ACL checks only the device id), kept so that two districts that use one device id,
# or a board whose config moved it to another site, can be told apart; NULL for items stored before them
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    device TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL,
    message_id TEXT NOT NULL, created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL,
    clock_unsynced INTEGER, tenant TEXT, site TEXT,
    PRIMARY KEY (device, store, seq));
CREATE TABLE IF NOT EXISTS conflicts (
    device TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL,
    message_id TEXT NOT NULL, created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL,
    clock_unsynced INTEGER, tenant TEXT, site TEXT,
    PRIMARY KEY (device, store, seq, message_id));
CREATE INDEX IF NOT EXISTS items_by_message ON items (device, message_id);
-- a store's seqs across device ids, and a device's newest item: the report read the whole table per
-- device without them (0.47 s a report at 2 M items: a review)
CREATE INDEX IF NOT EXISTS items_by_store ON items (store, seq);
CREATE INDEX IF NOT EXISTS items_by_arrival ON items (device, received_at);
-- a repeat is found by its id in its store under any device id (a renamed board): the primary key, of
-- older receiver databases too, stays (device, store, seq)
CREATE INDEX IF NOT EXISTS items_by_store_id ON items (store, message_id);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, status TEXT, status_at REAL, heartbeat TEXT, heartbeat_at REAL,
    duplicates INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0);
-- The highest last_seq the heartbeats of each (device, store) gave: how far the board had got, so seqs
-- up to it that never came are lost at the tail (the broker lost the last ones before the board went
-- quiet). Kept per store: the heartbeat in devices is replaced by the next, of a new store too after a
-- board lost its database, and the old store's last word went with it. first_at orders the report.
CREATE TABLE IF NOT EXISTS heartbeat_seqs (
    device TEXT NOT NULL, store TEXT NOT NULL, last_seq INTEGER NOT NULL, first_at REAL NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (device, store));
-- What the receiver could not take, as it came, for replay once the cause is fixed (a receiver upgraded
-- to a new "v", a board's bug understood): the board deleted it when the broker acknowledged it, so this
-- is the only copy. item: the item's place in its message (0 first), payload then that item alone in its
-- message's envelope (the other items are in items), or NULL: the whole message, payload its bytes.
-- device: the topic's, NULL for a topic not of the edge/<tenant>/<site>/<device>/<stream> form. Never
-- pruned. digest: sha256 of the topic, item and the message without its sent_at (set anew at every send),
-- or of a bad item's topic, store and the item, not its place, so that a message redelivered or re-sent
-- after a lost PUBACK is kept once (receiver.py, _message_digest and _item_digest). Rows an earlier
-- receiver kept hold one of topic, item and payload, sent_at included, which only a replay or a delete
-- reads. (No semicolon in these comments: _add_store_column splits this text on them.)
CREATE TABLE IF NOT EXISTS rejected_messages (
    received_at REAL NOT NULL, topic TEXT NOT NULL, device TEXT, item INTEGER, reason TEXT NOT NULL,
    payload BLOB NOT NULL, digest TEXT NOT NULL UNIQUE);
"""



def open_receiver_db(path: Path) -> sqlite3.Connection:
    """The receiver's database at ``path``, made or upgraded to the tables above; autocommit (the receiver
    opens its own transactions), usable from the receiver's thread and its callers'."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    # one fsync per commit, before its PUBACK: said, not left to the build's default (NORMAL lost
    # acknowledged messages to a power cut in the tests)
    conn.execute("PRAGMA synchronous = FULL")
    _add_store_column(conn)
    _add_columns(conn)
    conn.executescript(_SCHEMA)
    return conn


def _add_store_column(conn: sqlite3.Connection) -> None:
    """A receiver database from before store ids: rebuild its two tables with the column, as "" (the
    primary key changes, which ALTER TABLE cannot do)."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(items)")}
    if not columns or "store" in columns:
        return
    conn.execute("BEGIN")
    for table in ("items", "conflicts"):
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_before_store")
    for statement in _SCHEMA.split(";"):  # not executescript: it would commit the open transaction
        conn.execute(statement)
    for table in ("items", "conflicts"):
        conn.execute(
            f"INSERT INTO {table} (device, store, seq, stream, message_id, created_at, received_at, data) "
            f"SELECT device, '', seq, stream, message_id, created_at, received_at, data "
            f"FROM {table}_before_store"
        )
        conn.execute(f"DROP TABLE {table}_before_store")
    conn.execute("COMMIT")
    log.info("receiver database: added the store column to items and conflicts")


def _add_columns(conn: sqlite3.Connection) -> None:
    """A receiver database from before the items' clock flag, or their tenant and site: the columns added,
    NULL in the rows it holds (nothing was kept of them then)."""
    for table in ("items", "conflicts"):
        columns = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        for column, kind in (("clock_unsynced", "INTEGER"), ("tenant", "TEXT"), ("site", "TEXT")):
            if columns and column not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                log.info("receiver database: added the %s column to %s", column, table)
