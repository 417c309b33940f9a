"""Per-student states and applied event keys in SQLite, through the store's single writer.

Tables (store/schema.py): ``kt_student_state(student, state, answers, updated_at, kept)`` keyed by pseudonym,
and ``kt_applied_events(event_key, applied_at, content, student)`` for idempotency across restarts. Beside
each state, the student's answers the lesson records saved every 15 s may not hold yet (``lesson_tail``).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from edge_agent.kt.state import HISTORY_CAP, RECENT_ITEMS, StateOfAnotherShape, StudentState
from edge_agent.store.db import DAMAGED_ROW, Database, meta_object, set_meta

Writer = Callable[[sqlite3.Connection], None]  # a part of one transaction, run on the writer thread
# An applied answer's row of kt_applied_events: (event key, applied at, content, student's pseudonym)
EventRow = tuple[str, float, str | None, str | None]

log = logging.getLogger(__name__)

EVENT_KEEP_S = 7 * 86400.0  # a client retries within minutes; a week covers a board that was off
# The newest keys are kept whatever their times say: a board that applied answers on a clock days behind
# (no RTC battery) and was then set right by NTP has them stamped over a week ago, and the prune would let
# go of keys a client may still retry. At 50 students answering all day, a few days of answers.
EVENTS_ALWAYS_KEPT = 20_000
# Keys deleted per write task by prune_events: a few milliseconds on a Jetson's SD card
PRUNE_PIECE = 2_000
KEYS_PER_QUERY = 500  # under SQLite's bound-parameter limit on every version JetPack ships


def _rows_in(conn: sqlite3.Connection, select: str, values: Sequence[str]) -> list[Any]:
    """The rows of ``select`` (ending in the column to match) IN ``values``, queried in chunks."""
    rows: list[Any] = []
    for i in range(0, len(values), KEYS_PER_QUERY):
        chunk = list(values[i : i + KEYS_PER_QUERY])
        rows.extend(conn.execute(f"{select} IN ({','.join('?' * len(chunk))})", chunk))
    return rows


KEPT_FINGERPRINTS = 4


class JournalRow(NamedTuple):
    """One applied answer, as the lesson windows record it: its number (seq, in order of application),
    the student's pseudonym, the skills (indices in the package) and when it was applied."""

    seq: int
    student: str
    skills: tuple[int, ...]
    at: float


@dataclass
class SkillMove:
    """What :meth:`StatePersistence.align_skills` did: ``changed`` when the package's skills differ from
    those the states were stored under."""

    changed: bool
    moved: int = 0
    started_afresh: int = 0
    answers_set_aside: int = 0


def kept_by_skill_id(state: StudentState, skills: Sequence[str], set_aside: str | None) -> list[list[Any]]:
    """The student's kept answers as [skill id, 0/1], oldest first, under the skills ``skills`` they were
    kept under: those set aside at an earlier move (every answer kept then) followed by those given since,
    the latest HISTORY_CAP of them."""
    kept = [[skills[code >> 1], code & 1] for code in state.history]
    try:
        aside = json.loads(set_aside) if set_aside else {}
        earlier, since = aside["kept"], state.answers - int(aside["answers"])
        valid = all(isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and a[1] in (0, 1)
                    for a in earlier)
    except (*DAMAGED_ROW, KeyError):  # int(1e999): a round-2 review; nesting past the parser's depth too
        valid = False
    if valid and since >= 0:
        kept = earlier + (kept[max(0, len(kept) - since):] if since else [])
    return kept[-HISTORY_CAP:]


def _warn_skipped(skipped: Counter[str], what: str, then: str) -> None:
    """One line for the states a read left out, by cause (never naming a student)."""
    if skipped:
        log.warning(
            "%s stored student states %s: %s made for a KT model of another hidden size or skill count "
            "(the model package changed?), %s damaged (cut short or garbled: a power cut or a failing SD "
            "card?); %s", sum(skipped.values()), what, skipped["another shape"], skipped["damaged"], then,
        )


