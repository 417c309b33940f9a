"""Removing students' learning data: on a parent's request (PIPL art. 47, GDPR art. 17) and by retention.

What goes: the student's row of ``kt_student_state`` (state, kept answers, recent items, lesson_tail),
their entries in the stored lesson records (meta ``kt_lesson_view``, ``kt_lesson_window``), and from their
answers' rows of ``kt_applied_events`` what each answer said (``content``, an unkeyed hash of item and
correctness: trying the package's items gave both back) and whose it was (``student``); the service drops
the same from memory (KTService.erase). What stays: class aggregates (no student in them), and the
idempotency keys, keyed hashes of (student id, client event id), so a client's retry is still answered as
a duplicate; they expire after EVENT_KEEP_S (7 days). Rows stored by a release before the student column
have nothing to find them by and keep their content until they expire, within 7 days of the upgrade.

The decisions are pure functions (:func:`parse_student_ids`, :func:`retention_cutoff`); the transactions
are writers for the store's single writer thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from edge_agent.errors import InputRejected
from edge_agent.kt.answers import student_id, student_id_key
from edge_agent.kt.classroom import record_without
from edge_agent.kt.persistence import KEYS_PER_QUERY
from edge_agent.store.db import Database, meta_object, set_meta

MAX_ERASE_IDS = 1000  # a whole school's leavers at once; a larger list is a mistake (and one long write)
DAY_S = 86400.0
# A stored state is deleted by retention only if the newest state stored before this run is at least this
# much younger than the cutoff: see retention_cutoff
RETENTION_MARGIN_S = 30 * DAY_S
RETIRE_PIECE = 500  # states deleted per write task by retention (a few ms on an SD card, as PRUNE_PIECE)
_RECORDS = ("kt_lesson_view", "kt_lesson_window")


def parse_student_ids(body: Any, limit: int = MAX_ERASE_IDS) -> list[str]:
    """``{"student_ids": [...]}`` as the school's ids, normalised as the answer API takes them (" stu-4 " is
    "stu-4"), each once; raises InputRejected naming the first problem."""
    if not isinstance(body, dict) or "student_ids" not in body:
        raise InputRejected('send {"student_ids": ["...", ...]}', field="student_ids")
    ids = body["student_ids"]
    if not isinstance(ids, list) or not ids:
        raise InputRejected("'student_ids' must be a non-empty list of student ids", field="student_ids")
    if len(ids) > limit:
        raise InputRejected(f"{len(ids)} student ids in one request; the limit is {limit}: send them in "
                            "parts", field="student_ids")
    return list(dict.fromkeys(student_id({"student_id": i}, f"student_ids[{n}]") for n, i in enumerate(ids)))


def erase_requests(ids: Sequence[str], limit: int = MAX_ERASE_IDS) -> list[list[str]]:
    """``ids`` (a long list from the command line and a file) cut into requests of at most ``limit``, with
    every form of one student's id in the same request and each form once. Cut where they fell, a student
    listed as "stu-2" and again as "ｓｔｕ－２" (or twice) 1,000 lines apart was counted in both replies:
    "2 erased" for one child, or "erased" and "had none" for the same child."""
    forms: dict[str, list[str]] = {}
    for sent in ids:
        listed = forms.setdefault(student_id_key(sent), [])
        if sent not in listed:
            listed.append(sent)
    requests: list[list[str]] = [[]]
    for listed in forms.values():
        if requests[-1] and len(requests[-1]) + len(listed) > limit:
            requests.append([])
        requests[-1].extend(listed)
    return requests


def id_forms(body: dict[str, Any], ids: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``ids`` (the keys :func:`parse_student_ids` gave) with the forms it was sent in, where those
    differ: as sent, and with only its spaces dropped. A release before 2026-12-05 stored
    "２０２３０１０１" (or, before 2026-12-03, " stu-4") under its own pseudonym, which the key's cannot reach
    (a review: the reply said "no data" and the state stayed). Kept per student: one whose data is under
    two of its forms is one student erased, not two (a review: the reply counted one that never answered
    as erased)."""
    forms = {i: [i] for i in ids}
    for sent in body["student_ids"]:
        if not isinstance(sent, (str, int)) or isinstance(sent, bool):
            continue
        text = str(sent)
        mine = forms.get(student_id_key(text.strip()))  # the key parse_student_ids gave it
        for form in (text, text.strip()):
            if mine is not None and form and form not in mine:
                mine.append(form)
    return forms


