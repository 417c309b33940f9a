"""The knowledge-tracing daemon component: loads the package and saved states, runs the service,
publishes the class picture to the LiveBoard and closed lesson windows to the outbox."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable

from edge_agent.config import DeviceSettings, KTSettings
from edge_agent.errors import ModelError
from edge_agent.inference.engine import Engine
from edge_agent.inference.select import mark_closed
from edge_agent.kt.classroom import leaving_the_board
from edge_agent.kt.erasure import DAY_S, newest_before, retention_cutoff, retire_states
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.persistence import EVENT_KEEP_S, StatePersistence, forget_open_window
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import NOT_RUNNING_FOR_SWAP, KTService, ServiceBusy, step_model_id
from edge_agent.lifecycle import Health, HeartbeatRegistry, waiting_on_disk
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from edge_agent.sync.protocol import STREAM_KINDS
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

STREAM = "kt_class"
PAYLOAD_VERSION = 1  # of the kt_class_window payload (docs/sync-protocol.md)
HEARTBEAT = "kt-inference"
PUBLISH_INTERVAL_S = 1.0
STOP_TIMEOUT_S = 10.0
# The teacher's lesson and the unsent synced window are saved this often while they run: a power cut
# (a board switched off at the wall after the last lesson) has no stop to save them at
SAVE_LESSON_EVERY_S = 15.0
PRUNE_EVERY_S = 3600.0  # expired idempotency keys leave SQLite hourly (and at start)
RETIRE_EVERY_S = 86400.0  # states past kt.student_state_max_age_days leave daily (and soon after start)
# Retention waits for the clock to be synchronised; tried again this often meanwhile: a board switched off
# every evening whose NTP answers only after the first turn would else never retire a state
RETIRE_UNSYNCED_RETRY_S = 600.0
SEND_WAIT_S = 10.0  # for a lesson summary to be stored; it stays queued after that
# At a stop: waiting SEND_WAIT_S behind messages the disk refused ran past the daemon's stop budget (9 s)
# and the teacher's lesson was never saved (a review). The store, stopped last, tries what waits once more.
STOP_SEND_WAIT_S = 2.0


def open_default_engine(package: KTPackage, intra_op_threads: int = 1) -> Engine:
    """ONNX Runtime on the package's step model (the inference loader may supply TensorRT instead)."""
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

    return OnnxRuntimeEngine(package.step_model, model_name="kt-step", intra_op_threads=intra_op_threads)


def check_engine(engine: Engine, package: KTPackage) -> None:
    specs = {s.name: s for s in engine.inputs}
    outs = {s.name for s in engine.outputs}
    if not {"skill", "correct", "h", "c"} <= set(specs) or not {"probs", "h_out", "c_out"} <= outs:
        raise ModelError(f"engine {engine.model_name} is not a KT step model (inputs {sorted(specs)})")
    if specs["h"].shape[-1] not in (-1, package.hidden):
        raise ModelError(
            f"engine {engine.model_name} has hidden size {specs['h'].shape[-1]}, "
            f"the package says {package.hidden}: engine and package do not match"
        )
    # else a model trained on other skills than skills.json lists loads and fails every answer
    skills = {s.name: s for s in engine.outputs}["probs"].shape[-1]
    if skills not in (-1, len(package.skills)):
        raise ModelError(
            f"engine {engine.model_name} answers for {skills} skills, the package's skills.json lists "
            f"{len(package.skills)}: engine and package do not match"
        )


