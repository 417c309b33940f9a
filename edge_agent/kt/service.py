"""The knowledge-tracing service: answers in, feedback out, through one inference thread.

Callers (the HTTP handlers on the event loop) hand validated :class:`Answer` batches to :meth:`submit`,
which never blocks: a full intake (``queue_max`` answers waiting) raises :class:`ServiceBusy` (HTTP 503)
and is counted. The ``kt-inference`` thread gathers jobs into a micro-batch (up to ``microbatch_max``
answers or ``microbatch_wait_ms``, the wait only under load), runs the step engine once per round
(one step per student per round, so a student's answers stay in order), updates the in-memory states,
builds the batch's feedback outside the lock, and hands the changed states to the store. A job's
future resolves after the store committed, so acknowledged answers survive a restart. A repeated client
event id is not applied again; it gets the current feedback, marked ``duplicate`` when it says what the
applied one said (a retry), ``conflict`` when it does not (a client reusing ids would lose answers).

:meth:`submit_async` (the HTTP handlers) waits on a future of the caller's event loop; the futures of
one batch are settled with a single ``call_soon_threadsafe``, so a burst wakes the loop once, not once
per answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from edge_agent.config import KTSettings
from edge_agent.errors import EdgeAgentError, EngineError, ModelError, StoreLockedError
from edge_agent.inference.engine import Engine
from edge_agent.kt.answers import Answer
from edge_agent.kt.applied_events import AppliedEvents
from edge_agent.kt.classroom import LessonWindow, items_by_skill, summarize
from edge_agent.kt.erasure import erase_writer
from edge_agent.kt.package import KTPackage
from edge_agent.kt.persistence import (
    EVENT_KEEP_S,
    EventRow,
    JournalRow,
    StatePersistence,
    Tail,
    Writer,
    state_writer,
)
from edge_agent.kt.recommend import ItemBank, item_success, weakest_skills
from edge_agent.kt.state import RECENT_ITEMS, UNKNOWN_MODEL, StudentState, history_code
from edge_agent.lifecycle import Heartbeat, waiting_on_disk
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

Feedback = dict[str, Any]


class ServiceBusy(EdgeAgentError):
    """The intake is full or the service is not running; the client should retry (HTTP 503) after
    ``retry_after_s``: a second for a full queue, a minute for a store that cannot write (a full disk)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# A thread-side future (submit) or one of the caller's event loop (submit_async).
_AnyFuture = Union[Future[list[Feedback]], "asyncio.Future[list[Feedback]]"]


@dataclass
class _Job:
    answers: Sequence[Answer]
    future: _AnyFuture
    arrived: float  # perf_counter
    loop: asyncio.AbstractEventLoop | None = None  # set when ``future`` belongs to this loop


@dataclass
class _Swap:
    package: KTPackage
    engine: Engine
    model: bytes  # step_model_id(package)
    future: Future[Engine]  # resolves to the engine taken out of service


@dataclass
class _Erase:
    students: set[str]  # pseudonyms
    future: Future[Erased]


@dataclass
class _Taken:
    """What an erase took out of memory (KTService._take), put back if its delete does not commit."""

    states: dict[str, StudentState]
    tails: dict[str, Tail]
    unsaved: set[str]  # of those, the states whose own commit had failed


@dataclass(frozen=True)
class Erased:
    """What an erase found: of the pseudonyms asked for, those with learning data on the board (now erased).
    Pseudonyms, not students: one student may be stored under the pseudonyms of several forms of its id (as
    typed by an earlier release: web/erase.py asks for them all), so count students with
    :meth:`students_with_data` (a review: one such student counted two, and the reply said "erased 2,
    without data 0" for a request of which one student had never answered)."""

    had: frozenset[str]
    asked: frozenset[str]

    def students_with_data(self, students: Iterable[Collection[str]]) -> int:
        """How many of ``students`` (each the pseudonyms of its id's forms) had data under any of them."""
        return sum(1 for forms in students if not self.had.isdisjoint(forms))


CONFLICT_MESSAGE = (
    "this client_event_id was already used by this student for a different answer (another item, skills "
    "or correctness); this one was not applied. Give every answer its own client_event_id"
)
# A swap needs a trial answer: refused, the update is removed (it said "used at the next start": it was not)
NOT_RUNNING_FOR_SWAP = (
    "knowledge tracing is not running, so the new model cannot be tried on an answer: it is refused and "
    "removed; send it again once knowledge tracing runs (/api/v1/status)"
)
# In memory, besides the keys not committed yet: a client retry comes within seconds; older ones are read
# from SQLite like every new key. At most RECENT_MAX_KEYS of them (about 340 bytes each).
RECENT_KEEP_S = 60.0
RECENT_MAX_KEYS = 10_000
_STOP = object()
_Outcome = tuple[_AnyFuture, "list[Feedback] | None", "BaseException | None"]