def retention_cutoff(now: float, max_age_s: float, run_started: float, newest_before_run: float | None
                     ) -> float | None:
    """States updated before the returned time (and before ``run_started``) may be deleted; None: none may.

    A board without an RTC battery can boot with its clock years ahead; measured by that clock alone every
    stored state looks expired, and retention would wipe the class. So: (1) a state updated in this run is
    never deleted (its student answered since the daemon started, whatever the clock says); (2) nothing is
    deleted unless the newest state stored before this run is at least RETENTION_MARGIN_S younger than the
    cutoff: a class still in use has recent states, so a clock that makes even those look expired is taken
    as wrong. A board really unused that long keeps its old states until a run in which students answered
    has ended (their states then count as stored before the next run)."""
    if max_age_s <= 0 or newest_before_run is None:
        return None
    cutoff = now - max_age_s
    return cutoff if newest_before_run >= cutoff + RETENTION_MARGIN_S else None


def unlink_answers(conn: sqlite3.Connection, students: Sequence[str]) -> None:
    """Their answers' idempotency keys stay (a retry within minutes is still a duplicate), without what each
    answer said or whose it was; keys stored before the student column was added have none to find them by,
    and expire within EVENT_KEEP_S of the upgrade."""
    for i in range(0, len(students), KEYS_PER_QUERY):
        chunk = students[i : i + KEYS_PER_QUERY]
        conn.execute("UPDATE kt_applied_events SET content = NULL, student = NULL "
                     f"WHERE student IN ({','.join('?' * len(chunk))})", chunk)


def erase_writer(students: Sequence[str]) -> Callable[[sqlite3.Connection], set[str]]:
    """One transaction: the students' stored states and their entries in the lesson records go; gives
    those that had a stored state."""
    gone = set(students)

    def run(conn: sqlite3.Connection) -> set[str]:
        had = set()
        for student in gone:
            if conn.execute("DELETE FROM kt_student_state WHERE student = ?", (student,)).rowcount:
                had.add(student)
        unlink_answers(conn, sorted(gone))
        for key in _RECORDS:
            record = meta_object(conn, key)
            if record is not None:
                set_meta(conn, key, json.dumps(record_without(record, gone), separators=(",", ":")))
        return had

    return run


def newest_before(db: Database, run_started: float) -> float | None:
    """The newest update time of the states stored before this run (None: no such state)."""
    row = db.read(lambda conn: conn.execute(
        "SELECT MAX(updated_at) FROM kt_student_state WHERE updated_at < ?", (run_started,)).fetchone())
    return None if row[0] is None else float(row[0])


def retire_states(db: Database, cutoff: float, run_started: float,
                  forget: Callable[[list[str]], object]) -> Future[int]:
    """Delete the states updated before ``cutoff`` and before ``run_started``, RETIRE_PIECE per write task
    (answers run between the pieces, as with prune_events); ``forget`` gets each piece's students after its
    commit, to drop them from memory. Resolves with how many went."""
    done: Future[int] = Future()
    deleted = [0]
    before = min(cutoff, run_started)

    def piece(conn: sqlite3.Connection) -> list[str]:
        students = [row[0] for row in conn.execute(
            "SELECT student FROM kt_student_state WHERE updated_at < ? LIMIT ?", (before, RETIRE_PIECE))]
        conn.executemany("DELETE FROM kt_student_state WHERE student = ?", [(s,) for s in students])
        # prune_events keeps the newest 20,000 keys however old, so on a small class a retired student's
        # answers stayed for ever, each saying which item they answered and whether right (a review)
        unlink_answers(conn, students)
        return students

    def next_piece(previous: Future[list[str]]) -> None:  # on the writer thread, after the commit
        error = previous.exception()
        if error is not None:
            done.set_exception(error)
            return
        students = previous.result()
        forget(students)
        deleted[0] += len(students)
        if len(students) < RETIRE_PIECE:
            done.set_result(deleted[0])
        else:
            db.write(piece).add_done_callback(next_piece)

    db.write(piece).add_done_callback(next_piece)
    return done
