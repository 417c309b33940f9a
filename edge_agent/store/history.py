"""Local history of class-level aggregates, so the teacher view can show earlier windows after a restart.

Separate from the outbox on purpose: the outbox forgets a row once the broker has it, history keeps
rows for ``keep_days`` whatever the network does. Only class-level aggregates belong here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import Future
from typing import Any

from edge_agent.errors import InputRejected
from edge_agent.store.db import Database


class History:
    def __init__(self, db: Database, keep_days: float = 14.0) -> None:
        self.db = db
        self.keep_s = keep_days * 86400.0

    def record(self, stream: str, payload: dict[str, Any], at: float | None = None) -> Future[int]:
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InputRejected(f"history payload for {stream!r} is not plain JSON: {exc}") from exc
        when = time.time() if at is None else at

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO aggregates (stream, created_at, payload) VALUES (?, ?, ?)", (stream, when, text)
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
        return [{"at": at, "data": json.loads(text)} for at, text in reversed(rows)]

    def prune(self, now: float | None = None) -> Future[int]:
        cutoff = (time.time() if now is None else now) - self.keep_s
        return self.db.write(
            lambda c: c.execute("DELETE FROM aggregates WHERE created_at < ?", (cutoff,)).rowcount
        )