def _settle(outcomes: list[_Outcome]) -> None:
    """On the event loop: resolve its futures; one that timed out or was cancelled is left alone."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


def _expire(future: asyncio.Future[list[Feedback]], seconds: float) -> None:
    if not future.done():
        # the answers wait behind a slow or held disk, mostly: a second later they would wait again (a
        # review: 9 of 14 batches behind another program's lock were told to come back in 1 s)
        future.set_exception(ServiceBusy(f"no feedback within {seconds} s; retry", retry_after_s=5))


def _bank_of(package: KTPackage) -> ItemBank:
    bank = ItemBank(items_by_skill(package), len(package.skills))
    if bank.practicable is not None:
        practicable = set(bank.practicable)
        missing = [s.id for k, s in enumerate(package.skills) if k not in practicable]
        log.warning("KT package %s: %d of %d skills have no items (%s%s); practice is recommended on the "
                    "weakest skills that have some", package.path, len(missing), len(package.skills),
                    ", ".join(missing[:5]), ", ..." if len(missing) > 5 else "")
    return bank


def step_model_id(package: KTPackage) -> bytes:
    """What a student state records as the model that computed it: the sha256 of the step model file
    (it changes with the weights, and only with them)."""
    try:
        return hashlib.sha256(package.step_model.read_bytes()).digest()
    except OSError as exc:
        raise ModelError(f"cannot read the KT step model {package.step_model}: {exc}") from exc


def check_compatible(current: KTPackage, new: KTPackage) -> None:
    """Saved student states carry over only to a model with the same hidden size and skills."""
    # Both name the way in for a package of other skills or size (a school's first: the trainer's default
    # hidden size is not the built-in model's, and its skills are the school's): "retrain with the same
    # hidden size" was followed, and refused again for the skills (a review)
    other = ("; a package of other skills or size is installed with kt.package_dir and a restart, not by "
             "an update")
    if new.hidden != current.hidden:
        raise ModelError(
            f"the new KT model has hidden size {new.hidden}, the running one {current.hidden}: student "
            f"states cannot carry over in an update{other}"
        )
    if [s.id for s in new.skills] != [s.id for s in current.skills]:
        raise ModelError(f"the new KT model's skills differ from the running one's (ids or order){other}")


class KTService:
    def __init__(
        self,
        package: KTPackage,
        engine: Engine,
        settings: KTSettings,
        pseudonymize: Callable[[str], str],
        *,
        persistence: StatePersistence | None = None,
        heartbeat: Heartbeat | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.package = package
        self.engine = engine
        self.settings = settings
        self.pseudonymize = pseudonymize  # handlers map raw student ids through this before anything else
        self._persistence = persistence
        self._heartbeat = heartbeat
        self._clock = clock
        # what the lesson's breaks and windows are measured by: on the wall clock an NTP step forward mid-
        # lesson (a board booted behind) ended the teacher's lesson (6 answers shown as 0)
        # (None: time.monotonic beside the real clock; a test's own clock drives both)
        self._monotonic = monotonic or (time.monotonic if clock is time.time else clock)
        self._prior = np.asarray(package.prior_success, dtype=np.float32)
        self._model_id = step_model_id(package)
        self._bank = _bank_of(package)
        self._skill_text = _skill_text(package)
        self._old_states_logged = False  # "stored by an older release": said once
        # least recently answered first: over settings.max_students the front is forgotten (_forget_oldest)
        self._states: OrderedDict[str, StudentState] = OrderedDict()
        self._forget_logged = 0.0  # monotonic time of the last "forgot students" warning
        # with a store, memory covers the keys not committed yet and a minute of recent ones, SQLite the
        # week; memory then stays flat however many answers a board takes, and however fast
        self._applied = (AppliedEvents(RECENT_KEEP_S, RECENT_MAX_KEYS) if persistence is not None
                         else AppliedEvents(EVENT_KEEP_S))
        self._lock = threading.Lock()  # guards _states, _lesson, _pending, _unsaved_*
        # Held from an answer's entry into the lesson until its student's state is queued for the disk, and
        # by whoever takes the lesson for the disk (its records, a synced window) until that is queued: the
        # single writer then commits a record after the states of the answers it holds. Taken in between, a
        # power cut between the two commits left a record holding an answer whose state and event key were
        # lost, and the client's retry counted it twice.
        self.lesson_order = threading.Lock()
        self._lesson: LessonWindow | None = None  # the synced window: lesson_window_s from its first answer
        # windows an answer found over (their time up, or the clock stepped): closed at once, sent next
        self._ended: list[LessonWindow] = []
        self._view: LessonWindow | None = None  # the teacher's lesson: until lesson_gap_s without an answer
        # the teacher's lesson once it ended (started, ended, answers): the page said "no answers yet" for
        # the lesson just given until the next one began
        self._last_lesson: dict[str, float] | None = None
        self._pending = 0
        # Applied in memory, but their commit failed (a full disk): saved again with the next batch, so
        # the retry the client makes after its 503 (a "duplicate") is answered only once it is on disk.
        self._unsaved_students: set[str] = set()
        self._unsaved_keys: list[EventRow] = []
        # Each student's answers (seq, student, skills, at) the stored lesson records may not hold yet,
        # stored beside the student's state: the records are saved every 15 s, and a power cut lost up to
        # 15 s of a window's answers (the states had them, the window sent to the cloud did not). ``_seq``
        # numbers the answers, across restarts; the records say up to which they hold (records_saved).
        self._tails: dict[str, Tail] = {}
        self._seq = 0
        # up to which answer (seq) each restored record holds them ("view", "lesson"; none: all the journal)
        self._record_seqs: dict[str, float] = {}
        # a restored lesson over by its record's last answer, which answers after the record may go on
        self._view_before: LessonWindow | None = None
        # bounded by _pending (answers), see _admit; SimpleQueue: put is one C call, no Python lock dance
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        # Students being erased, until the delete commits: a next answer of theirs starts from the prior
        # instead of reading the stored state the delete has not removed yet
        self._erasing: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self.last_error: str | None = None

    # -- lifecycle (called by the component) ---------------------------------------------------------

    def load(self, states: dict[str, StudentState]) -> None:
        """Stored states, oldest first, before ``start``; beyond ``max_students`` the oldest are left out
        of memory, not deleted: stored, they come back when their student answers (see _apply). States
        computed by another model (an update installed since they were stored) are replayed through this
        one."""
        with self._lock:
            self._states.update(states)
            excess = len(self._states) - self.settings.max_students
            for _ in range(max(excess, 0)):
                self._states.popitem(last=False)
            kept = dict(self._states)
        replayed = self._replay_stale(kept, self.engine, self._model_id)
        with self._lock:
            self._states.update(replayed)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kt-inference", daemon=True)
        self._accepting = True
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Refuse new answers, finish the queued ones, and wait for their commits; True if all done."""
        self._accepting = False
        if self._thread is None:
            return True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        self._thread = None
        return done

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- intake (any thread; never blocks) -----------------------------------------------------------

    def submit(self, answers: Sequence[Answer]) -> Future[list[Feedback]]:
        future: Future[list[Feedback]] = Future()
        self._admit(answers)
        self._queue.put(_Job(answers, future, time.perf_counter()))
        return future

    async def submit_async(self, answers: Sequence[Answer]) -> list[Feedback]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Feedback]] = loop.create_future()
        self._admit(answers)
        self._queue.put(_Job(answers, future, time.perf_counter(), loop))
        timeout = self.settings.feedback_timeout_s
        timer = loop.call_later(timeout, _expire, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def _admit(self, answers: Sequence[Answer]) -> None:
        """Count ``answers`` as pending, or raise ServiceBusy (never blocks)."""
        if not self._accepting:  # once per request, as the web route counts one refused before the service
            metrics.ANSWERS.labels(outcome="unavailable").inc()
            raise ServiceBusy("knowledge tracing is not running (starting or stopping); retry shortly")
        with self._lock:
            if self._pending + len(answers) > self.settings.queue_max:
                metrics.ANSWERS.labels(outcome="overloaded").inc(len(answers))
                raise ServiceBusy(
                    f"{self._pending} answers are waiting (limit {self.settings.queue_max}); "
                    "retry in a moment"
                )
            self._pending += len(answers)
            metrics.PENDING_REQUESTS.labels(engine=self.engine.model_name).set(self._pending)

    def swap(self, package: KTPackage, engine: Engine) -> Future[Engine]:
        """Run ``package``/``engine`` from the next micro-batch on; per-student states are replayed.

        The future holds the replaced engine (the caller closes it) or ModelError when the package is not
        compatible or the service is not running."""
        future: Future[Engine] = Future()
        try:
            check_compatible(self.package, package)
            if not self.running:
                raise ServiceBusy(NOT_RUNNING_FOR_SWAP)
            model = step_model_id(package)
        except EdgeAgentError as exc:
            future.set_exception(exc)
            return future
        self._queue.put(_Swap(package, engine, model, future))
        return future

    # -- the inference thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            if self._heartbeat is not None:
                self._heartbeat.beat()
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is _STOP:
                break
            if isinstance(first, (_Swap, _Erase)):
                self._control(first)
                continue
            jobs, control = self._gather(first)  # type: ignore[arg-type]
            self._process(jobs)
            stopping = control is _STOP
            if isinstance(control, (_Swap, _Erase)):
                self._control(control)
        self._save_unsaved()

    def _control(self, item: _Swap | _Erase) -> None:
        if isinstance(item, _Swap):
            self._swap(item)
        else:
            self._erase(item)

    def erase(self, students: Iterable[str]) -> Future[Erased]:
        """Erase the learning data of ``students`` (pseudonyms), in memory and on disk; the future resolves
        after the delete committed. Run on the inference thread between micro-batches, after the answers
        queued before it: an answer of theirs is never half applied across it (its state, taken before,
        put back after), and one queued after it starts from the prior."""
        future: Future[Erased] = Future()
        if not self.running:
            future.set_exception(ServiceBusy("knowledge tracing is not running (starting or stopping); "
                                             "nothing was erased: retry shortly"))
            return future
        self._queue.put(_Erase(set(students), future))
        return future

    @property
    def database(self) -> Path | None:
        """The database file an erase deletes from (None: the states are kept in memory only); copies of a
        damaged one moved aside beside it are not erased (web/erase.py names them)."""
        return None if self._persistence is None else self._persistence.db.path

    def forget_students(self, students: Iterable[str]) -> set[str]:
        """Drop ``students`` from memory: states, lesson entries, answers kept for the lesson records, and
        states waiting to be saved again; gives those whose state was held."""
        return set(self._take(set(students)).states)

    def _take(self, gone: set[str]) -> _Taken:
        """:meth:`forget_students`, giving what it took for :meth:`_put_back`."""
        with self._lock:
            taken = _Taken({s: st for s in gone if (st := self._states.pop(s, None)) is not None},
                           {s: tail for s in gone if (tail := self._tails.pop(s, None)) is not None},
                           self._unsaved_students & gone)
            self._unsaved_students -= gone
            for window in (self._lesson, self._view, self._view_before, *self._ended):
                if window is not None:
                    window.forget(gone)
        return taken

    def _put_back(self, taken: _Taken) -> int:
        """Under the lock, after an erase's delete failed: the states it took from memory, with their lesson
        entries kept for the records and their marks of a failed commit, so that "nothing was erased" holds
        (a review: answers a full disk had refused, waiting in memory to be stored again, were gone for
        good, and the clients' retries of them were told "duplicate"). A student who answered meanwhile
        started from the prior, and that state is saved over the stored one: it stays. The lesson windows'
        entries are not put back: the student's next answer records them again. Gives how many came back."""
        back = [s for s in taken.states if s not in self._states]
        for student in back:
            self._states[student] = taken.states[student]  # as answered now: forgotten last
            if student in taken.tails:
                self._tails[student] = taken.tails[student]
        self._unsaved_students.update(taken.unsaved.intersection(back))
        return len(back)

    def _erase(self, job: _Erase) -> None:
        """On this thread, between micro-batches. Queued under lesson_order, so the lesson records saved
        after it are taken without the students, and the delete also rewrites those saved before it. If the
        delete fails, memory gets the students back (:meth:`_put_back`)."""
        if not job.future.set_running_or_notify_cancel():
            return
        students = job.students
        with self.lesson_order:
            taken = self._take(students)
            held = set(taken.states)
            with self._lock:
                # Their answers' keys stay (a client's retry is still a duplicate), without what the answers
                # said or whose they were: the content, an unkeyed hash of item and correctness, gave both
                # back to anyone trying the package's items (a review: 667 of 667). The delete does the same
                # to the stored keys; those whose commit failed are stored again so (see _store)
                self._applied.erase(students)
                self._unsaved_keys = _without(self._unsaved_keys, students)
                if self._persistence is not None:
                    self._erasing.update(students)
            if self._persistence is None:
                job.future.set_result(_erased(held, students))
                return
            saving = self._persistence.db.write(erase_writer(sorted(students)), wipe_wal=True)

        def committed(f: Future[set[str]]) -> None:  # on the writer thread
            error = f.exception()
            with self._lock:  # put back before the erasing mark goes: a next answer must not read the disk
                back = 0 if error is None else self._put_back(taken)
                self._erasing.subtract(students)
                self._erasing += Counter()  # drops those at zero
            if error is not None:  # the stored states stay, and memory holds what it held
                log.warning("an erase of learning data failed (%s): nothing was erased; %s students' states "
                            "stay in memory", error, back)
                job.future.set_exception(error)
            else:
                job.future.set_result(_erased(held | f.result(), students))

        saving.add_done_callback(committed)

    def _unsaved(self) -> tuple[dict[str, StudentState], list[EventRow]]:
        """The current states of students, and the event keys, whose commit failed, for the caller to save
        again. They stay listed until a save of them commits (:meth:`_saved`): until then a retry must still
        find its key here (memory may have let it go, and SQLite does not have it yet)."""
        with self._lock:
            states = {s: self._states[s] for s in self._unsaved_students if s in self._states}
            return states, list(self._unsaved_keys)

    def unsaved_writer(self) -> tuple[Writer | None, Callable[[], None]]:
        """For a transaction that stores lesson records (taken under :attr:`lesson_order`): the states and
        event keys whose own commit failed, to store first in it, and what to call once it committed.
        Records holding an answer without its state and key would, after a power cut, count the client's
        retry of it (its answer got a 503) a second time. They are read when the writer runs it: a message
        the outbox holds through a full disk runs it again later, and a copy taken at the queuing wrote a
        student's older state over the newer ones committed meanwhile (a review: an answer lost)."""
        if self.unsaved_count() == 0:
            return None, lambda: None
        written: list[tuple[dict[str, StudentState], list[EventRow]]] = []

        def write(conn: sqlite3.Connection) -> None:
            states, keys = self._unsaved()
            written[:] = [(states, keys)]
            state_writer(states.items(), keys, self._clock(), tails=self._tails_of(states))(conn)

        def stored() -> None:  # on the writer thread, in commit order (or before any later batch queued)
            if written:
                with self._lock:
                    self._saved(*written[0])

        return write, stored

    def unsaved_count(self) -> int:
        """Answers applied in memory whose commit failed and that no later commit has stored yet."""
        with self._lock:
            return len(self._unsaved_keys) + len(self._unsaved_students)

    def _tails_of(self, students: Iterable[str]) -> dict[str, str | None]:
        with self._lock:
            return {s: self._tails[s].text() for s in students if s in self._tails}

    def records_saved(self, through: int) -> None:
        """The lesson records stored now hold every answer up to ``through``: the states need not keep
        them beside them from their next save on."""
        with self._lock:
            for student in list(self._tails):
                kept = self._tails[student].after(through)
                if kept:
                    self._tails[student] = kept
                else:
                    del self._tails[student]

    def _saved(self, states: dict[str, StudentState], keys: list[EventRow]) -> None:
        """Under the lock, after a commit of ``states`` and ``keys``: they are on disk. The writer commits
        in order, so no later failure can have listed one of them again in between."""
        self._unsaved_students.difference_update(states)
        if self._unsaved_keys:
            stored = {row[0] for row in keys}
            self._unsaved_keys = [k for k in self._unsaved_keys if k[0] not in stored]

    def _save_unsaved(self, timeout_s: float = 5.0) -> None:
        """On stop: one more try for answers whose commit failed (no batch follows to carry them)."""
        states, keys = self._unsaved()
        if self._persistence is None or not (states or keys):
            return
        try:
            self._persistence.save(states.items(), keys, self._clock(), tails=self._tails_of(states)).result(
                timeout_s)
            with self._lock:
                self._saved(states, keys)
        except Exception as exc:  # the store is failing or stopped: the component's lesson save tries again
            log.warning("%s answers applied in memory are not stored yet (%s); the lesson's save at this "
                        "stop tries once more", len(keys), exc)

    def _swap(self, swap: _Swap) -> None:
        """Between micro-batches, on this thread: nothing else uses the engine or package now."""
        if not swap.future.set_running_or_notify_cancel():
            return  # the caller gave up waiting and withdrew it (and closes that engine)
        try:
            check_compatible(self.package, swap.package)
        except ModelError as exc:
            swap.future.set_exception(exc)
            return
        # An LSTM state means nothing to other weights (a reseeded retrain: next-answer AUC 0.7235 with the
        # old states carried, 0.7469 with the last 100 answers replayed): each student's kept answers go
        # through the new model. If that fails the swap is refused and the updater rolls back.
        with self._lock:
            states = dict(self._states)
        prior = np.asarray(swap.package.prior_success, dtype=np.float32)
        started = time.perf_counter()
        try:
            replayed = self._replay_stale(states, swap.engine, swap.model, prior)
        except Exception as exc:
            log.warning("replaying the students' answers through the new KT model failed: %s", exc)
            swap.future.set_exception(ModelError(
                f"replaying the students' kept answers through the new model failed ({exc}); the running "
                "model stays"
            ))
            return
        old = self.engine
        with self._lock:
            self.package, self.engine = swap.package, swap.engine
            self._model_id, self._prior = swap.model, prior
            self._bank = _bank_of(swap.package)
            self._skill_text = _skill_text(swap.package)
            # Those still held: a student retention dropped meanwhile (forget_students, from the writer
            # thread) came back with its expired state (a review). Same keys: the order stays.
            self._states.update({s: st for s, st in replayed.items() if s in self._states})
            for window in (self._lesson, self._view, *self._ended):
                if window is not None:
                    _reprobe(window, replayed, self._clock())
        log.info(
            "knowledge tracing now runs model version %s; %s students' states replayed through it in %.1f s",
            swap.package.metadata.get("version", "?"), len(replayed), time.perf_counter() - started,
        )
        swap.future.set_result(old)

    def _replay_stale(
        self, states: dict[str, StudentState], engine: Engine, model: bytes, prior: np.ndarray | None = None
    ) -> dict[str, StudentState]:
        """The states of ``states`` that another model computed, recomputed by ``engine`` (whose id is
        ``model``) from each student's kept answers: batched over students (``microbatch_max`` at a time,
        within the engine's batch range), one engine call per answer position. Answers and last item are
        kept. States stored by a release that kept no answers carry over as they are (logged once)."""
        prior = self._prior if prior is None else prior
        stale = [(s, st) for s, st in states.items() if st.model not in (model, UNKNOWN_MODEL)]
        unknown = sum(1 for st in states.values() if st.model == UNKNOWN_MODEL)
        if unknown and not self._old_states_logged:
            self._old_states_logged = True
            log.warning(
                "%s student states were stored by an older release that kept no answers to replay: they "
                "carry over as they are until their student answers again", unknown,
            )
        stale.sort(key=lambda pair: -len(pair[1].history))  # those still answering are a prefix
        out: dict[str, StudentState] = {}
        hidden = self.package.hidden
        for start in range(0, len(stale), self.settings.microbatch_max):
            part = stale[start : start + self.settings.microbatch_max]
            lengths = np.array([len(st.history) for _, st in part])
            codes = np.zeros((int(lengths.max()), len(part)), np.int64)  # [position, student]
            for j, (_, st) in enumerate(part):
                codes[: lengths[j], j] = st.history
            h = np.zeros((len(part), hidden), np.float32)
            c = np.zeros((len(part), hidden), np.float32)
            probs = np.tile(prior, (len(part), 1)).astype(np.float32)
            for t, row in enumerate(codes):
                k = int(np.count_nonzero(lengths > t))
                result = engine.infer({"skill": row[:k] >> 1, "correct": row[:k] & 1, "h": h[:k], "c": c[:k]})
                if not np.all(np.isfinite(result["probs"])):
                    raise EngineError("the KT engine returned non-finite probabilities")
                h[:k], c[:k], probs[:k] = result["h_out"], result["c_out"], result["probs"]
            if self._heartbeat is not None:  # thousands of students take a second or two
                self._heartbeat.beat()
            for j, (s, st) in enumerate(part):
                out[s] = st.stepped(h[j].copy(), c[j].copy(), probs[j].copy(), model)
        return out

    def _gather(self, first: _Job) -> tuple[list[_Job], object]:
        """A micro-batch: up to ``microbatch_max`` answers, waiting up to ``microbatch_wait_ms`` for more.

        The wait applies only under load (a second job was already queued): a lone answer in a quiet
        classroom goes straight to the engine instead of paying the wait as pure latency.
        """
        jobs, count = [first], len(first.answers)
        deadline = time.perf_counter() + self.settings.microbatch_wait_ms / 1000.0
        while count < self.settings.microbatch_max:
            remaining = deadline - time.perf_counter()
            try:
                if remaining > 0 and len(jobs) > 1:
                    job = self._queue.get(timeout=remaining)
                else:
                    job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP or isinstance(job, (_Swap, _Erase)):
                return jobs, job
            assert isinstance(job, _Job)
            jobs.append(job)
            count += len(job.answers)
        return jobs, None

    def _process(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        queued = metrics.INFERENCE_LATENCY.labels(engine=self.engine.model_name, stage="queue")
        for job in jobs:
            queued.observe(started - job.arrived)
        try:
            outcomes, changed, keep = self._apply([a for job in jobs for a in job.answers])
        except Exception as exc:  # engine failures must not kill the thread; the callers get a 503
            self.last_error = f"KT inference failed: {exc}"
            log.error("knowledge-tracing inference failed: %s", exc)
            self._finish(jobs, error=ServiceBusy(f"inference failed: {exc}"))
            return
        self.last_error = None
        with self.lesson_order:
            self._store(jobs, outcomes, changed, keep())

    def _store(
        self,
        jobs: list[_Job],
        outcomes: list[Feedback],
        changed: dict[str, StudentState],
        forgotten: list[str],
    ) -> None:
        """Queue the batch's states and event keys for the disk; the callers are answered once committed."""
        results, n = [], 0
        for job in jobs:
            results.append(outcomes[n : n + len(job.answers)])
            n += len(job.answers)
        # every key added so far is in this save or an earlier one (one writer, in order); added changes
        # only on this thread
        added = self._applied.added
        if self._persistence is None:
            with self._lock:
                self._applied.stored(added)  # memory is all there is: only time lets a key go
            self._finish(jobs, results)
            return
        now = self._clock()
        keys: list[EventRow] = []
        # A duplicate's first copy may still wait for its commit (a slow disk made the client give up and
        # retry): the retry is answered after that commit, through the same single writer, never before.
        repeats: set[str] = set()
        for job, res in zip(jobs, results, strict=False):
            for a, f in zip(job.answers, res, strict=False):
                if f["status"] == "applied":
                    keys.append((a.event_key, now, a.content, a.student))
                elif f["status"] == "duplicate":
                    repeats.add(a.event_key)
        unsaved, retry_keys = self._unsaved()
        new_keys = keys
        states, keys = {**unsaved, **changed}, retry_keys + keys
        if not states and not keys and not repeats:
            self._finish(jobs, results)
            return
        stored = metrics.INFERENCE_LATENCY.labels(engine=self.engine.model_name, stage="store")
        handed = time.perf_counter()

        def committed(f: Future[None]) -> None:
            stored.observe(time.perf_counter() - handed)
            error = f.exception()
            with self._lock:
                if error is not None:  # those saved again (still listed) stay listed
                    self._unsaved_students.update(changed)
                    # an erase queued since: stored again without what they said or whose (_erase)
                    self._unsaved_keys.extend(_without(new_keys, self._erasing))
                else:
                    self._saved(states, keys)
                self._applied.stored(added)  # on disk, or listed in _unsaved_keys for the next save
                if error is None and repeats and any(row[0] in repeats for row in self._unsaved_keys):
                    # its first copy's commit, queued before this one, failed
                    error = ServiceBusy("the first copy of this answer is not stored yet; retry", 60)
            self._finish(jobs, results, error)

        saving = self._persistence.save(states.items(), keys, now, forgotten, tails=self._tails_of(states))
        saving.add_done_callback(committed)

    def _finish(
        self,
        jobs: list[_Job],
        results: list[list[Feedback]] | None = None,
        error: BaseException | None = None,
    ) -> None:
        now = time.perf_counter()
        with self._lock:
            self._pending -= sum(len(job.answers) for job in jobs)
            metrics.PENDING_REQUESTS.labels(engine=self.engine.model_name).set(self._pending)
        if error is not None or results is None:
            if error is None:
                error = ServiceBusy("no result")
            elif isinstance(error, StoreLockedError):  # held for seconds, usually: not a minute's wait
                error = ServiceBusy(f"answers could not be stored yet: {error}", retry_after_s=5)
            elif not isinstance(error, ServiceBusy):  # e.g. StoreFullError: the API answers 503 with it
                error = ServiceBusy(f"answers could not be stored: {error}", retry_after_s=60)
        outcomes: Counter[str] = Counter()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for n, job in enumerate(jobs):
            result = None if error is not None or results is None else results[n]
            if result is not None:
                outcomes.update(feedback["status"] for feedback in result)
                # one per answer, as its help says: per request, a base station's 30-answer POST counted
                # as one and the slow-feedback alert's traffic gate never opened for it (a review)
                for _answer in result:
                    metrics.ANSWER_FEEDBACK_LATENCY.observe(now - job.arrived)
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result, error))
            else:
                _settle([(job.future, result, error)])
        if error is not None:  # inference or the store failed: the callers get a 503 and retry
            outcomes["failed"] += sum(len(job.answers) for job in jobs)
        for outcome, count in outcomes.items():
            metrics.ANSWERS.labels(outcome=outcome).inc(count)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while shutting down: nobody waits
                loop.call_soon_threadsafe(_settle, settled)

    def _apply(
        self, answers: list[Answer]
    ) -> tuple[list[Feedback], dict[str, StudentState], Callable[[], list[str]]]:
        """Run the steps; returns feedback, the changed states and what keeps them in memory with the
        lesson's answers (returning the students forgotten to stay within ``max_students``)."""
        steps: OrderedDict[str, deque[tuple[int, int]]] = OrderedDict()
        statuses: list[str] = []
        # Per answer, (student, index of its last step among the student's steps in this batch): its
        # feedback is the state after it, not after the student's later answers in the same micro-batch.
        ends: list[tuple[str, int] | None] = []
        seen: dict[str, Answer] = {}  # applied in this batch: key -> the answer
        unseen = [a.event_key for a in answers if a.event_key not in self._applied]
        stored: dict[str, str | None] = {}
        with self._lock:  # applied, but their commit failed: memory may have let them go (a long full disk)
            unsaved = {row[0]: row[2] for row in self._unsaved_keys}
        if self._persistence is not None and unseen:
            with waiting_on_disk(self._heartbeat):  # a read of a WAL database waits on a stalled disk
                stored = self._persistence.applied_among(unseen)
        for a in answers:
            key = a.event_key
            if key in seen:
                before: str | None = seen[key].content
            elif key in self._applied:
                before = self._applied.content_of(key)
            elif key in stored:
                before = stored[key]
            elif key in unsaved:
                before = unsaved[key]
            else:
                seen[key] = a
                statuses.append("applied")
                queue = steps.setdefault(a.student, deque())
                queue.extend((k, a.correct) for k in a.skills)
                ends.append((a.student, len(queue) - 1))
                continue
            # None: applied by an older release, which kept no content; a retry is the likelier case
            statuses.append("duplicate" if before is None or before == a.content else "conflict")
            ends.append(None)
        kept = {s: [history_code(k, c) for k, c in q] for s, q in steps.items()}
        work, trail = self._run_rounds(steps, self._start_states(list(steps)))
        # The feedback first: if it fails, nothing of the batch is kept, in memory or on disk (a package's
        # item once made it raise after the states were kept: applied in memory, never stored, and each
        # retry a 'duplicate' that failed again). A repeat gets its student's state after the batch.
        with self._lock:  # probs arrays are replaced, never written in place: valid outside the lock
            held = {a.student: self._states.get(a.student) for a, e in zip(answers, ends, strict=True)
                    if e is None and a.student not in work}
        rows, practised, recent = self._after_each(answers, ends, work=work, held=held, trail=trail,
                                                   kept=kept)
        feedback = self._feedback(answers, statuses, np.stack(rows), practised, recent)

        def keep() -> list[str]:
            now = self._clock()
            with self._lock:
                for a, status, skills in zip(answers, statuses, practised, strict=False):
                    if status == "applied":
                        state = work[a.student]
                        state.answered(a.item_id)
                        row = self._journal_row(a, now)
                        self._record_lesson(row, state.probs, skills or (), self._monotonic())
                for student, state in work.items():
                    state.keep(kept[student], self._model_id)
                    self._states[student] = state
                    self._states.move_to_end(student)
                forgotten = self._forget_oldest()
                for key, a in seen.items():
                    self._applied.add(key, now, a.content, a.student)
                self._applied.expire(now)
            return forgotten

        return feedback, work, keep

    def _start_states(self, students: list[str]) -> dict[str, StudentState]:
        with self._lock:
            start = {s: self._states[s] for s in students if s in self._states}
            missing = [s for s in students if s not in start]
            on_disk = [s for s in missing if s not in self._erasing]
        if on_disk and self._persistence is not None:
            # Not in memory: new, or left on disk by a lower kt.max_students at start (answered since
            # then, the stored state goes on instead of starting again from the prior).
            with waiting_on_disk(self._heartbeat):
                stored = self._persistence.states_of(on_disk, self.package.hidden, len(self.package.skills))
            # stored before a model update: replayed through this model
            start |= stored | self._replay_stale(stored, self.engine, self._model_id)
        for s in missing:
            if s not in start:
                start[s] = StudentState.initial(self.package.hidden, self._prior, self._model_id)
        return start

    def _forget_oldest(self) -> list[str]:
        """Under the lock: drop the states of the students not seen longest, beyond ``max_students``.

        A pseudonym per session from a client, or a flood of invented ids, would otherwise grow memory and
        the database without bound (about 1.7 KB and 1.1 KB a student, with its kept answers). A forgotten
        student who answers again starts from the model's prior."""
        excess = len(self._states) - self.settings.max_students
        if excess <= 0:
            return []
        forgotten = [self._states.popitem(last=False)[0] for _ in range(excess)]
        self._unsaved_students.difference_update(forgotten)  # their stored states go with this batch
        for student in forgotten:
            self._tails.pop(student, None)
        metrics.KT_STUDENTS_FORGOTTEN.inc(excess)
        if time.monotonic() - self._forget_logged >= 60.0:
            self._forget_logged = time.monotonic()
            log.warning(
                "kt.max_students (%s) reached: forgot the state of %s students not seen the longest; "
                "raise kt.max_students if this board really teaches that many students",
                self.settings.max_students, excess,
            )
        return forgotten

    def _after_each(
        self,
        answers: Sequence[Answer],
        ends: Sequence[tuple[str, int] | None],
        *,
        work: dict[str, StudentState],
        held: dict[str, StudentState | None],
        trail: dict[str, list[np.ndarray]],
        kept: dict[str, list[int]],
    ) -> tuple[list[np.ndarray], list[set[int] | None], list[tuple[str, ...]]]:
        """Per answer, its student's probabilities after it (a repeat: after the batch), the skills the
        student has answered (the kept answers' and this batch's) and the items not to recommend (the
        latest RECENT_ITEMS answered: up to this one, a repeat's after the batch)."""
        rows: list[np.ndarray] = []
        practised: list[set[int] | None] = []
        recent: list[tuple[str, ...]] = []
        in_batch: dict[str, tuple[str, ...]] = {}
        for a, end in zip(answers, ends, strict=True):
            state = work.get(a.student) or held[a.student]
            rows.append(trail[end[0]][end[1]] if end is not None else self._prior if state is None
                        else state.probs)
            skills = {code >> 1 for code in state.history} if state is not None else set()
            batch = kept.get(a.student, [])  # one code a step: up to this answer's last (a repeat: all)
            skills.update(code >> 1 for code in (batch if end is None else batch[: end[1] + 1]))
            practised.append(skills or None)  # none known (a repeat of a student forgotten): all
            stored = state.recent_items if state is not None else ()
            if end is None:
                recent.append(stored)  # a repeat's: filled in below, after the batch
                continue
            before = in_batch.get(a.student) or stored
            recent.append((*before[1 - RECENT_ITEMS:], a.item_id))
            in_batch[a.student] = recent[-1]
        # A repeat's: the student's latest as they stand after the batch. Its own item added again pushed
        # out the third latest, which a retry then recommended (a review: the answer before last's item)
        for n, (a, end) in enumerate(zip(answers, ends, strict=True)):
            if end is None:
                recent[n] = in_batch.get(a.student) or recent[n] or (a.item_id,)
        return rows, practised, recent

    def _run_rounds(
        self, steps: OrderedDict[str, deque[tuple[int, int]]], start: dict[str, StudentState]
    ) -> tuple[dict[str, StudentState], dict[str, list[np.ndarray]]]:
        """The students' states after all their steps, and each student's probabilities after each step."""
        # copies: the live states change only after every round succeeded
        out = {s: st.stepped(st.h, st.c, st.probs) for s, st in start.items()}
        trail: dict[str, list[np.ndarray]] = {s: [] for s in steps}
        while True:
            round_ = [(s, q.popleft()) for s, q in steps.items() if q]
            if not round_:
                return out, trail
            # microbatch_max students a call at most: the engine's profile ends at 1024, and a micro-batch
            # can exceed microbatch_max by its last request (a review: 1,100 students in one call, 503s)
            for first in range(0, len(round_), self.settings.microbatch_max):
                part = round_[first : first + self.settings.microbatch_max]
                students = [s for s, _ in part]
                feeds = {
                    "skill": np.array([k for _, (k, _) in part], dtype=np.int64),
                    "correct": np.array([c for _, (_, c) in part], dtype=np.int64),
                    "h": np.stack([out[s].h for s in students]),
                    "c": np.stack([out[s].c for s in students]),
                }
                # The engine counts its own calls and infer latency (GuardedEngine, one place for all models).
                result = self.engine.infer(feeds)
                probs, h, c = result["probs"], result["h_out"], result["c_out"]
                if not np.all(np.isfinite(probs)):
                    raise EngineError("the KT engine returned non-finite probabilities")
                for i, s in enumerate(students):
                    st = out[s]
                    out[s] = st.stepped(h[i].copy(), c[i].copy(), probs[i].astype(np.float32))
                    trail[s].append(out[s].probs)

    def _journal_row(self, answer: Answer, now: float) -> JournalRow:
        """Under the lock: the next answer's number and lesson entry, kept to be stored beside the state."""
        self._seq += 1
        row = JournalRow(self._seq, answer.student, tuple(answer.skills), now)
        if self._persistence is not None:
            self._tails.setdefault(answer.student, Tail()).append(row)
        return row

    def _record_lesson(self, row: JournalRow, probs: np.ndarray, known: Iterable[int], mono: float | None, *,
                       lesson: bool = True, view: bool = True) -> None:
        """Under the lock: one answer into the synced window and the teacher's lesson (``lesson``,
        ``view``: only those, in a replay). ``known``: the skills the student has answered, this answer's
        included; ``mono``: None in a replay, where the wall clock decides and no figure is taken."""
        now = row.at
        windows = []
        if lesson:
            windows.append(self._lesson_for(now, mono))
        if view:
            if self._view is None or self._view.idle(now, self.settings.lesson_gap_s, mono):
                self._view = LessonWindow(started=now, started_mono=mono)
            windows.append(self._view)
        skills = list(row.skills)
        for window in windows:
            # Bounded as the states are: a flood of invented ids must not grow a lesson without end (and
            # the teacher's lesson lasts as long as answers keep coming).
            if row.student in window.probs or len(window.probs) < self.settings.max_students:
                window.record(row.student, skills, probs, now, mono, known=known, publish=mono is not None)
            window.seq = row.seq

    def _lesson_for(self, now: float, mono: float | None) -> LessonWindow:
        if self._lesson is not None and self._lesson.due(now, self.settings.lesson_window_s, mono):
            # not into a window the clock was stepped after (round 2: one answer in the second before its
            # close made it "end" an hour before it started, or hold 3 h)
            self._ended.append(self._lesson)
            self._lesson = None
        if self._lesson is None:
            self._lesson = LessonWindow(started=now, started_mono=mono)
        return self._lesson

    # -- feedback and queries ------------------------------------------------------------------------

    def _skill_entry(self, k: int, probs: Sequence[float]) -> dict[str, Any]:
        skill_id, name_zh, name_en = self._skill_text[k]
        return {"skill_id": skill_id, "name_zh": name_zh, "name_en": name_en, "mastery": round(probs[k], 4)}

    def _feedback(
        self, answers: Sequence[Answer], statuses: Sequence[str], probs: np.ndarray,
        practised: Sequence[set[int] | None],
        recent: Sequence[tuple[str, ...]],
    ) -> list[Feedback]:
        """Feedback for each answer from its student's current per-skill success (rows of ``probs``). The
        weakest skills and practice are of the skills the student has answered (``practised``), as in the
        class view: of all skills, a grade-7 student's first answers sent them to grade-9 quadratics, whose
        figures the model has only guessed from other skills (a review)."""
        items, skill_index = self.package.item_index, self.package.skill_index
        settings = self.settings
        out = []
        for a, status, row, among, answered in zip(answers, statuses, probs.tolist(), practised, recent,
                                                   strict=True):
            # None: a model update swapped in after the answer was checked has dropped the item. The
            # answer is applied and stored all the same: this runs after the states changed.
            item = items.get(a.item_id)
            weak = weakest_skills(row, settings.weak_skills, among)
            recs = self._bank.recommend(
                row,
                self._bank.practice_skills(row, weak, among, answered),
                target=settings.target_success,
                count=settings.recommendations,
                exclude=answered,
            )
            p = row[a.skills[0]]
            out.append(
                {
                    "client_event_id": a.client_event_id,
                    "status": status,
                    "student": a.student,
                    "item_id": a.item_id,
                    "p_next_correct": round(item_success(p, 0.0), 4),
                    "p_same_item": None if item is None else round(
                        item_success(row[skill_index[item.skill_id]], item.difficulty), 4
                    ),
                    "mastery": [self._skill_entry(k, row) for k in a.skills],
                    "weakest": [self._skill_entry(k, row) for k in weak],
                    "recommended": [r.as_dict() for r in recs],
                }
            )
            if status == "conflict":
                out[-1]["error"] = CONFLICT_MESSAGE
        return out

    def student_mastery(self, pseudonym: str) -> dict[str, Any] | None:
        with self._lock:
            state = self._states.get(pseudonym)
        if state is None:
            return None
        probs = state.probs.tolist()
        return {
            "student": pseudonym,
            "answers": state.answers,
            "skills": [self._skill_entry(k, probs) for k in range(len(self.package.skills))],
        }

    def class_summary(self) -> dict[str, Any]:
        """The lesson so far, as the teacher sees it: it is not cut by the synced windows."""
        now = self._clock()
        # Summarised outside the lock: the inference thread must not wait on the class view.
        with self._lock:
            if self._view is not None and self._view.idle(now, self.settings.lesson_gap_s, self._monotonic()):
                self._end_view()  # the lesson is over: the board waits for the next one's first answer
            window = None if self._view is None else self._view.copy()
            package, bank, last = self.package, self._bank, self._last_lesson
        summary = summarize(window, package, self.settings, now, window_s=math.inf, bank=bank)
        return summary | {"last_lesson": last} if window is None and last is not None else summary

    def _end_view(self) -> None:
        """Under the lock: the teacher's lesson has ended."""
        assert self._view is not None
        self._last_lesson, self._view = _ended(self._view), None

    def lesson_view(self, *, clean: bool = False) -> dict[str, Any]:
        """The teacher's lesson, to keep across a restart (without one, only up to which answer that holds:
        later ones are in the journal); ``clean``: at a stop, with no answer to come."""
        return self.lesson_view_copy(clean=clean)()

    def lesson_view_copy(self, *, clean: bool = False) -> Callable[[], dict[str, Any]]:
        """:meth:`lesson_view` as it is now, made when called: only a copy is taken under the lock
        (:meth:`LessonWindow.record_copy`), which the inference thread must not wait behind."""
        with self._lock:
            if self._view is not None:
                return self._view.record_copy(clean=clean)
            # the lesson that ended, for the page to say so after a restart too (a review: it said "no
            # answers yet" again)
            last = {} if self._last_lesson is None else {"last_lesson": self._last_lesson}
            record = {"seq": self._seq} | last
        return lambda: record

    def restore_lesson_view(self, data: dict[str, Any]) -> bool:
        """Before ``start``: take back the lesson a stop saved, unless it has ended since (lesson_gap_s
        without an answer) or the record is damaged. :meth:`replay_journal` adds the answers after it."""
        with self._lock:
            self._record_seqs["view"] = _record_seq(data)
            if "started" not in data:
                self._last_lesson = _last_lesson_in(data)
                return False
            view = self._saved_window(data, "the saved teacher's lesson could not be read; the view starts "
                                            "empty")
            if view is None:
                return False
            if view.idle(self._clock(), self.settings.lesson_gap_s):
                # its answers after the record (replay_journal) may be recent: the lesson goes on then
                # (a review: a restart 16 s after the last answer, gap 20 s, showed 6 answers of 30)
                self._view_before = view
                self._last_lesson = _ended(view)
                return False
            self._view = view
            return True

    def _saved_window(self, data: dict[str, Any], unreadable: str) -> LessonWindow | None:
        """Under the lock: a lesson window saved by :meth:`LessonWindow.to_json`, on the students' states
        now; None (``unreadable`` logged) when the record is damaged."""
        probs = {s: st.probs for s, st in self._states.items()}
        known = {s: frozenset(code >> 1 for code in st.history) for s, st in self._states.items()}
        try:
            return LessonWindow.from_json(data, probs, self.settings.min_group_size, known)
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s", unreadable)
            return None

    def open_window(self) -> dict[str, Any]:
        """The oldest synced window not yet sent, to keep across a power cut (the answers after it are in
        the journal; without one, only up to which answer that holds)."""
        return self.open_window_copy()()

    def open_window_copy(self) -> Callable[[], dict[str, Any]]:
        """:meth:`open_window` as it is now, made when called (see :meth:`lesson_view_copy`)."""
        with self._lock:
            oldest = self._ended[0] if self._ended else self._lesson
            if oldest is not None:
                return oldest.record_copy()
            record = {"seq": self._seq}
        return lambda: record

    def restore_open_window(self, data: dict[str, Any]) -> bool:
        """Before ``start``: take back the synced window a power cut left unsent; it is sent when due, at
        once if that was before now."""
        with self._lock:
            self._record_seqs["lesson"] = _record_seq(data)
            if "started" not in data:
                return False
            window = self._saved_window(data, "the unsent lesson window could not be read; its answers reach "
                                              "no window")
            if window is None:
                return False
            self._lesson = window
            return True

    def replay_journal(self, rows: Sequence[JournalRow]) -> int:
        """Before ``start``, after the restores: the answers stored after the lesson records were saved (a
        power cut), into the windows whose records lack them, as they came; gives how many went into
        either. Answers go on numbering after the last."""
        replayed, into_view = 0, False
        with self._lock:
            if self._view is None:
                self._view, self._view_before = self._view_before, None
            view_from = self._record_seqs.get("view", 0.0)
            # no window record (a release before the journal clears it when the window is sent): from where
            # the view's holds them, not from the journal's first entry, which may have been sent before
            lesson_from = self._record_seqs.get("lesson", view_from)
            for row in sorted(rows):
                self._seq = max(self._seq, row.seq)
                state = self._states.get(row.student)
                view, lesson = row.seq > view_from, row.seq > lesson_from
                if state is None or not (view or lesson):
                    continue
                known = frozenset(code >> 1 for code in state.history).union(row.skills)
                self._record_lesson(row, state.probs, known, None, lesson=lesson, view=view)
                replayed += 1
                into_view = into_view or view
            for seq in self._record_seqs.values():
                if math.isfinite(seq):
                    self._seq = max(self._seq, int(seq))
            # a window of a release before the journal holds what it holds: none of the journal's answers
            # goes into it later either (a later save says it holds them all)
            for name, window in (("view", self._view), ("lesson", self._lesson)):
                if window is not None and self._record_seqs.get(name) == math.inf:
                    window.seq = self._seq
            if self._view is not None and self._view.idle(self._clock(), self.settings.lesson_gap_s):
                self._end_view()  # over since: the next answer starts the next lesson
            if into_view and self._view is not None:  # figures shown before the cut may hold them
                self._view.published.count_afresh()
        return replayed

    def close_lesson_if_due(self, *, now_anyway: bool = False) -> dict[str, Any] | None:
        """The synced window's summary once it has ended (or at once with ``now_anyway``: at stop); the
        next answer opens a new window."""
        closed = self.close_window_if_due(now_anyway=now_anyway)
        return None if closed is None else closed[0]

    def close_window_if_due(self, *, now_anyway: bool = False) -> tuple[dict[str, Any], int, bool] | None:
        """:meth:`close_lesson_if_due`, with the seq of the window's last answer and whether it was cut:
        closed by ``now_anyway`` before its end (its ``window_end`` is now). An ended window, or one due
        that the publish loop has not closed yet, is whole however it is closed (a review: those drained
        at a stop went out as partial, with a whole window's end)."""
        now, cut = self._clock(), False
        with self._lock:
            if self._ended:
                window: LessonWindow | None = self._ended.pop(0)
            else:
                window = self._lesson
                due = window is not None and window.due(now, self.settings.lesson_window_s, self._monotonic())
                if window is None or not (now_anyway or due):
                    return None
                self._lesson, cut = None, not due
            package, bank = self.package, self._bank
        assert window is not None
        return summarize(window, package, self.settings, now, bank=bank), window.seq, cut

    def now(self) -> float:
        return self._clock()

    def student_count(self) -> int:
        with self._lock:
            return len(self._states)