class Tail:
    """A student's answers the stored lesson records may not hold yet (kept beside the state, up to 15 s
    of them), with each one's JSON made once: every save of the state writes them all again. With
    json.dumps of the whole tail at each save, the answer API under 32 clients (300 students, about 1,900
    answers/s) cost the server 495-507 µs of CPU per answer, 449-468 with this (2026-12-04)."""

    __slots__ = ("_seqs", "_texts")

    def __init__(self) -> None:
        self._seqs: list[int] = []  # rising: the service numbers answers in the order it applies them
        self._texts: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._seqs)

    def append(self, row: JournalRow) -> None:
        self._seqs.append(row.seq)
        self._texts.append(json.dumps([row.seq, row.skills, round(row.at, 3)], separators=(",", ":")))

    def after(self, seq: int) -> Tail:
        """The rows after answer ``seq`` (those the records saved through it do not hold)."""
        kept, cut = Tail(), bisect.bisect_right(self._seqs, seq)
        kept._seqs, kept._texts = self._seqs[cut:], self._texts[cut:]
        return kept

    def text(self) -> str | None:
        """As stored in kt_student_state.lesson_tail (load_journal reads it); None when empty."""
        return f"[{','.join(self._texts)}]" if self._texts else None


def _recent_items(text: str | None, state: StudentState) -> tuple[str, ...]:
    """The items of the student's latest answers as stored beside the state; the last item alone where
    they were written for another answer count (an older release updated the state since) or do not read
    (before 2026-12-04 only that one was kept: one of the two before it was recommended once again)."""
    fallback = state.recent_items
    try:
        answers, items = json.loads(text) if text else (None, None)
    except DAMAGED_ROW:
        return fallback
    if (answers != state.answers or not isinstance(items, list) or not 0 < len(items) <= RECENT_ITEMS
            or not all(isinstance(i, str) for i in items) or items[-1] != state.last_item):
        return fallback
    return tuple(items)


# A lesson record, or a function making it when the record is written (KTService.lesson_view_copy)
LessonRecord = dict[str, Any] | Callable[[], dict[str, Any]]


def _record_text(record: Any, depth: int = 3) -> str:
    """``json.dumps(record, separators=(",", ":"))``, the same text, made in pieces down to ``depth``
    levels of objects (the published figures: one list per student): one call over a lesson of 10,000
    students held the GIL, so the event loop too, for 81 ms on the writer thread."""
    if depth == 0 or not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        return json.dumps(record, separators=(",", ":"))
    items = (json.dumps(k) + ":" + _record_text(v, depth - 1) for k, v in record.items())
    return "{" + ",".join(items) + "}"


def _meta_json_writer(key: str, value: dict[str, Any] | None) -> Callable[[sqlite3.Connection], None]:
    text = "" if value is None else json.dumps(value, separators=(",", ":"))
    return lambda conn: set_meta(conn, key, text)


