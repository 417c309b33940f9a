"""The KT component: start with the real store and package, publish, flush on stop, restore on restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import KTSettings, MqttSettings, StoreSettings
from edge_agent.kt.component import KTComponent
from edge_agent.kt.package import KTPackage
from edge_agent.kt.persistence import StatePersistence
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService, ServiceBusy
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from tests.ext4 import ext4_unavailable, failing_ext4
from tests.kt.test_service import _answer


def test_component_runs_flushes_and_restores(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize
) -> None:
    settings = KTSettings(min_group_size=2)
    live, beats = LiveBoard(), HeartbeatRegistry()

    async def run() -> None:
        comp = KTComponent(settings, device, None, db, outbox, live, beats)
        assert not comp.health().ok
        await comp.start()
        assert comp.health().ok and beats.stale() == []
        svc = comp.get_service()
        assert svc is not None
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"e{n}", n) for n in range(2)])
        synced = svc.close_lesson_if_due(now_anyway=True)  # as if a window had ended: it went out then
        assert synced is not None and synced["answers"] == 2
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"f{n}", n) for n in range(3)])
        await asyncio.sleep(1.2)  # one publish turn
        assert live.get("learning")["answers"] == 5  # the teacher's lesson
        await comp.stop()
        assert not comp.health().ok
        # saved at the stop, after the last answer: the figures' count goes on exactly after the restart
        assert StatePersistence(db).load_lesson_view()["clean"] is True  # type: ignore[index]

        again = KTComponent(settings, device, None, db, outbox, live, beats)
        await again.start()
        restored = again.get_service()
        assert restored is not None and restored.student_count() == 3
        # The teacher's lesson goes on after a restart (an update mid-lesson emptied it: 160 answers -> 0).
        lesson = restored.class_summary()
        assert lesson["answers"] == 5 and lesson["students"] == 3 and lesson["skills"]
        # ... and saved again at once as it is now, not the stop's copy left there: a crash later (no clean
        # stop to save a newer one) brought that back, losing what came after it (privacy review: 11
        # answers shown as 5); the answers after it are in the journal until the next save holds them
        db.write(lambda conn: None).result(5)  # the writer's queue is in order
        copy = StatePersistence(db).load_lesson_view()
        assert copy is not None and copy["clean"] is False and copy["answers"] == 5
        await again.stop()

    asyncio.run(run())
    rows = db.read(lambda c: c.execute("SELECT stream, payload FROM outbox").fetchall())
    kt_rows = [json.loads(p) for s, p in rows if s == "kt_class"]
    # Stop sends the window not yet synced (3 answers), not the lesson (5): the cloud must not count twice.
    assert len(kt_rows) == 1 and kt_rows[0]["answers"] == 3 and kt_rows[0]["partial"]
    assert kt_rows[0]["class_id"] == device.class_id
    assert kt_rows[0]["kind"] == "kt_class_window" and kt_rows[0]["v"] == 1
    assert kt_rows[0]["model"] == package.metadata["version"]  # models change mid-term by remote update
    # the rules its figures were made by: a cloud built from the docs could not tell a board whose
    # min_group_size was set below its policy (a review)
    assert (kt_rows[0]["min_group_size"], kt_rows[0]["mastery_threshold"]) == (2, settings.mastery_threshold)
    assert "s0" not in rows[0][1] and pseudonymize("s0") not in rows[0][1]


def test_answers_after_the_last_save_of_the_lesson_are_in_it_after_a_power_cut(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, monkeypatch
) -> None:
    # A review: SIGKILL mid-lesson (as a power cut, the watchdog or the OOM killer): the teacher's lesson
    # started over, and the ~250 answers of the window not yet sent reached no window the cloud got. Then
    # the two were saved every 15 s, and a power cut lost the answers of the seconds before it from both
    # (the students' states had them; the window sent to the cloud counted 4 of 7)
    from edge_agent.kt import component as component_module

    monkeypatch.setattr(component_module, "SAVE_LESSON_EVERY_S", 0.5)
    settings = KTSettings(min_group_size=2)

    async def run() -> None:
        comp = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"e{n}", n) for n in range(4)])
        await asyncio.sleep(1.5)  # saved while it runs
        assert StatePersistence(db).load_open_window()["answers"] == 4  # type: ignore[index]
        assert StatePersistence(db).load_lesson_view()["clean"] is False  # type: ignore[index]
        shown = [s["mastery_mean"] for s in svc.class_summary()["skills"]]
        monkeypatch.setattr(component_module, "SAVE_LESSON_EVERY_S", 3600.0)  # no save before the cut
        await asyncio.sleep(1.0)
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"f{n}", n) for n in range(2, 5)])
        comp._task.cancel()  # type: ignore[union-attr]  # the power cut: no stop, nothing saved at the end
        svc.stop()

        for _ in range(2):  # and a second cut right after the restart gives the same again
            again = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
            await again.start()
            restored = again.get_service()
            assert restored is not None
            lesson = restored.class_summary()
            assert lesson["answers"] == 7 and lesson["students"] == 5
            # the figures shown before the cut may hold those answers: the saved ones stand until 2
            # students have answered after the restart, not moved by the answers added again
            assert [s["mastery_mean"] for s in lesson["skills"]] == shown
            again._task.cancel()  # type: ignore[union-attr]
            restored.stop()
        last = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await last.start()
        await last.stop()  # sends the window, as partial, with the 7 answers

        third = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await third.start()  # sent, and nothing counted twice
        assert third.get_service().class_summary()["answers"] == 7  # type: ignore[union-attr]
        await third.stop()

    asyncio.run(run())
    rows = db.read(lambda c: c.execute("SELECT payload FROM outbox WHERE stream = 'kt_class'").fetchall())
    assert [json.loads(p)["answers"] for (p,) in rows] == [7]


def _cut(db: Database, image: Path) -> None:
    """An image of the files as a power cut now leaves them: all the writer was given is committed."""
    db.write(lambda conn: None).result(5)
    image.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{db.path}{suffix}", image / f"{db.path.name}{suffix}")


def _retried_after_the_cut(image: Path, db: Database, device, retry: list) -> tuple[int, int]:
    """The board started from the image, the client's retry sent again, the board stopped: (answers in
    the teacher's lesson, answers in the windows queued for the cloud)."""
    cut = Database(image / db.path.name, StoreSettings())
    cut.open()

    async def run() -> int:
        box = Outbox(cut, device, StoreSettings(), MqttSettings())
        box.open()
        comp = KTComponent(KTSettings(min_group_size=2), device, None, cut, box, LiveBoard(),
                           HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        await svc.submit_async(retry)
        answers = int(svc.class_summary()["answers"])
        await comp.stop()  # sends the window not synced yet
        return answers

    try:
        answers = asyncio.run(run())
        sql = "SELECT payload FROM outbox WHERE stream = 'kt_class'"
        windows = sum(json.loads(p)["answers"] for (p,) in cut.read(lambda c: c.execute(sql).fetchall()))
        return answers, windows
    finally:
        cut.close()


def test_a_power_cut_right_after_a_lesson_save_does_not_count_the_clients_retry_twice(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, tmp_path, monkeypatch
) -> None:
    # Suspected by a review, not reproduced then: the lesson records taken every 15 s could hold an answer
    # kept in memory whose state was not queued for the disk yet. A power cut between the two commits kept
    # the answer in the records but lost its state and event key, so the client's retry (its answer never
    # came) counted it twice. Here the records are taken just then, and the cut is an image of the files.
    from edge_agent.kt import component as component_module

    settings = KTSettings(min_group_size=2)
    image = tmp_path / "after-the-cut"
    retry = [_answer(package, pseudonymize, "s9", "cut", 1)]

    async def before() -> None:
        comp = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None and svc._persistence is not None
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"e{n}", n) for n in range(3)])
        save = svc._persistence.save

        def records_taken_meanwhile(*args: Any, **kwargs: Any) -> Any:
            if not image.exists():  # the answer is in the lesson; its state is not queued yet
                records = StatePersistence(db)
                taker = threading.Thread(target=component_module.save_records, args=(svc, records))
                taker.start()
                taker.join(0.5)
                _cut(db, image)
            return save(*args, **kwargs)

        monkeypatch.setattr(svc._persistence, "save", records_taken_meanwhile)
        await svc.submit_async(retry)
        await comp.stop()

    asyncio.run(before())
    # 5 before: the answer in the records, and its retry
    assert _retried_after_the_cut(image, db, device, retry)[0] == 4


