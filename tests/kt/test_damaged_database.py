"""Knowledge tracing on a database damaged between two runs: what the replacement keeps of the students."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from edge_agent.config import DeviceSettings, KTSettings, MqttSettings, StoreSettings
from edge_agent.kt.component import KTComponent
from edge_agent.kt.package import KTPackage
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database, OpenReport
from edge_agent.store.outbox import Outbox
from tests.kt.test_service import _answer


def _run(package: KTPackage, device: DeviceSettings, path: Path, pseudo: Pseudonymizer,
         answers: list[tuple[str, str]]) -> tuple[OpenReport, int, list[str]]:
    """One start of the board on ``path``: (the store's report, students restored, each answer's status)."""

    async def run() -> tuple[OpenReport, int, list[str]]:
        db = Database(path, StoreSettings())
        report = db.open()
        box = Outbox(db, device, StoreSettings(), MqttSettings())
        box.open()
        if report.created:  # unsent rows beside the students, as a board has them
            for i in range(100):
                box.enqueue("attention", {"i": i, "pad": "x" * 200})
        comp = KTComponent(KTSettings(min_group_size=2), device, None, db, box, LiveBoard(),
                           HeartbeatRegistry())
        try:
            await comp.start()
            svc = comp.get_service()
            assert svc is not None
            restored = svc.student_count()
            feedback = await svc.submit_async([_answer(package, pseudo, student, event, n % 5)
                                               for n, (student, event) in enumerate(answers)])
            return report, restored, [f["status"] for f in feedback]
        finally:
            await comp.stop()
            db.close()

    return asyncio.run(run())


def test_a_damaged_page_of_the_outbox_keeps_the_students_and_an_acknowledged_answers_retry_is_a_duplicate(
    package: KTPackage, device: DeviceSettings, pseudonymize: Pseudonymizer, state_dir: Path
) -> None:
    # (review) one zeroed page of another table made the start discard the whole database: 0 of 40
    # students restored, and the retry of an answer acknowledged before the damage was applied again
    path = state_dir / "edge-agent.db"
    first = [(f"s{n}", f"e{n}") for n in range(20)]
    report, _, statuses = _run(package, device, path, pseudonymize, first)
    assert report.created and statuses == ["applied"] * 20
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("SELECT pageno FROM dbstat WHERE name = 'outbox' AND pagetype = 'leaf' "
                            "ORDER BY pageno LIMIT 1").fetchone()[0]
    with path.open("r+b") as f:  # a torn write or a bad flash block
        f.seek((page - 1) * 4096)
        f.write(b"\0" * 4096)

    report, restored, statuses = _run(package, device, path, pseudonymize, [("s0", "e0"), ("s1", "new")])
    assert report.quarantined is not None and report.alert is not None
    assert "20 student learning states and 20 answer idempotency keys were carried over" in report.alert
    assert restored == 20
    assert statuses == ["duplicate", "applied"]