def _without(keys: list[EventRow], students: Container[str]) -> list[EventRow]:
    """``keys`` with the content and student of those of ``students`` set to None."""
    return [(key, at, None, None) if student in students else (key, at, content, student)
            for key, at, content, student in keys]


def _erased(had: set[str], asked: set[str]) -> Erased:
    # counted and logged by the caller, per student (web/erase.py): a student may have several pseudonyms
    return Erased(frozenset(had & asked), frozenset(asked))


def _ended(view: LessonWindow) -> dict[str, float]:
    return {"started": view.started, "ended": view.last, "answers": view.answers}


def _last_lesson_in(data: dict[str, Any]) -> dict[str, float] | None:
    """The ended lesson a record holds; None when it holds none or a damaged one."""
    last = data.get("last_lesson")
    keys = ("started", "ended", "answers")
    if not isinstance(last, dict) or not all(isinstance(last.get(k), (int, float)) for k in keys):
        return None
    return {k: last[k] for k in keys}


def _record_seq(data: dict[str, Any]) -> float:
    """Up to which answer (seq) a lesson record holds them; infinite for one saved by a release before
    the journal (which of the journal's answers it holds is not known: none are added to it)."""
    seq = data.get("seq")
    return float(seq) if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else math.inf


def _reprobe(window: LessonWindow, replayed: dict[str, StudentState], now: float) -> None:
    """Under the service's lock, after a model swap: the window's students' probabilities from the new
    model; the figures the teacher's view shows are taken anew over all of them (all change at once). Over
    only those published before, replayed with the answers given since, the next single answer completed
    the group and moved the figures by its student alone (a review: a new student's 30 skills to 0.0006)."""
    window.probs.update((s, replayed[s].probs) for s in window.probs if s in replayed)
    published = window.published
    if published.group is not None:
        published.probs, published.since, published.at = dict(window.probs), set(), now
        published.frozen = None
        published.retake_skills(window.probs, window.known)


def _skill_text(package: KTPackage) -> list[tuple[str, str, str]]:
    return [(skill.id, skill.name_zh, skill.name_en) for skill in package.skills]
