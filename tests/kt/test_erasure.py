"""Erasing students' learning data and retention: the real service, engine and SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import KTSettings, StoreSettings
from edge_agent.errors import InputRejected, StoreError
from edge_agent.kt.component import KTComponent, save_records
from edge_agent.kt.erasure import (
    DAY_S,
    RETENTION_MARGIN_S,
    erase_requests,
    id_forms,
    parse_student_ids,
    retention_cutoff,
)
from edge_agent.kt.package import KTPackage
from edge_agent.kt.persistence import StatePersistence
from edge_agent.kt.service import Erased, KTService, ServiceBusy
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from tests.kt.test_service import _answer, _service


def _rows(db: Database) -> set[str]:
    return {r[0] for r in db.read(lambda c: c.execute("SELECT student FROM kt_student_state").fetchall())}


def test_student_ids_are_taken_as_the_answer_api_takes_them_each_once() -> None:
    assert parse_student_ids({"student_ids": ["stu-4", " stu-4 ", 17, "17", "\u5f20\u4e09"]}) == [
        "stu-4", "17", "\u5f20\u4e09"]


def test_each_student_id_is_erased_in_every_form_it_was_sent_in_and_counted_once() -> None:
    # A review: a student stored under "carol" and "ｃａｒｏｌ" counted as two students erased, and one of
    # the same request who had never answered was reported erased
    body = {"student_ids": ["ｃａｒｏｌ", " stu-4 ", "never-answered", 17, "carol"]}
    ids = parse_student_ids(body)
    assert id_forms(body, ids) == {"carol": ["carol", "ｃａｒｏｌ"], "stu-4": ["stu-4", " stu-4 "],
                                   "never-answered": ["never-answered"], "17": ["17"]}
    carol = {"p-carol", "p-ｃａｒｏｌ"}
    erased = Erased(had=frozenset(carol), asked=frozenset({*carol, "p-never"}))
    assert erased.students_with_data([carol, {"p-never"}]) == 1


@pytest.mark.parametrize(("body", "says"), [
    (["stu-1"], "student_ids"),
    ({"ids": ["stu-1"]}, "student_ids"),
    ({"student_ids": "stu-1"}, "non-empty list"),
    ({"student_ids": []}, "non-empty list"),
    ({"student_ids": ["stu-1", " "]}, "student_ids[1]"),
    ({"student_ids": ["stu-1", None]}, "student_ids[1]"),
    ({"student_ids": ["a\x00b"]}, "control character"),
    ({"student_ids": [f"s{n}" for n in range(1001)]}, "limit is 1000"),
])
def test_a_malformed_erase_request_is_refused_naming_what_is_wrong(body: Any, says: str) -> None:
    with pytest.raises(InputRejected, match=says.replace("[", r"\[")):
        parse_student_ids(body)


NOW, YEAR = 2_000_000_000.0, 400 * DAY_S


@pytest.mark.parametrize(("newest_before_run", "cutoff"), [
    (None, None),  # nothing stored before this run
    (NOW - 1 * DAY_S, NOW - YEAR),  # a class in use: states past 400 days go
    (NOW - YEAR + RETENTION_MARGIN_S, NOW - YEAR),  # just within the margin
    # the clock jumped ahead (or the board was unused for over a year): even the newest looks expired
    (NOW - YEAR + RETENTION_MARGIN_S - 1, None),
    (NOW - 3 * YEAR, None),
])
def test_retention_deletes_nothing_when_even_the_newest_state_looks_expired(
    newest_before_run: float | None, cutoff: float | None
) -> None:
    assert retention_cutoff(NOW, YEAR, NOW - DAY_S, newest_before_run) == cutoff
    assert retention_cutoff(NOW, 0.0, NOW - DAY_S, newest_before_run) is None  # 0: kept for ever


def _class(package: KTPackage, pseudonymize: Any, svc: KTService, students: list[str], tag: str) -> None:
    svc.submit([_answer(package, pseudonymize, s, f"{tag}-{s}", n % 3) for n, s in enumerate(students)]
               ).result(10)


def test_an_erased_student_is_gone_from_the_file_and_memory_and_starts_again_from_the_prior(
    package: KTPackage, engine: Any, kt_settings: KTSettings, pseudonymize: Any, db: Database
) -> None:
    svc = _service(package, engine, kt_settings, pseudonymize, db)
    try:
        students = [f"stu-{n}" for n in range(5)]
        for round_ in range(3):
            _class(package, pseudonymize, svc, students, f"r{round_}")
        gone = pseudonymize("stu-1")
        others = {s: svc.student_mastery(pseudonymize(s)) for s in students if s != "stu-1"}
        persistence = StatePersistence(db)
        db.write(lambda c: None).result(5)
        save_records(svc, persistence)  # the lesson records hold the student too
        db.write(lambda c: None).result(5)
        assert gone in str(persistence.load_lesson_view()) and gone in str(persistence.load_open_window())

        erased = svc.erase([gone, pseudonymize("never-answered")]).result(10)

        assert (erased.had, erased.asked - erased.had) == ({gone}, {pseudonymize("never-answered")})
        assert gone not in _rows(db) and len(_rows(db)) == 4  # committed before the reply
        assert svc.student_mastery(gone) is None
        assert gone not in str(persistence.load_lesson_view())
        assert gone not in str(persistence.load_open_window())
        assert gone not in str(svc.lesson_view()) and gone not in str(svc.open_window())
        assert {s: svc.student_mastery(pseudonymize(s)) for s in others} == others  # untouched
        lesson = svc.class_summary()
        assert lesson["answers"] == 15 and lesson["students"] == 4  # the class's count stays

        fresh = svc.submit([_answer(package, pseudonymize, "stu-1", "after", 0)]).result(10)[0]
        first = KTService(package, engine, kt_settings, pseudonymize)  # a board that never saw stu-1
        first.start()
        try:
            never_seen = first.submit([_answer(package, pseudonymize, "stu-1", "after", 0)]).result(10)[0]
        finally:
            first.stop()
        assert fresh["mastery"] == never_seen["mastery"]
        assert svc.student_mastery(gone)["answers"] == 1  # type: ignore[index]
    finally:
        svc.stop()


def test_an_erase_racing_the_students_answers_leaves_nothing_of_them(
    package: KTPackage, engine: Any, kt_settings: KTSettings, pseudonymize: Any, db: Database
) -> None:
    svc = _service(package, engine, kt_settings, pseudonymize, db)
    try:
        _class(package, pseudonymize, svc, ["stu-1", "stu-2"], "warm")
        for trial in range(20):
            answering = [svc.submit([_answer(package, pseudonymize, "stu-1", f"t{trial}-{n}", n % 3)])
                         for n in range(8)]
            erased = svc.erase([pseudonymize("stu-1")]).result(10)
            # the answers queued before the erase were applied and stored before it, then erased with it
            assert all(f.done() for f in answering) and erased.had == {pseudonymize("stu-1")}
            assert pseudonymize("stu-1") not in _rows(db)
            assert svc.student_mastery(pseudonymize("stu-1")) is None
            assert pseudonymize("stu-1") not in str(svc.lesson_view())
        assert pseudonymize("stu-2") in _rows(db)
    finally:
        svc.stop()


def test_answers_queued_right_after_an_erase_start_from_the_prior_not_the_stored_state(
    package: KTPackage, engine: Any, kt_settings: KTSettings, pseudonymize: Any, db: Database
) -> None:
    svc = _service(package, engine, kt_settings, pseudonymize, db)
    try:
        for n in range(10):
            _class(package, pseudonymize, svc, ["stu-1"], f"w{n}")
        erasing = svc.erase([pseudonymize("stu-1")])
        after = svc.submit([_answer(package, pseudonymize, "stu-1", "next", 0)])
        assert erasing.result(10).had == {pseudonymize("stu-1")}
        after.result(10)
        assert svc.student_mastery(pseudonymize("stu-1"))["answers"] == 1  # type: ignore[index]
        stored = StatePersistence(db).states_of([pseudonymize("stu-1")], package.hidden, len(package.skills))
        assert stored[pseudonymize("stu-1")].answers == 1
    finally:
        svc.stop()


def test_an_erase_the_store_refuses_keeps_the_students_answers_it_had_not_stored_yet(
    package: KTPackage, engine: Any, kt_settings: KTSettings, pseudonymize: Any, tmp_path: Path
) -> None:
    # A review: an erase refused by a full disk replied "nothing was erased", yet memory had already dropped
    # the student with the answers the disk had refused (503, kept in memory to be stored again): the
    # clients' retries were told "duplicate" and those answers were gone for good (5 stored of 10). A
    # 40-page store lets a delete through (it needs no new page), so the store refuses here as it does for
    # a sqlite3 shell with a write transaction open: every commit, the erase's too, fails.
    db = Database(tmp_path / "edge-agent.db", StoreSettings(busy_timeout_ms=200))
    db.open()
    svc = _service(package, engine, kt_settings, pseudonymize, db)
    star = pseudonymize("star")
    try:
        for n in range(5):
            svc.submit([_answer(package, pseudonymize, "star", f"a{n}", n % 3)]).result(10)
        shell = sqlite3.connect(db.path, isolation_level=None)
        shell.execute("BEGIN IMMEDIATE")
        refused = [_answer(package, pseudonymize, "star", f"b{n}", n % 3) for n in range(3)]
        for answer in refused:
            with pytest.raises(ServiceBusy):
                svc.submit([answer]).result(10)
        with pytest.raises(StoreError):
            svc.erase([star]).result(10)
        assert (svc.student_mastery(star) or {}).get("answers") == 8  # nothing was erased
        shell.execute("ROLLBACK")
        shell.close()
        assert [svc.submit([a]).result(10)[0]["status"] for a in refused] == ["duplicate"] * 3
    finally:
        svc.stop()
    try:
        persistence = StatePersistence(db)
        assert persistence.states_of([star], package.hidden, len(package.skills))[star].answers == 8
        assert len([row for row in persistence.load_journal() if row.student == star]) == 8  # for the records
    finally:
        db.close()


def _stamp(db: Database, students: dict[str, float]) -> None:
    db.write(lambda c: c.executemany("UPDATE kt_student_state SET updated_at = ? WHERE student = ?",
                                     [(at, s) for s, at in students.items()])).result(5)


def _start_after_stamping(package: KTPackage, engine: Any, device: Any, db: Database, pseudonymize: Any,
                          stamps: dict[str, float]) -> tuple[set[str], KTComponent, Any]:
    """Students answered (stored), their rows stamped ``stamps`` days ago; then the daemon's KT starts and
    runs its first retention turn. Gives the stored students after it."""
    settings = KTSettings(min_group_size=1, student_state_max_age_days=400)
    svc = _service(package, engine, settings, pseudonymize, db)
    _class(package, pseudonymize, svc, list(stamps), "before")
    svc.stop()
    now = time.time()
    _stamp(db, {pseudonymize(s): now - days * DAY_S for s, days in stamps.items()})
    component = KTComponent(settings, device, None, db, None, LiveBoard(), HeartbeatRegistry())

    async def run() -> Any:
        await component.start()
        await asyncio.sleep(2.5)  # the first publish turns: retention runs in the first
        db.write(lambda c: None).result(5)
        return component.get_service()

    service = asyncio.run(run())
    return _rows(db), component, service


def test_retention_deletes_only_states_not_updated_for_the_configured_days(
    package: KTPackage, engine: Any, device: Any, db: Database, pseudonymize: Any
) -> None:
    rows, component, svc = _start_after_stamping(
        package, engine, device, db, pseudonymize, {"old-1": 401, "old-2": 900, "recent": 399, "today": 0})
    try:
        assert rows == {pseudonymize("recent"), pseudonymize("today")}
        assert svc.student_mastery(pseudonymize("old-1")) is None  # out of memory too
        assert svc.student_mastery(pseudonymize("recent")) is not None
    finally:
        asyncio.run(component.stop())


def test_retention_leaves_no_retired_students_answer_saying_whose_it_was_or_what_it_said(
    package: KTPackage, engine: Any, device: Any, db: Database, pseudonymize: Any
) -> None:
    # a review: the content hash gave back item and right/wrong by trying the package's items, and
    # prune_events keeps the newest 20,000 keys however old, so on a small class they stayed for ever
    rows, component, _ = _start_after_stamping(
        package, engine, device, db, pseudonymize, {"old-1": 401, "old-2": 900, "today": 0})
    try:
        assert rows == {pseudonymize("today")}  # the class is in use: the clock guard lets retention run
        answers = db.read(lambda c: c.execute("SELECT student, content FROM kt_applied_events").fetchall())
        assert len(answers) == 3  # the keys stay: a retry is still a duplicate
        assert {student for student, _ in answers} == {None, pseudonymize("today")}
        # the retired two: neither whose nor what; today's student answered this year, and keeps both
        assert sorted((student is None, content is None) for student, content in answers) == [
            (False, False), (True, True), (True, True)]
    finally:
        asyncio.run(component.stop())


def test_a_clock_jumped_years_ahead_deletes_no_student(
    package: KTPackage, engine: Any, device: Any, db: Database, pseudonymize: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every stored state 3 years old by the board's clock: a clock set ahead, not a class unused
    caplog.set_level(logging.WARNING, "edge_agent.kt.component")
    rows, component, svc = _start_after_stamping(
        package, engine, device, db, pseudonymize, {"a": 3 * 365 + 2, "b": 3 * 365 + 1, "c": 3 * 365})
    try:
        assert len(rows) == 3 and svc.student_count() == 3
        assert "may be wrong" in caplog.text
    finally:
        asyncio.run(component.stop())


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("mastery_mean", "below_threshold", "histogram", "assessed", "assessed_mean",
            "assessed_below_threshold")
    return {"students": summary["figures_students"], "weakest": summary["weakest"],
            "skills": [{k: s[k] for k in keys} for s in summary["skills"]]}


def test_an_erase_leaves_the_published_class_figures_until_a_group_has_answered_since(
    package: KTPackage, engine: Any, pseudonymize: Any
) -> None:
    # Dropping the erased student from the figures at once gave their mastery of every skill by
    # difference (a round-2 review: mean_before * N - mean_after * (N - 1), 0.4790 for 0.4793 true)
    settings = KTSettings(min_group_size=3, microbatch_wait_ms=0.0)
    svc = KTService(package, engine, settings, pseudonymize)
    svc.start()
    try:
        students = [f"stu-{n}" for n in range(6)]
        for round_ in range(2):
            _class(package, pseudonymize, svc, students, f"r{round_}")
        before = _figures(svc.class_summary())
        assert before["students"] == 6
        assert svc.erase([pseudonymize("stu-1")]).result(10).had == {pseudonymize("stu-1")}
        assert _figures(svc.class_summary()) == before
        _class(package, pseudonymize, svc, ["stu-2", "stu-3"], "after")
        assert _figures(svc.class_summary()) == before  # two of a group of three have answered since
        _class(package, pseudonymize, svc, ["stu-4"], "after")
        now = _figures(svc.class_summary())
        assert now["students"] == 5  # taken anew, over those who remain
        left = [svc.student_mastery(pseudonymize(s)) for s in students if s != "stu-1"]
        mean = sum(m["skills"][0]["mastery"] for m in left) / 5  # type: ignore[index]
        assert now["skills"][0]["mastery_mean"] == pytest.approx(mean, abs=1e-3)
        assert pseudonymize("stu-1") not in str(vars(svc._view.published))  # type: ignore[union-attr]
    finally:
        svc.stop()


def test_after_an_erase_a_new_students_first_answer_leaves_the_published_figures(
    package: KTPackage, engine: Any, pseudonymize: Any
) -> None:
    # With one of 5 erased, the figures were taken anew at the next new student's first answer (4 left,
    # 5 with them): that student's probabilities are one step of the package's model from the empty
    # state, so two readings gave the erased student's 30 skills (a review: to 0.0004).
    settings = KTSettings(min_group_size=5, microbatch_wait_ms=0.0)
    svc = KTService(package, engine, settings, pseudonymize)
    svc.start()
    try:
        students = [f"stu-{n}" for n in range(5)]
        for round_ in range(3):
            _class(package, pseudonymize, svc, students, f"r{round_}")
        before = _figures(svc.class_summary())
        assert before["students"] == 5 and before["skills"][0]["mastery_mean"] is not None
        assert svc.erase([pseudonymize("stu-0")]).result(10).had == {pseudonymize("stu-0")}
        _class(package, pseudonymize, svc, ["new-1"], "first")
        assert _figures(svc.class_summary()) == before
        _class(package, pseudonymize, svc, ["new-2", "stu-1", "stu-2"], "more")
        assert _figures(svc.class_summary()) == before  # 4 of a group of 5 have answered since
        _class(package, pseudonymize, svc, ["stu-3"], "more")
        assert _figures(svc.class_summary())["students"] == 6  # taken anew, without stu-0
    finally:
        svc.stop()


@pytest.mark.parametrize("restart", ["stop", "power cut"])
def test_after_a_restart_an_erase_shows_no_class_figures_until_a_group_has_answered(
    package: KTPackage, device: Any, db: Database, pseudonymize: Any, monkeypatch: pytest.MonkeyPatch,
    restart: str,
) -> None:
    # The figures as published were kept in memory only: a restart between the erase and the next retake
    # showed them over the students who remain, the erased student's figures by difference again. Saved
    # with the record, they gave them from the database file (a review): after a restart none is shown
    from edge_agent.kt import component as component_module

    monkeypatch.setattr(component_module, "SAVE_LESSON_EVERY_S", 3600.0)  # saved here, and at a stop
    settings = KTSettings(min_group_size=3, microbatch_wait_ms=0.0)

    def started() -> tuple[KTComponent, KTService]:
        component = KTComponent(settings, device, None, db, None, LiveBoard(), HeartbeatRegistry())
        asyncio.run(component.start())
        service = component.get_service()
        assert service is not None
        return component, service

    component, svc = started()
    for round_ in range(2):
        _class(package, pseudonymize, svc, [f"stu-{n}" for n in range(6)], f"r{round_}")
    before, counts = _figures(svc.class_summary()), _counts(svc.class_summary())
    save_records(svc, StatePersistence(db))  # the record holds the student: the erase rewrites it
    db.write(lambda c: None).result(5)
    assert svc.erase([pseudonymize("stu-1")]).result(10).had == {pseudonymize("stu-1")}
    if restart == "stop":
        asyncio.run(component.stop())
    else:  # nothing saved after the erase (no stop: the record the erase rewrote is read again)
        svc.stop()
    component, svc = started()
    try:
        withheld = {"students": 0, "weakest": [], "skills": []}
        assert before["students"] == 6 and counts["students"] == 6
        assert _figures(svc.class_summary()) == withheld and svc.class_summary()["suppressed"]
        _class(package, pseudonymize, svc, ["stu-2", "stu-3"], "after")
        assert _figures(svc.class_summary()) == withheld  # two of a group of three have answered since
        _class(package, pseudonymize, svc, ["stu-4"], "after")
        assert _figures(svc.class_summary())["students"] == 5  # taken anew, over those who remain
        assert _counts(svc.class_summary())["students"] == 5
        assert pseudonymize("stu-1") not in str(StatePersistence(db).load_lesson_view())
    finally:
        asyncio.run(component.stop())


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {"students": summary["students"], "weakest": summary["weakest"],
            "practised": [s["students"] for s in summary["skills"]],
            "assessed": [s["assessed"] for s in summary["skills"]]}


def test_an_erase_leaves_the_published_counts_of_students_until_a_group_has_answered_since(
    package: KTPackage, engine: Any, pseudonymize: Any
) -> None:
    # The lesson's count of students, each skill's count of those who practised it and, for a skill too
    # few have answered on to show, of those who have, dropped at once: which skills the erased student
    # had practised. They stand as published, with the figures, until those are taken anew
    settings = KTSettings(min_group_size=3, microbatch_wait_ms=0.0)
    svc = KTService(package, engine, settings, pseudonymize)
    svc.start()
    try:
        students = [f"stu-{n}" for n in range(6)]
        for round_ in range(2):
            _class(package, pseudonymize, svc, students, f"r{round_}")
        skill_of = [package.skill_index[item.skill_id] for item in package.items]
        alone = next(n for n, k in enumerate(skill_of) if k not in skill_of[:3])
        skill = skill_of[alone]
        svc.submit([_answer(package, pseudonymize, "stu-1", "alone", alone)]).result(10)  # only stu-1 on it
        before = _counts(svc.class_summary())
        assert before["students"] == 6 and before["practised"][skill] == before["assessed"][skill] == 1
        assert svc.erase([pseudonymize("stu-1")]).result(10).had == {pseudonymize("stu-1")}
        assert _counts(svc.class_summary()) == before
        _class(package, pseudonymize, svc, ["stu-2", "stu-3"], "after")
        assert _counts(svc.class_summary()) == before  # two of a group of three have answered since
        _class(package, pseudonymize, svc, ["stu-4"], "after")
        now = _counts(svc.class_summary())  # taken anew, over those who remain
        assert now["students"] == 5 and now["practised"][skill] == now["assessed"][skill] == 0
    finally:
        svc.stop()


def test_erase_requests_keep_every_form_of_a_student_in_one_request_and_each_form_once() -> None:
    ids = ["a", "b", "c", "ａ", "d", "a", "e"]
    assert erase_requests(ids, limit=3) == [["a", "ａ", "b"], ["c", "d", "e"]]
    assert erase_requests(["a", "b", "c", "ａ"], limit=3) == [["a", "ａ", "b"], ["c"]]
    assert erase_requests(ids, limit=1000) == [["a", "ａ", "b", "c", "d", "e"]]