def state_writer(
    states: Iterable[tuple[str, StudentState]],
    events: Iterable[EventRow],
    now: float,
    forget: Sequence[str] = (),
    *,
    tails: Mapping[str, str | None] | None = None,
) -> Writer:
    """StatePersistence.save's transaction, for another one to hold too (the rows are taken now)."""
    tails = tails or {}
    state_rows = [(s, st.to_bytes(), st.answers, now, st.kept_bytes(),
                   json.dumps([st.answers, st.recent_items], ensure_ascii=False),
                   tails.get(s)) for s, st in states]
    event_rows = list(events)
    forget_rows = [(s,) for s in forget]

    def run(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO kt_student_state(student, state, answers, updated_at, kept, recent, "
            "lesson_tail) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(student) DO UPDATE SET state=excluded.state, answers=excluded.answers, "
            "updated_at=excluded.updated_at, kept=excluded.kept, recent=excluded.recent, "
            "lesson_tail=excluded.lesson_tail",
            state_rows,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO kt_applied_events(event_key, applied_at, content, student) "
            "VALUES (?, ?, ?, ?)",
            event_rows,
        )
        conn.executemany("DELETE FROM kt_student_state WHERE student = ?", forget_rows)  # after: wins

    return run


def forget_open_window(through: int, *, first: Writer | None = None) -> Writer:
    """For the transaction that queues the synced window with answers up to ``through`` for the cloud
    (Outbox.enqueue's ``also``): its record goes, unless the one stored is of the window after it.
    ``first`` runs before it (KTService.unsaved_writer)."""

    def forget(conn: sqlite3.Connection) -> None:
        if first is not None:
            first(conn)
        stored = (meta_object(conn, "kt_lesson_window") or {}).get("seq")
        if not (isinstance(stored, int) and stored > through):
            set_meta(conn, "kt_lesson_window", json.dumps({"seq": through}))

    return forget


class StatePersistence:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load_states(self, hidden: int, skills: int, limit: int | None = None) -> dict[str, StudentState]:
        """The stored states that fit the model, oldest first (the service forgets from the front); with
        ``limit``, only the newest ``limit`` (the rest stay on disk: :meth:`states_of` finds them).
        Damaged or foreign-shaped states are skipped and counted."""
        rows = self.db.read(
            lambda conn: conn.execute(
                "SELECT student, state, answers, kept, recent FROM kt_student_state ORDER BY updated_at DESC "
                "LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        )
        skipped: Counter[str] = Counter()
        states = self._decode(reversed(rows), hidden, skills, skipped)
        _warn_skipped(skipped, "ignored at start", "those students start fresh")
        return states

    def align_skills(self, hidden: int, skill_ids: Sequence[str], model: bytes) -> SkillMove:
        """Before the states are loaded: kept answers name skills by index, so a package whose skills
        differ from those the states were stored under but fit them (hidden size and count) replayed every
        student's answers onto other skills (a review: 10 right answers on skill 17 read as skill 900's).
        The skill ids of each shape are kept (meta ``kt_skill_ids``); when they change, every stored state
        of that shape gets its kept answers moved by skill id for the load to replay. Answers on skills the
        package lacks are set aside by skill id (column ``set_aside``) with the student's answer count, and
        come back, with the answers given since, under a package that has those skills again: a package
        tried and reverted lost them for good. A package of another size (meta ``kt_last_shape`` names
        the last) has the states of the last size moved the same way. A state that ``model`` (the running
        step model's id) computed is left: an older release that keeps no meta wrote it under this
        package, after a rollback. A state with no kept answers is deleted: its figures are of other
        skills and nothing can be replayed."""
        shape, wanted = f"{hidden}x{len(skill_ids)}", list(skill_ids)

        def run(conn: sqlite3.Connection) -> SkillMove:
            row = conn.execute("SELECT value FROM meta WHERE key = 'kt_skill_ids'").fetchone()
            try:
                known = json.loads(row[0]) if row else {}
            except DAMAGED_ROW:
                known = None
            if row and not isinstance(known, dict):
                log.warning("meta kt_skill_ids in the store is damaged: the skills the student states were "
                            "stored under are not known, and they are taken as this package's")
                known = {}
            assert isinstance(known, dict)
            before = known.get(shape)
            change = SkillMove(isinstance(before, list) and before != wanted)
            last = conn.execute("SELECT value FROM meta WHERE key = 'kt_last_shape'").fetchone()
            # A package of another size (hidden size or skill count): the states of the last one did not
            # fit, were ignored, and a student answering overwrote theirs (a round-2 review: a trial of 29
            # skills for 30, then back, lost every answer of those who answered in the trial). Their kept
            # answers are moved by skill id too, onto a state of this size for the load to replay.
            resized = last is not None and last[0] != shape and isinstance(known.get(last[0]), list)
            if resized or (change.changed and isinstance(before, list)):
                index = {skill: k for k, skill in enumerate(wanted)}
                rows = conn.execute(
                    "SELECT student, state, answers, kept, set_aside FROM kt_student_state").fetchall()
                asides = {student: aside for student, _, _, _, aside in rows}
                moving: list[tuple[str, StudentState, list[str]]] = []
                if change.changed and isinstance(before, list):
                    states = self._decode((r[:4] for r in rows), hidden, len(wanted))
                    moving += [(student, state, before) for student, state in states.items()]
                if resized:
                    old_hidden, old_count = (int(n) for n in last[0].split("x"))
                    states = self._decode((r[:4] for r in rows), old_hidden, old_count)
                    moving += [(student, state, known[last[0]]) for student, state in states.items()]
                    change.changed = change.changed or bool(states)
                for student, stored, skills in moving:
                    if stored.model == model:
                        continue
                    kept = kept_by_skill_id(stored, skills, asides[student])
                    if not kept:
                        conn.execute("DELETE FROM kt_student_state WHERE student = ?", (student,))
                        change.started_afresh += 1
                        continue
                    fits = stored.h.size == hidden and stored.probs.size == len(wanted)
                    state = stored if fits else dataclasses.replace(  # another size: replayed from nothing
                        StudentState.initial(hidden, np.full(len(wanted), 0.5)),
                        answers=stored.answers, last_item=stored.last_item)
                    on_new = state.moved([2 * index[s] + right for s, right in kept if s in index])
                    gone = len(kept) - len(on_new.history)
                    aside = json.dumps({"answers": state.answers, "kept": kept}) if gone else None
                    conn.execute(
                        "UPDATE kt_student_state SET state = ?, kept = ?, set_aside = ? WHERE student = ?",
                        (on_new.to_bytes(), on_new.kept_bytes(), aside, student),
                    )
                    change.moved += 1
                    change.answers_set_aside += gone
            set_meta(conn, "kt_last_shape", shape)
            known[shape] = wanted
            set_meta(conn, "kt_skill_ids", json.dumps(known, ensure_ascii=False))
            return change

        change = self.db.write(run).result()
        if change.changed:
            log.warning(
                "the KT package's skills differ from those the student states were stored under: %s "
                "students' kept answers moved to the new skills by id and replayed (%s answers on skills "
                "this package does not have set aside, for a package that has them); %s states that kept "
                "no answers start afresh",
                change.moved, change.answers_set_aside, change.started_afresh,
            )
        return change

    def states_of(self, students: Sequence[str], hidden: int, skills: int) -> dict[str, StudentState]:
        """The stored states of ``students`` (those the service does not hold: left on disk by a lower
        ``kt.max_students`` at start). Those that do not read are left out and logged: their students
        start again from the model's prior, and their next save replaces them."""

        select = "SELECT student, state, answers, kept, recent FROM kt_student_state WHERE student"
        skipped: Counter[str] = Counter()
        rows = self.db.read(lambda conn: _rows_in(conn, select, students))
        states = self._decode(rows, hidden, skills, skipped)
        _warn_skipped(skipped, "of answering students not used",
                      "those students start again from the model's prior")
        return states

    def secret_fingerprints(self) -> list[str]:
        """The fingerprints of the pseudonym secrets the stored students were made under, newest first
        (meta pseudonym_fingerprints; pseudonym_fingerprint holds the newest alone, as it always did)."""

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute("SELECT key, value FROM meta WHERE key IN "
                                "('pseudonym_fingerprint', 'pseudonym_fingerprints')").fetchall()

        values = dict(self.db.read(read))
        # the single one first: a release that keeps only the newest may have written it since
        newest = [f for f in values.get("pseudonym_fingerprint", "").split(",") if f]
        history = [f for f in values.get("pseudonym_fingerprints", "").split(",") if f]
        return list(dict.fromkeys([*newest, *history]))

    def record_secret(self, fingerprint: str, known: list[str]) -> None:
        """``fingerprint`` first, then the others known (a secret put back is told from a new one)."""
        kept = ",".join([fingerprint, *(f for f in known if f != fingerprint)][:KEPT_FINGERPRINTS])

        def write(conn: sqlite3.Connection) -> None:
            set_meta(conn, "pseudonym_fingerprint", fingerprint)
            set_meta(conn, "pseudonym_fingerprints", kept)

        self.db.write(write).result()

    def stored_count(self) -> int:
        row = self.db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM kt_student_state").fetchone())
        return int(row[0])

    @staticmethod
    def _decode(
        rows: Iterable[Any], hidden: int, skills: int, skipped: Counter[str] | None = None
    ) -> dict[str, StudentState]:
        """The states of ``rows`` that read under this shape; those that do not are counted in ``skipped``
        by cause ("another shape", "damaged"): a state cut short by a power cut was logged as one of another
        model ("model package changed?"), which points the school the wrong way (a review)."""
        states: dict[str, StudentState] = {}
        for student, blob, answers, kept, *recent in rows:
            try:
                state = StudentState.from_bytes(bytes(blob), int(answers), hidden, skills,
                                                None if kept is None else bytes(kept))
            except StateOfAnotherShape:
                if skipped is not None:
                    skipped["another shape"] += 1
                continue
            except DAMAGED_ROW:
                if skipped is not None:
                    skipped["damaged"] += 1
                continue
            state.recent_items = _recent_items(recent[0] if recent else None, state)
            states[student] = state
        return states

    def applied_among(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Those of ``keys`` already applied (within the retention window, pruned hourly), with what
        each said (None where an older release applied it)."""

        select = "SELECT event_key, content FROM kt_applied_events WHERE event_key"
        return dict(self.db.read(lambda conn: _rows_in(conn, select, keys)))

    def save(
        self,
        states: Iterable[tuple[str, StudentState]],
        events: Iterable[EventRow],
        now: float,
        forget: Sequence[str] = (),
        *,
        tails: Mapping[str, str | None] | None = None,
    ) -> Future[None]:
        """Upsert ``states`` with each student's answers the lesson records may not hold yet (``tails``:
        their ``Tail.text()``), record ``events`` (key, applied at, content, student) and delete the states
        of the students in ``forget``, in one transaction."""
        return self.db.write(state_writer(states, events, now, forget, tails=tails))

    def save_lesson_view(self, view: LessonRecord | None, *, first: Writer | None = None) -> Future[None]:
        """The teacher's lesson (meta ``kt_lesson_view``), so a restart mid-lesson keeps it: at stop, and
        every SAVE_LESSON_EVERY_S while it runs (a power cut has no stop). ``first`` runs in the same
        transaction (KTService.unsaved_writer); a record given as a function is made on the writer thread
        (as in :meth:`save_lesson_records`)."""

        def run(conn: sqlite3.Connection) -> None:
            text = "" if view is None else _record_text(view() if callable(view) else view)
            if first is not None:
                first(conn)
            set_meta(conn, "kt_lesson_view", text)

        return self.db.write(run)

    def load_lesson_view(self) -> dict[str, Any] | None:
        return self._meta_json("kt_lesson_view")

    def save_open_window(self, window: dict[str, Any] | None) -> Future[None]:
        """The synced window not yet sent (meta ``kt_lesson_window``): after a power cut its answers reached
        no window the cloud got (a review: 5 bursts of 50 answers). Cleared in the transaction that queues
        it (:func:`forget_open_window`)."""
        return self.db.write(_meta_json_writer("kt_lesson_window", window))

    def load_open_window(self) -> dict[str, Any] | None:
        return self._meta_json("kt_lesson_window")

    def save_lesson_records(
        self, view: LessonRecord, window: LessonRecord, *, first: Writer | None = None
    ) -> Future[int | None]:
        """The teacher's lesson and the synced window not yet sent (``seq``: up to which answer each holds);
        resolves with the answer both records stored now hold (None: not known), whose lesson entries the
        states need keep no longer. ``first`` runs in the same transaction (KTService.unsaved_writer).
        A record given as a function (KTService.lesson_view_copy) is made and turned into JSON on the
        writer thread: at 10,000 students that took 0.2 s, which held the event loop (a review)."""

        def run(conn: sqlite3.Connection) -> int | None:
            view_now, window_now = (r() if callable(r) else r for r in (view, window))
            view_text, window_text = _record_text(view_now), _record_text(window_now)
            if first is not None:
                first(conn)
            set_meta(conn, "kt_lesson_view", view_text)
            stored = (meta_object(conn, "kt_lesson_window") or {}).get("seq")
            # a window sent since this one was taken left only its number there: never an older copy
            if not (isinstance(stored, int) and stored > window_now.get("seq", -1)):
                set_meta(conn, "kt_lesson_window", window_text)
                stored = window_now.get("seq")
            seqs = [view_now.get("seq"), stored]
            held = [seq for seq in seqs if isinstance(seq, int)]
            return min(held) if len(held) == len(seqs) else None

        return self.db.write(run)

    def load_journal(self) -> list[JournalRow]:
        """Every student's answers stored beside their state that the lesson records may not hold, in order
        (damaged entries left out, and counted in a warning; those the records hold are told by their
        seq)."""
        rows = self.db.read(lambda conn: conn.execute(
            "SELECT student, lesson_tail FROM kt_student_state WHERE lesson_tail IS NOT NULL").fetchall())
        out: list[JournalRow] = []
        damaged = 0
        for student, text in rows:
            try:  # the entries before a damaged one are kept
                out.extend(JournalRow(int(seq), str(student), tuple(int(k) for k in skills), float(at))
                           for seq, skills, at in json.loads(text))
            except DAMAGED_ROW:
                damaged += 1
        if damaged:
            log.warning("the latest lesson answers stored beside %s students' states are damaged (cut short "
                        "or garbled: a power cut or a failing SD card?) and left out: the restored lesson "
                        "may lack some of their answers", damaged)
        return sorted(out)

    def clear_journal(self) -> Future[None]:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE kt_student_state SET lesson_tail = NULL WHERE lesson_tail IS NOT NULL")

        return self.db.write(run)

    def _meta_json(self, key: str) -> dict[str, Any] | None:
        return self.db.read(lambda conn: meta_object(conn, key))

    def prune_events(self, before: float, keep_newest: int = EVENTS_ALWAYS_KEPT) -> Future[int]:
        """Forget the keys applied before ``before``, except the newest ``keep_newest`` (by insertion:
        rowids only grow, as the newest row is never deleted); resolves with how many were forgotten.

        In pieces of PRUNE_PIECE rows, each its own write task queued when the one before has committed:
        one DELETE held the writer, and the answers queued behind it, 0.83 s at 300,000 keys and 1.03 s
        at 1.62 million (20 answers/s for a week), so answers now run between the pieces."""
        done: Future[int] = Future()
        deleted = [0]

        def piece(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM kt_applied_events WHERE rowid IN (SELECT rowid FROM kt_applied_events "
                "WHERE applied_at < ? AND rowid <= (SELECT MAX(rowid) FROM kt_applied_events) - ? LIMIT ?)",
                (before, keep_newest, PRUNE_PIECE),
            ).rowcount

        def next_piece(previous: Future[int]) -> None:  # on the writer thread, after the commit
            error = previous.exception()
            if error is not None:
                done.set_exception(error)
                return
            deleted[0] += previous.result()
            if previous.result() < PRUNE_PIECE:
                done.set_result(deleted[0])
            else:  # queued behind whatever came meanwhile
                self.db.write(piece).add_done_callback(next_piece)

        self.db.write(piece).add_done_callback(next_piece)
        return done