class KTComponent:
    name = "kt"
    essential = False

    def __init__(  # noqa: PLR0917  (the daemon's component signature, fixed by the lead)
        self,
        settings: KTSettings,
        device: DeviceSettings,
        engine: Engine | None,
        db: Database | None,
        outbox: Outbox | None,
        live: LiveBoard | None,
        heartbeats: HeartbeatRegistry,
    ) -> None:
        """``engine`` None: open ONNX Runtime on the package's kt_step.onnx at start."""
        self.settings = settings
        self.device = device
        self._engine = engine
        self._own_engine = engine is None
        self._db = db
        self._outbox = outbox
        self._live = live
        self._heartbeats = heartbeats
        self.service: KTService | None = None
        self._task: asyncio.Task[None] | None = None
        self._problem: str | None = "not started"
        self._secret_changed = False
        self._run_started = time.time()  # states updated since are never deleted by retention
        # Retention runs only while the board's clock is known to be right, as the outbox ages rows out: by
        # its flag (the daemon's ClockSyncFlag). No outbox (tests, tools): no flag, taken as right.
        self._clock_synced: Callable[[], bool] = outbox.clock_synced if outbox is not None else lambda: True
        self._said_unsynced = False

    def get_service(self) -> KTService | None:
        return self.service

    @property
    def engine(self) -> Engine | None:
        """The engine answering students (None before the first start opens the package's)."""
        return self._engine

    def swap_model(self, package: KTPackage, engine: Engine, timeout_s: float = 30.0) -> None:
        """Hand a loaded, checked model to the running service (any thread but the event loop's).

        The component owns the new engine from then on; an engine it opened itself is closed once out
        of service. Raises ModelError/ServiceBusy when the service refused or did not take it in time."""
        service = self.service
        if service is None:
            raise ServiceBusy(NOT_RUNNING_FOR_SWAP)
        future = service.swap(package, engine)
        try:
            old = future.result(timeout_s)
        except concurrent.futures.TimeoutError as exc:
            if future.cancel():  # still queued: withdrawn, so the caller may close ``engine``
                message = f"knowledge tracing did not take the new model within {timeout_s} s"
                raise ServiceBusy(message) from exc
            old = future.result()  # the KT thread is swapping it in right now: a moment
        if self._own_engine:
            old.close()
            mark_closed(old, running=engine)
        self._engine, self._own_engine = engine, True

    async def start(self) -> None:
        self._run_started = time.time()
        self.service = await asyncio.to_thread(self._build)
        self.service.start()
        self._problem = None
        self._task = asyncio.create_task(self._publish_loop(), name="kt-publish")
        log.info(
            "knowledge tracing started: %s skills, %s students restored",
            len(self.service.package.skills),
            self.service.student_count(),
        )

    def _build(self) -> KTService:
        package = load_package(self.settings.package_dir)
        pseudonymize = Pseudonymizer.from_file(self.device.pseudonym_secret_file)
        if self._engine is None:
            self._engine = open_default_engine(package)
        check_engine(self._engine, package)
        persistence = StatePersistence(self._db) if self._db is not None else None
        beat = self._heartbeats.register(HEARTBEAT, max_gap_s=10.0)
        # Registered from here on: the reads below wait on a stalled disk as the running service's do, and
        # are excused like them (a stall of 10 s at start withheld the watchdog's pings).
        with waiting_on_disk(beat):
            if persistence is not None:
                pseudonymize = self._secret_of_the_stored(pseudonymize, persistence)
        service = KTService(
            package, self._engine, self.settings, pseudonymize, persistence=persistence, heartbeat=beat
        )
        with waiting_on_disk(beat):
            self._restore(service, package, persistence)
        return service

    def _secret_of_the_stored(self, secret: Pseudonymizer, persistence: StatePersistence) -> Pseudonymizer:
        """The secret to use, checked against the ones the stored students were made under; a changed one
        is said (ERROR, and in health until the next start): every stored student starts afresh."""
        path = self.device.pseudonym_secret_file
        before = Pseudonymizer.as_read_before(path)  # the file has a BOM: older releases kept it in
        # the secret as the file holds it: with the mark whenever it has one, students or not (a rollback
        # to a release that keeps it reads it so; round 4)
        as_held = before if before is not None else secret
        known = persistence.secret_fingerprints()
        # the mark's variant whether or not the file has it now: taken with it at the upgrade, the file
        # saved again without it is the same secret (round 3: every student started afresh)
        candidates = [secret, secret.with_mark()]
        if not known:
            # a new board, or one of a release before the fingerprints: its students were made under the
            # file as that release read it (a review: stripping the BOM at the upgrade reset every student)
            persistence.record_secret(as_held.fingerprint, known)
            return as_held
        for candidate in candidates:
            if candidate.fingerprint == known[0]:
                persistence.record_secret(candidate.fingerprint, known)  # in the current form (round 4)
                return candidate
        for candidate in candidates:
            if candidate.fingerprint in known:
                log.warning("%s holds the pseudonym secret used before the last change again: the students "
                            "stored under it are found again; those who answered only since the change start "
                            "afresh", path)
                persistence.record_secret(candidate.fingerprint, known)
                return candidate
        stored = persistence.stored_count()
        if not stored:  # no student to lose (round 3: an ERROR over 0 students)
            persistence.record_secret(as_held.fingerprint, known)
            return as_held
        self._secret_changed = True
        log.error(
            "device.pseudonym_secret_file (%s) is not the secret the %s stored students were made under: "
            "every student starts afresh, and answers already applied are taken again. If the file was "
            "edited or restored by mistake, put the original back and restart edge-agent",
            path, stored,
        )
        persistence.record_secret(as_held.fingerprint, known)
        return as_held

    def _restore(self, service: KTService, package: KTPackage, persistence: StatePersistence | None) -> None:
        if persistence is not None:
            limit = self.settings.max_students
            skills = [skill.id for skill in package.skills]
            moved = persistence.align_skills(package.hidden, skills, step_model_id(package))
            service.load(persistence.load_states(package.hidden, len(package.skills), limit))
            stored = persistence.stored_count()
            if stored > limit:
                log.warning(
                    "kt.max_students (%s) is below the %s student states stored: the %s not seen the longest "
                    "stay on disk, out of memory, and go on when their student answers again",
                    limit, stored, stored - limit,
                )
            persistence.prune_events(time.time() - EVENT_KEEP_S)
            view, unsent = persistence.load_lesson_view(), persistence.load_open_window()
            journal = persistence.load_journal()
            if moved.changed:  # the records and the journal name skills by index too (a review)
                persistence.save_lesson_view(None)
                persistence.save_open_window(None)
                persistence.clear_journal()
                if view is not None and "started" in view:
                    log.info("the teacher's lesson view starts afresh: the KT package's skills changed")
                if unsent is not None and "started" in unsent:
                    log.warning("a lesson window of %s answers left unsent at the last stop is dropped: the "
                                "KT package's skills changed", unsent.get("answers"))
                return
            if view is not None and service.restore_lesson_view(view):
                log.info("the teacher's lesson goes on (%s answers so far)", view.get("answers"))
            if unsent is not None and service.restore_open_window(unsent):
                log.info("a lesson window left unsent at the last stop (%s answers; a power cut?) is sent "
                         "when it ends", unsent.get("answers"))
            replayed = service.replay_journal(journal)
            if replayed:
                log.info("%s answers applied after the lesson was last saved (a power cut?) are counted "
                         "in it again", replayed)
            # Saved again at once, as they are now: the old copy left there, a crash later in the lesson
            # brought it back (6 students' answers gone from the teacher's view); a failed save leaves the
            # old copy and the answers beside the states, which give the same again.
            save_records(service, persistence)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        service = self.service
        if service is not None:
            drained = await asyncio.to_thread(service.stop, STOP_TIMEOUT_S)
            if not drained:
                log.warning("knowledge tracing did not finish its queued answers within %s s", STOP_TIMEOUT_S)
            # The window not yet synced, not the teacher's whole lesson: earlier windows went out already.
            # (A batch not drained in time may still be stored: lesson_order orders the windows after it.)
            # Ended ones too, and one due: whole windows, sent without partial (close_window_if_due).
            while (queued := self._queue_window(service, now_anyway=True, partial=True)) is not None:
                await self._stored(queued, STOP_SEND_WAIT_S)
            if self._db is not None:  # a restart mid-lesson (an update) must not empty the teacher's view
                with service.lesson_order:
                    view = service.lesson_view_copy(clean=drained)  # made on the writer (save_records)
                    unsaved, carried = service.unsaved_writer()
                    saving = StatePersistence(self._db).save_lesson_view(view, first=unsaved)
                try:
                    await asyncio.wrap_future(saving)
                    carried()
                except Exception as exc:
                    log.error("could not keep the teacher's lesson for the next start: %s", exc)
                if lost := service.unsaved_count():
                    log.error("%s answers or student states applied in memory are not stored, and are lost "
                              "with this stop: their clients were answered 503 and send them again", lost)
            self._publish(service)
        self._heartbeats.unregister(HEARTBEAT)
        if self._own_engine and self._engine is not None:
            self._engine.close()
            self._engine = None
        self._problem = "stopped"

    def health(self) -> Health:
        if self.service is None or not self.service.running:
            return Health(False, f"knowledge tracing is {self._problem or 'not running'}")
        if self.service.last_error:
            return Health(False, self.service.last_error)
        if self._secret_changed:  # said until the next start: the log line may go unread
            return Health(True, f"{self.service.student_count()} students; the pseudonym secret changed at "
                                f"this start: stored students not found again (see the log)")
        return Health(True, f"{self.service.student_count()} students")

    async def _publish_loop(self) -> None:
        assert self.service is not None
        next_prune = time.monotonic() + PRUNE_EVERY_S
        next_save = time.monotonic() + SAVE_LESSON_EVERY_S
        next_retire = 0.0
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL_S)
            queued = self._queue_window(self.service)
            if queued is not None:
                await self._stored(queued, SEND_WAIT_S)
                next_save = 0.0  # the teacher's lesson too (a round-2 review: a cut 10 s in lost it)
            self._publish(self.service)
            if self._db is not None and time.monotonic() >= next_save:
                next_save = time.monotonic() + SAVE_LESSON_EVERY_S
                self._save_lesson(StatePersistence(self._db))
            if self._db is not None and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                # the service forgets expired keys as it goes; the table is trimmed to match
                StatePersistence(self._db).prune_events(time.time() - EVENT_KEEP_S)
            if self._db is not None and time.monotonic() >= next_retire:
                next_retire = time.monotonic() + RETIRE_EVERY_S
                if not await self._retire_old_states(self._db, self.service):
                    next_retire = time.monotonic() + RETIRE_UNSYNCED_RETRY_S

    async def _retire_old_states(self, db: Database, service: KTService) -> bool:
        """Delete the states not updated for kt.student_state_max_age_days (retention_cutoff says which may
        go); not waited for: in pieces, between answers. False: skipped, the clock not known to be right."""
        max_age_s = self.settings.student_state_max_age_days * DAY_S
        if max_age_s <= 0:
            return True
        # A board with no RTC battery and no NTP yet ran two starts on a clock 2 years ahead: the states the
        # first stamped passed the newest-state guard in the second, and 27 of 30 students' states went.
        if not await asyncio.to_thread(self._clock_synced):  # chronyd may be asked: off the event loop
            if not self._said_unsynced:
                self._said_unsynced = True
                log.warning(
                    "student states are not deleted by retention while this board's clock is not known to "
                    "be right (neither systemd-timesyncd nor chronyd says it is synchronised): a clock set "
                    "ahead would make them look expired. Let the board reach an NTP server (check with "
                    "timedatectl); retention runs once the clock is synchronised")
            return False
        if self._said_unsynced:
            self._said_unsynced = False
            log.info("the board's clock is synchronised: retention of student states runs again")
        newest = await asyncio.to_thread(newest_before, db, self._run_started)
        now = time.time()
        cutoff = retention_cutoff(now, max_age_s, self._run_started, newest)
        if cutoff is None:
            if newest is not None and newest < now - max_age_s:
                log.warning(
                    "student states are not deleted by retention: even the newest stored before this start "
                    "is %.0f days old by this board's clock, which may be wrong (set ahead: no RTC battery, "
                    "no NTP); check it with timedatectl. States updated since the start are kept either way",
                    (now - newest) / DAY_S)
            return True
        retire_states(db, cutoff, self._run_started, service.forget_students).add_done_callback(_retired)
        return True

    def _save_lesson(self, persistence: StatePersistence) -> None:
        """Queued behind the writes before it (a window sent just now is cleared in its own transaction
        first); not waited for: the next turn saves again."""
        assert self.service is not None
        save_records(self.service, persistence)

    def _publish(self, service: KTService) -> None:
        if self._live is not None:
            self._live.publish("learning", service.class_summary())

    def _queue_window(
        self, service: KTService, *, now_anyway: bool = False, partial: bool = False
    ) -> concurrent.futures.Future[int] | None:
        """Close the synced window if it is due (or ``now_anyway``) and queue it for the cloud; None when
        none was due. ``partial`` (at a stop): the one cut short by it says so. Its record goes in the same
        transaction (forget_open_window); both after the states of its answers (KTService.lesson_order)."""
        with service.lesson_order:
            closed = service.close_window_if_due(now_anyway=now_anyway)
            if closed is None:
                return None
            summary, through, cut = closed
            done: concurrent.futures.Future[int] = concurrent.futures.Future()
            if not summary["answers"] or self._outbox is None:  # nothing to send
                done.set_result(0)
                return done
            payload = leaving_the_board(summary | ({"partial": True} if partial and cut else {})) | {
                "kind": STREAM_KINDS[STREAM], "v": PAYLOAD_VERSION, "class_id": self.device.class_id,
                "model": service.package.metadata.get("version"),
                # the rules the figures were made by, in every window, suppressed or not: a cloud cannot
                # know a board's config, and a min_group_size set below its policy must show
                "min_group_size": self.settings.min_group_size,
                "mastery_threshold": self.settings.mastery_threshold,
            }
            unsaved, carried = service.unsaved_writer()
            also = forget_open_window(through, first=unsaved)
            try:
                queued = self._outbox.enqueue(STREAM, payload, also=also)
            except Exception as exc:  # refused at once (too large, not JSON): said where it is awaited
                done.set_exception(exc)
                return done
            queued.add_done_callback(lambda f: f.exception() is None and carried())
            return queued

    @staticmethod
    async def _stored(queued: concurrent.futures.Future[int], wait_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.wrap_future(queued), wait_s)
        except asyncio.TimeoutError:  # queued: the outbox logs it if it fails after all
            log.warning("the lesson summary is not stored after %g s: the disk is slow, stalled, full or "
                        "read-only (the store's health says which); it is written once the disk takes it",
                        wait_s)
        except Exception as exc:  # the store reports its own errors; a lost aggregate must not stop KT
            log.error("could not queue the lesson summary for sync: %s", exc)