@pytest.mark.parametrize("taken_by", ["the lesson records", "the synced window"])
def test_a_power_cut_after_a_failed_state_commit_does_not_count_the_clients_retry_twice(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, tmp_path, monkeypatch,
    taken_by: str,
) -> None:
    # Left by the last round's review: a state commit that fails (a full disk, an I/O error) keeps the answer
    # in the teacher's lesson in memory and answers the client 503. Lesson records (or a synced window) stored
    # next held the answer; a power cut before its state was stored again lost the state and its event key,
    # so the client's retry counted a second time: 5 answers for 4. Those states now go in the same commit.
    from edge_agent.errors import StoreFullError
    from edge_agent.kt import component as component_module

    settings = KTSettings(min_group_size=2)
    image = tmp_path / "after-the-cut"
    retry = [_answer(package, pseudonymize, "s9", "cut", 1)]

    async def before() -> None:
        comp = KTComponent(settings, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None and svc._persistence is not None
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"e{n}", n) for n in range(3)])
        persistence, save = svc._persistence, svc._persistence.save

        def fails_once(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(persistence, "save", save)  # the disk takes the next writes again
            failed: concurrent.futures.Future[None] = concurrent.futures.Future()
            failed.set_exception(StoreFullError("database or disk is full"))
            return failed

        monkeypatch.setattr(persistence, "save", fails_once)
        with pytest.raises(ServiceBusy):
            await svc.submit_async(retry)
        if taken_by == "the lesson records":
            component_module.save_records(svc, StatePersistence(db))
        else:
            queued = comp._queue_window(svc, now_anyway=True)
            assert queued is not None and queued.result(5) > 0
        _cut(db, image)
        await comp.stop()

    asyncio.run(before())
    assert _retried_after_the_cut(image, db, device, retry) == (4, 4)  # the teacher's lesson, the cloud's


@pytest.mark.parametrize("fails_again", [False, True])
def test_a_window_the_full_disk_held_stores_the_students_newest_state_not_the_one_at_its_queuing(
    package: KTPackage, device, small_disk: Database, pseudonymize, tmp_path, monkeypatch, fails_again: bool
) -> None:
    # A review of the carried states: a synced window the full disk refused is held by the outbox and tried
    # again later; its copy of the unsaved states, taken when it was queued, wrote a student's older state
    # over the newer one committed meanwhile, and took the student off the unsaved list though a newer
    # commit had failed too: the answer in between was lost for good (3 stored of 4 after a cut).
    from edge_agent.store import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "HELD_RETRY_S", 3.0)
    box = Outbox(small_disk, device, StoreSettings(), MqttSettings())
    box.open()
    settings = KTSettings(min_group_size=2)
    star = pseudonymize("star")
    a1, a2, a3 = (_answer(package, pseudonymize, "star", f"a{n}", n) for n in (1, 2, 3))
    image = tmp_path / "after-the-cut"

    def stored_answers(db: Database) -> int | None:
        state = StatePersistence(db).states_of([star], package.hidden, len(package.skills)).get(star)
        return None if state is None else state.answers

    async def fill(svc: KTService, tag: str) -> None:
        for n in range(400):  # until a commit fails: a real SQLITE_FULL
            try:
                await svc.submit_async([_answer(package, pseudonymize, f"{tag}{n}", "e", 0)])
            except ServiceBusy:
                return
        raise AssertionError("the disk never filled")

    async def before() -> int:
        comp = KTComponent(settings, device, None, small_disk, box, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        await svc.submit_async([_answer(package, pseudonymize, "star", "a0", 0)])
        await fill(svc, "f")
        with pytest.raises(ServiceBusy):
            await svc.submit_async([a1])
        queued = comp._queue_window(svc, now_anyway=True)
        assert queued is not None
        await asyncio.sleep(0.2)
        assert not queued.done()  # held in memory by the outbox
        small_disk.write(lambda c: c.execute("PRAGMA max_page_count = 100000")).result(5)  # space freed
        assert (await svc.submit_async([a2]))[0]["status"] == "applied"
        if fails_again:
            pages = small_disk.read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
            small_disk.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}")).result(5)
            await fill(svc, "g")
            with pytest.raises(ServiceBusy):
                await svc.submit_async([a3])
            small_disk.write(lambda c: c.execute("PRAGMA max_page_count = 100000")).result(5)
        queued.result(10)  # the held window, stored at its next try
        small_disk.write(lambda c: None).result(5)
        mastery = svc.student_mastery(star)
        assert mastery is not None
        assert stored_answers(small_disk) == mastery["answers"]  # 2 before: a2's state overwritten
        _cut(small_disk, image)
        await comp.stop()
        return int(mastery["answers"])

    answers = asyncio.run(before())
    assert stored_answers(small_disk) == answers  # a clean stop leaves them all
    cut = Database(image / small_disk.path.name, StoreSettings())
    cut.open()
    try:
        assert stored_answers(cut) == answers  # and so does a power cut
    finally:
        cut.close()


