"""After an erase, no class figure over the erased student is left in the database file beside the others'
figures (real service, engine and SQLite file; the lesson window itself for a skill's figure)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import numpy as np
import pytest

from edge_agent.config import KTSettings
from edge_agent.kt.classroom import LessonWindow
from edge_agent.kt.component import KTComponent, save_records
from edge_agent.kt.package import KTPackage
from edge_agent.kt.persistence import StatePersistence
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from tests.kt.test_erasure import _class


def _records(db: Database) -> dict[str, dict[str, Any]]:
    """The lesson records as anyone with the file reads them (not through the daemon)."""
    conn = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT key, value FROM meta WHERE key IN ('kt_lesson_view', 'kt_lesson_window')")
        return {key: json.loads(value) for key, value in rows}
    finally:
        conn.close()


def _by_difference(record: dict[str, Any]) -> np.ndarray | None:
    """The reviewer's recovery: a class mean over N students beside N - 1 of their figures."""
    shown = record.get("published") or {}
    frozen = shown.get("frozen")
    if frozen is None or not shown.get("probs"):
        return None
    others = np.array(list(shown["probs"].values()))
    return np.asarray(frozen["students"] * np.asarray(frozen["mean"]) - others.sum(axis=0))


@pytest.mark.parametrize("restart", ["stop", "power cut"])
def test_an_erase_in_an_open_lesson_leaves_no_figure_over_the_student_in_the_database_file(
    package: KTPackage, device: Any, db: Database, pseudonymize: Any, monkeypatch: pytest.MonkeyPatch,
    restart: str,
) -> None:
    # A review: the teacher's lesson record kept the class figures as published over 5 students (erased
    # one included) beside the other 4 students' figures: N x mean - their sum gave the erased student's
    # 30 skills to 2e-06, across a stop too
    from edge_agent.kt import component as component_module

    monkeypatch.setattr(component_module, "SAVE_LESSON_EVERY_S", 3600.0)  # saved here, and at a stop
    component = KTComponent(KTSettings(min_group_size=2, microbatch_wait_ms=0.0), device, None, db, None,
                            LiveBoard(), HeartbeatRegistry())
    asyncio.run(component.start())
    svc = component.get_service()
    assert svc is not None
    gone = pseudonymize("stu-1")
    try:
        for round_ in range(2):
            _class(package, pseudonymize, svc, [f"stu-{n}" for n in range(5)], f"r{round_}")
        assert svc.class_summary()["figures_students"] == 5  # the teacher has seen them
        save_records(svc, StatePersistence(db))
        db.write(lambda c: None).result(5)
        truth = np.array(_records(db)["kt_lesson_view"]["published"]["probs"][gone])
        assert svc.erase([gone]).result(10).had == {gone}
        assert svc.class_summary()["figures_students"] == 5  # on the board: as published, by design
    finally:
        if restart == "stop":  # the record saved again, from memory
            asyncio.run(component.stop())
        else:  # the record the erase rewrote stays
            svc.stop()
    records = _records(db)
    assert gone not in json.dumps(records)
    view = records["kt_lesson_view"]
    recovered = _by_difference(view)
    error = None if recovered is None else float(np.abs(recovered - truth).max())
    assert error is None or error > 0.01, f"the erased student's {truth.size} skills recovered to {error}"
    assert "published" not in view and view["after_cut"] is True  # taken anew after a restart
    assert all("published" not in record for record in records.values())


def test_a_skills_figure_over_an_erased_student_is_not_saved_after_the_class_figures_are_taken_anew() -> None:
    # The class figures taken anew over those who remain (a group answered on other skills), a skill's
    # figure still held the erased student beside the others' unchanged figures: n x mean - their sum
    rng = np.random.default_rng(7)
    figures = {s: rng.uniform(0.05, 0.95, 4).astype(np.float32) for s in ("a", "b", "c", "gone")}
    window = LessonWindow(started=0.0)
    for n, student in enumerate(figures):
        window.record(student, [0], figures[student], now=1.0 + n)
    window.published.figures(window.probs, window.known, 3, 0.6, now=5.0)  # the teacher's view shown
    window.forget({"gone"})
    for n, student in enumerate(("d", "e", "f")):  # a group, on skill 1
        window.record(student, [1], rng.uniform(0.05, 0.95, 4).astype(np.float32), now=6.0 + n)
    assert window.published.frozen is None and window.published.skills[0].students == 4  # in memory
    record = window.to_json(clean=True)
    skill = (record.get("published") or {}).get("skills", {}).get("0")
    if skill is not None:
        n, mean, _ = skill
        recovered = n * mean - sum(float(record["published"]["probs"][s][0]) for s in ("a", "b", "c"))
        assert abs(recovered - float(figures["gone"][0])) > 0.01, (recovered, figures["gone"][0])
    assert "published" not in record and record["after_cut"] is True