def _retired(done: concurrent.futures.Future[int]) -> None:
    error = done.exception()
    if error is not None:  # the store reports its own errors; tried again tomorrow
        log.warning("deleting old student states failed (tried again in a day): %s", error)
    elif count := done.result():
        metrics.KT_STUDENTS_ERASED.labels(reason="retention").inc(count)
        log.info("deleted %s student states not updated for kt.student_state_max_age_days", count)


def save_records(service: KTService, persistence: StatePersistence) -> None:
    """The lesson records as they are now; once stored, the answers they hold need not be kept beside the
    students' states any longer. (Saved again unchanged every 15 s they cost no flash writes: SQLite
    leaves pages whose content is unchanged alone; the daemon's wchar in a lesson with no new answers was
    36 KiB per 15 s whether this save ran or was skipped, 2026-12-04.)"""

    def stored(saving: concurrent.futures.Future[int | None]) -> None:
        if saving.exception() is not None:
            return
        carried()
        through = saving.result()
        if through is not None:
            service.records_saved(through)

    with service.lesson_order:  # after the states of the answers they hold (KTService.lesson_order)
        unsaved, carried = service.unsaved_writer()  # and with those whose own commit failed
        # Copies taken in queue order, made into records and JSON on the writer thread: made here, at
        # 10,000 students in a lesson every HTTP answer waited 0.2 s every 15 s (a review)
        view, window = service.lesson_view_copy(), service.open_window_copy()
        saving = persistence.save_lesson_records(view, window, first=unsaved)
        # inside: a save done already runs it here and now, before a later batch's failure is listed
        saving.add_done_callback(stored)
