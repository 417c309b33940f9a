"""Local history of class-level aggregates, so the teacher view can show earlier windows after a restart.

Separate from the outbox on purpose: the outbox forgets a row once the broker has it, history keeps
rows for ``keep_days`` whatever the network does. Only class-level aggregates belong here.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from edge_agent.errors import InputRejected
from edge_agent.store.db import DAMAGED_ROW, Database

log = logging.getLogger(__name__)

# Rows recorded while the clock was not known right are kept out of the age prune; the newest this many
# of them are kept (about 14 days of the default windows), so a board that never syncs does not grow for ever
MAX_UNSYNCED_ROWS = 25_000


class History:
    def __init__(
        self, db: Database, keep_days: float = 14.0, clock_synced: Callable[[], bool] = lambda: True
    ) -> None:
        self.db = db
        self.keep_s = keep_days * 86400.0
        # As the outbox's rows: stamped on a clock not known to be right (a board booted on the time saved
        # 24 days before), a window's age says nothing, and NTP's step pruned the teacher's timeline at once
        self._clock_synced = clock_synced

    def record(self, stream: str, payload: dict[str, Any], at: float | None = None) -> Future[int]:
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InputRejected(f"history payload for {stream!r} is not plain JSON: {exc}") from exc
        when = time.time() if at is None else at

        def run(conn: sqlite3.Connection) -> int:
            unsynced = None if self._clock_synced() else 1  # on the writer thread: chronyd may be asked
            cur = conn.execute(
                "INSERT INTO aggregates (stream, created_at, payload, clock_unsynced) VALUES (?, ?, ?, ?)",
                (stream, when, text, unsynced),
            )
            return int(cur.lastrowid or 0)

        return self.db.write(run)

    def recent(self, stream: str, since: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Payloads of ``stream`` recorded at or after ``since``, oldest first."""
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT created_at, payload FROM aggregates WHERE stream = ? AND created_at >= ? "
                "ORDER BY created_at DESC LIMIT ?",
                (stream, since, limit),
            ).fetchall()
        )
        out = []
        for at, text in reversed(rows):
            try:
                out.append({"at": at, "data": json.loads(text)})
            except DAMAGED_ROW:  # one torn row stopped attention's start (a review)
                log.warning("a %s record of %s in the store is damaged; it is left out", stream, at)
        return out

    def prune(self, now: float | None = None) -> Future[int]:
        """Rows older than ``keep_days``, only while the clock is known right and only those recorded on
        such a clock; of the others, those beyond the newest MAX_UNSYNCED_ROWS."""
        cutoff = (time.time() if now is None else now) - self.keep_s

        def run(conn: sqlite3.Connection) -> int:
            pruned = conn.execute(
                "DELETE FROM aggregates WHERE clock_unsynced IS NOT NULL AND id NOT IN (SELECT id FROM "
                "aggregates WHERE clock_unsynced IS NOT NULL ORDER BY id DESC LIMIT ?)", (MAX_UNSYNCED_ROWS,)
            ).rowcount
            if self._clock_synced():
                pruned += conn.execute(
                    "DELETE FROM aggregates WHERE created_at < ? AND clock_unsynced IS NULL", (cutoff,)
                ).rowcount
            return pruned

        return self.db.write(run)