def test_answers_a_failed_commit_left_that_the_stops_lesson_save_stores_are_not_logged_as_lost(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, monkeypatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A review: the service's last try at its stop failed and logged the answers "lost with this stop";
    # the component's lesson save right after it stored them. The loss is said only if that fails too.
    from edge_agent.errors import StoreFullError

    answer = _answer(package, pseudonymize, "s9", "x", 1)

    async def run() -> None:
        comp = KTComponent(KTSettings(min_group_size=2), device, None, db, outbox, LiveBoard(),
                           HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None and svc._persistence is not None

        def fails(*args: Any, **kwargs: Any) -> Any:
            failed: concurrent.futures.Future[None] = concurrent.futures.Future()
            failed.set_exception(StoreFullError("database or disk is full"))
            return failed

        monkeypatch.setattr(svc._persistence, "save", fails)  # the batch's commit and the stop's last try
        with pytest.raises(ServiceBusy):
            await svc.submit_async([answer])
        await comp.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(run())
    stored = StatePersistence(db).states_of([answer.student], package.hidden, len(package.skills))
    assert stored[answer.student].answers == 1
    assert not [r for r in caplog.records if "lost with this stop" in r.getMessage()]


def _start_answer_stop(
    package: KTPackage, device, db: Database, outbox: Outbox, event: str
) -> tuple[str, dict]:
    """One run of the component: student s1 answers once; (its health, s1's feedback)."""

    async def run() -> tuple[str, dict]:
        comp = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        [feedback] = await svc.submit_async([_answer(package, svc.pseudonymize, "s1", event, 0)])
        health = comp.health().detail
        await comp.stop()
        return health, feedback

    return asyncio.run(run())


def test_a_changed_pseudonym_secret_is_said_at_start_and_one_put_back_is_found_again(
    package: KTPackage, device, db: Database, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    # A review: a secret replaced (restored from the wrong board, a placeholder) made every stored student
    # unreachable and answers already applied were taken again, with every check saying OK. Round 2: the
    # original put back, as the message asks, was reported as another change.
    secret = device.pseudonym_secret_file
    original = secret.read_bytes()
    health, first = _start_answer_stop(package, device, db, outbox, "e1")
    assert health == "1 students"
    assert _start_answer_stop(package, device, db, outbox, "e1")[1]["status"] == "duplicate"  # same secret
    assert "pseudonym_secret_file" not in caplog.text
    secret.write_bytes(os.urandom(32).hex().encode())  # another board's
    with caplog.at_level(logging.WARNING):
        health, after = _start_answer_stop(package, device, db, outbox, "e1")
    assert "the pseudonym secret changed at this start" in health and after["status"] == "applied"
    assert "is not the secret the 1 stored students were made under" in caplog.text
    caplog.clear()
    secret.write_bytes(original)  # put back
    with caplog.at_level(logging.WARNING):
        health, back = _start_answer_stop(package, device, db, outbox, "e1")
    assert back["status"] == "duplicate" and back["student"] == first["student"], back
    assert health == "2 students" and "is not the secret" not in caplog.text
    assert "holds the pseudonym secret used before the last change again" in caplog.text


def test_a_secret_saved_with_a_byte_order_mark_before_this_release_keeps_its_students(
    package: KTPackage, device, db: Database, outbox: Outbox, engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Round 2: releases before 2026-12-03 kept an editor's BOM in the secret; stripping it at the upgrade
    # gave every student a new pseudonym, silently (no fingerprint was stored yet to compare with).
    text = os.urandom(32).hex().encode()
    device.pseudonym_secret_file.write_bytes(b"\xef\xbb\xbf" + text + b"\r\n")
    old_release = Pseudonymizer(b"\xef\xbb\xbf" + text)  # what it read
    svc = KTService(package, engine, KTSettings(), old_release, persistence=StatePersistence(db))
    svc.start()
    [before] = svc.submit([_answer(package, old_release, "s1", "e1", 0)]).result(10)
    svc.stop()
    with caplog.at_level(logging.WARNING):
        health, after = _start_answer_stop(package, device, db, outbox, "e1")
    assert after["status"] == "duplicate" and after["student"] == before["student"], after
    assert health == "1 students" and "pseudonym" not in caplog.text
    # from now on the same: the fingerprint stored is that of the secret with its mark
    assert _start_answer_stop(package, device, db, outbox, "e2")[1]["student"] == before["student"]
    # ... and the file saved again without the mark is the same secret (round 3: every student afresh)
    device.pseudonym_secret_file.write_bytes(text + b"\n")
    health, again = _start_answer_stop(package, device, db, outbox, "e2")
    assert again["status"] == "duplicate" and again["student"] == before["student"], again
    assert "secret" not in health and "pseudonym" not in caplog.text


def test_a_secret_file_with_a_mark_is_read_as_older_releases_read_it_and_stored_in_the_current_form(
    package: KTPackage, device, db: Database, outbox: Outbox
) -> None:
    # Round 4: with no student yet at the upgrade, the mark was dropped, and a rollback to a release that
    # keeps it gave every student a new pseudonym; and a history written as "a,b" by an earlier build in
    # pseudonym_fingerprint stayed there, read as one fingerprint by the builds that keep one
    text = os.urandom(32).hex().encode()
    device.pseudonym_secret_file.write_bytes(b"\xef\xbb\xbf" + text + b"\n")
    marked = Pseudonymizer(b"\xef\xbb\xbf" + text)
    assert _start_answer_stop(package, device, db, outbox, "e1")[1]["student"] == marked("s1")
    persistence = StatePersistence(db)
    db.write(lambda conn: conn.execute("UPDATE meta SET value = ? WHERE key = 'pseudonym_fingerprint'",
                                       (f"{marked.fingerprint},{'0' * 16}",))).result(5)
    _start_answer_stop(package, device, db, outbox, "e2")
    select = "SELECT value FROM meta WHERE key = 'pseudonym_fingerprint'"
    newest = db.read(lambda c: c.execute(select).fetchone())
    assert newest[0] == marked.fingerprint and persistence.secret_fingerprints()[0] == marked.fingerprint
    # ... and so is a changed secret over stored students (it was taken without its mark)
    other = os.urandom(32).hex().encode()
    device.pseudonym_secret_file.write_bytes(b"\xef\xbb\xbf" + other + b"\n")
    health, changed = _start_answer_stop(package, device, db, outbox, "e3")
    assert "the pseudonym secret changed" in health
    assert changed["student"] == Pseudonymizer(b"\xef\xbb\xbf" + other)("s1"), changed


def test_a_new_secret_on_a_board_without_students_is_no_error(
    package: KTPackage, device, db: Database, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    # Round 3: "not the secret the 0 stored students were made under" (IT restoring the school's secret
    # after the first boot)
    async def start_stop() -> None:
        comp = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        await comp.stop()

    asyncio.run(start_stop())
    device.pseudonym_secret_file.write_bytes(os.urandom(32).hex().encode())
    with caplog.at_level(logging.WARNING):
        health, _ = _start_answer_stop(package, device, db, outbox, "e1")
    assert health == "1 students" and "pseudonym" not in caplog.text


def test_component_reports_missing_package(tmp_path, device) -> None:
    import pytest

    from edge_agent.errors import ModelError

    comp = KTComponent(
        KTSettings(package_dir=tmp_path / "none"), device, None, None, None, None, HeartbeatRegistry()
    )
    with pytest.raises(ModelError, match="does not exist"):
        asyncio.run(comp.start())


class _SlowEngine:
    """A real engine whose calls take a second (a busy KT thread)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_name, self.backend, self.precision = inner.model_name, inner.backend, inner.precision
        self.inputs, self.outputs = inner.inputs, inner.outputs

    def infer(self, feeds):
        time.sleep(1.0)
        return self.inner.infer(feeds)

    def close(self) -> None:
        self.inner.close()


def test_a_swap_that_times_out_is_withdrawn_and_the_running_engine_stays(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, engine
) -> None:
    async def run() -> None:
        comp = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        slow = _SlowEngine(svc.engine)
        svc.engine = slow  # type: ignore[assignment]
        busy = svc.submit([_answer(package, pseudonymize, "s1", "e1")])
        await asyncio.sleep(0.2)  # the KT thread is inside the slow call
        with pytest.raises(ServiceBusy, match="did not take the new model"):
            await asyncio.to_thread(comp.swap_model, package, engine, 0.2)
        busy.result(5)
        await svc.submit_async([_answer(package, pseudonymize, "s1", "e2")])
        assert svc.engine is slow  # the withdrawn swap was not applied after the busy call
        await comp.stop()

    asyncio.run(run())


def test_a_saved_lesson_that_has_ended_or_is_damaged_is_not_taken_back(
    package: KTPackage, engine, pseudonymize
) -> None:
    from edge_agent.kt.service import KTService

    settings = KTSettings(lesson_gap_s=600.0, microbatch_wait_ms=0.0)
    now = [1_800_000_000.0]
    svc = KTService(package, engine, settings, pseudonymize, clock=lambda: now[0])
    svc.start()
    svc.submit([_answer(package, pseudonymize, "s0", "e0")]).result(5)
    svc.stop()
    view = svc.lesson_view()
    assert view is not None and view["answers"] == 1
    later = KTService(package, engine, settings, pseudonymize, clock=lambda: now[0])
    now[0] += 601
    assert not later.restore_lesson_view(view)  # the break came: the next lesson starts empty
    now[0] -= 601
    assert not later.restore_lesson_view({"started": "x"})
    assert later.restore_lesson_view(view) and later.class_summary()["answers"] == 1


async def _one_answer_then_a_stalled_disk(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, release: threading.Event
) -> tuple[KTComponent, KTService]:
    """A started component after one answer, its store's writer stalled until ``release`` is set."""
    comp = KTComponent(KTSettings(min_group_size=1), device, None, db, outbox, LiveBoard(),
                       HeartbeatRegistry())
    await comp.start()
    svc = comp.get_service()
    assert svc is not None
    await svc.submit_async([_answer(package, pseudonymize, "s0", "e0")])
    stalled = threading.Event()
    db.write(lambda _c: stalled.set() or release.wait(10))
    assert stalled.wait(5)
    return comp, svc


def test_a_stop_waits_a_short_while_for_the_partial_window_on_a_stalled_disk_and_sends_it_after(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, caplog
) -> None:
    # At a stop the window not yet synced goes out as partial. Waiting the usual 10 s for it to be stored
    # behind a stalled disk ran past the daemon's whole stop budget (9 s): the stop waits 2 s, says so,
    # and the summary, queued, is stored once the disk answers.
    release = threading.Event()

    async def run() -> float:
        comp, _ = await _one_answer_then_a_stalled_disk(package, device, db, outbox, pseudonymize, release)
        threading.Timer(4.0, release.set).start()  # the disk answers again 4 s into the stop
        started = time.monotonic()
        stopping = asyncio.ensure_future(comp.stop())
        while not any("not stored after" in r.getMessage() for r in caplog.records):
            if time.monotonic() - started > 8:
                break
            await asyncio.sleep(0.05)
        said_after = time.monotonic() - started
        await stopping
        return said_after

    with caplog.at_level(logging.WARNING):
        said_after = asyncio.run(run())
    assert 1.8 <= said_after < 3.5, said_after
    assert any("not stored after 2 s" in r.getMessage() for r in caplog.records)
    rows = db.read(lambda c: c.execute("SELECT payload FROM outbox WHERE stream = 'kt_class'").fetchall())
    assert [(json.loads(p)["answers"], json.loads(p)["partial"]) for (p,) in rows] == [(1, True)]


def test_a_lesson_summary_held_up_by_a_stalled_disk_is_said_to_wait_and_is_stored_after_it(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, monkeypatch, caplog
) -> None:
    # It said "could not queue the lesson summary for sync: " (an empty TimeoutError) and logged two
    # tracebacks, while the summary was queued all along and was stored once the disk answered.
    monkeypatch.setattr("edge_agent.kt.component.SEND_WAIT_S", 0.3)
    release = threading.Event()

    async def run() -> None:
        comp, svc = await _one_answer_then_a_stalled_disk(package, device, db, outbox, pseudonymize, release)
        queued = comp._queue_window(svc, now_anyway=True)
        assert queued is not None
        await comp._stored(queued, 0.3)
        release.set()
        await comp.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the lesson summary is not stored after 0.3 s: the disk is slow, stalled, full or "
                    "read-only (the store's health says which); it is written once the disk takes it"], said
    rows = db.read(lambda c: c.execute("SELECT payload FROM outbox WHERE stream = 'kt_class'").fetchall())
    assert [json.loads(p)["answers"] for (p,) in rows] == [1]


@pytest.mark.skipif(ext4_unavailable() is not None, reason=str(ext4_unavailable()))
def test_a_disk_that_stalls_while_knowledge_tracing_starts_does_not_get_the_board_restarted(
    package: KTPackage, device, pseudonymize, tmp_path
) -> None:
    # Review: the stored states are read at start with the worker's heartbeat already registered and not
    # excused: a 20-s stall then withheld the watchdog's pings for 10 s (under systemd, WatchdogSec=30, a
    # longer one restarts the board, and a worn eMMC again and again).
    from edge_agent.config import MqttSettings, StoreSettings

    beats = HeartbeatRegistry()
    with failing_ext4(tmp_path / "disk") as storage:
        db = Database(storage.path / "edge-agent.db", StoreSettings())
        db.open()
        outbox = Outbox(db, device, StoreSettings(), MqttSettings())
        outbox.open()

        async def run() -> None:
            first = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), beats)
            await first.start()
            await first.get_service().submit_async(  # type: ignore[union-attr]
                [_answer(package, pseudonymize, f"s{n}", f"e{n}", n) for n in range(3)])
            await first.stop()
            stale: list[list[str]] = []
            with storage.frozen():
                again = KTComponent(KTSettings(), device, None, db, outbox, LiveBoard(), beats)
                starting = asyncio.create_task(again.start())
                for _ in range(12):  # past the heartbeat's 10 s
                    await asyncio.sleep(1.0)
                    stale.append(beats.stale())
            await asyncio.wait_for(starting, 30)
            assert again.get_service().student_count() == 3  # type: ignore[union-attr]
            await again.stop()
            assert stale == [[]] * len(stale), stale

        try:
            asyncio.run(run())
        finally:
            db.close()
