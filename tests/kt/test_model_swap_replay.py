"""A KT model update recomputes the students' states with the new weights (real ONNX models, real SQLite).

An LSTM state means something only to the weights that computed it. Before, a swap fed the old model's
(h, c) to the new one, and a state stored by the old model was carried on when loaded later.
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import KTSettings
from edge_agent.errors import ModelError
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.kt.answers import Answer
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.persistence import StatePersistence
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService
from edge_agent.kt.state import HISTORY_CAP, UNKNOWN_MODEL
from edge_agent.store.db import Database

onnx = pytest.importorskip("onnx")


def _retrained(package: KTPackage, out: Path, *, seed: int = 1, nan: bool = False) -> KTPackage:
    """The package with other weights of the same shapes (what a retrain with another seed gives)."""
    from onnx import numpy_helper

    shutil.copytree(package.path, out)
    model = onnx.load(str(package.step_model))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        w = w + rng.normal(0.0, 0.3, w.shape).astype(w.dtype)
        if nan and init.name == "out.bias":
            w = np.full_like(w, np.nan)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(out / "kt_step.onnx"))
    return load_package(out)


def _answer(
    package: KTPackage, pseudo: Pseudonymizer, student: str, n: int, item: int, correct: int
) -> Answer:
    it = package.items[item]
    return Answer(pseudo(student), pseudo(f"event\0{student}\0{n}"), f"e{n}", it.id,
                  (package.skill_index[it.skill_id],), correct, time.time())


def _answers(package: KTPackage, pseudo: Pseudonymizer, student: str, count: int, seed: int) -> list[Answer]:
    rng = np.random.default_rng(seed)
    items, correct = rng.integers(0, len(package.items), count), rng.integers(0, 2, count)
    return [_answer(package, pseudo, student, n, int(i), int(c))
            for n, (i, c) in enumerate(zip(items, correct, strict=True))]


def _replayed(package: KTPackage, answers: list[Answer]) -> np.ndarray:
    """The probabilities after ``answers`` through ``package``'s step model alone, from the empty state."""
    engine = OnnxRuntimeEngine(package.step_model, model_name="reference")
    h = c = np.zeros((1, package.hidden), np.float32)
    probs = np.asarray(package.prior_success, np.float32)
    for a in answers:
        out = engine.infer({"skill": np.array(a.skills, np.int64), "correct": np.array([a.correct], np.int64),
                            "h": h, "c": c})
        probs, h, c = out["probs"][0], out["h_out"], out["c_out"]
    engine.close()
    return probs


def _probs(svc: KTService, student: str) -> np.ndarray:
    return svc._states[student].probs


def _submit(svc: KTService, answers: list[Answer]) -> None:
    for start in range(0, len(answers), 50):
        svc.submit(answers[start : start + 50]).result(10)


@pytest.fixture()
def retrained(package: KTPackage, tmp_path: Path) -> KTPackage:
    return _retrained(package, tmp_path / "kt-retrained")


def test_after_a_model_swap_a_students_mastery_is_their_answers_replayed_through_the_new_model(
    package, engine, kt_settings, pseudonymize, retrained, db: Database
) -> None:
    svc = KTService(package, engine, kt_settings, pseudonymize, persistence=StatePersistence(db))
    svc.start()
    students = {"short": _answers(package, pseudonymize, "short", 7, 1),
                "long": _answers(package, pseudonymize, "long", HISTORY_CAP + 30, 2)}
    for answers in students.values():
        _submit(svc, answers)
    new_engine = OnnxRuntimeEngine(retrained.step_model, model_name="kt_step")
    try:
        old_probs = _probs(svc, pseudonymize("short")).copy()
        svc.swap(retrained, new_engine).result(10)
        for name, answers in students.items():
            kept = answers[-HISTORY_CAP:]  # the long one: its last HISTORY_CAP answers
            expected = _replayed(retrained, kept)
            assert np.max(np.abs(_probs(svc, pseudonymize(name)) - expected)) <= 1e-5
            mastery = svc.student_mastery(pseudonymize(name))
            assert mastery is not None and mastery["answers"] == len(answers)
            assert [m["mastery"] for m in mastery["skills"]] == [round(float(p), 4) for p in expected]
            assert svc._states[pseudonymize(name)].last_item == answers[-1].item_id
        assert np.max(np.abs(old_probs - _probs(svc, pseudonymize("short")))) > 1e-3  # the models differ
        # the next answer goes on from the replayed state
        more = _answer(package, pseudonymize, "short", 100, 3, 1)
        (fb,) = svc.submit([more]).result(10)
        expected = _replayed(retrained, [*students["short"], more])
        skill = more.skills[0]
        assert fb["mastery"][0]["mastery"] == round(float(expected[skill]), 4)
        assert np.max(np.abs(_probs(svc, pseudonymize("short")) - expected)) <= 1e-5
    finally:
        svc.stop()
        svc.engine.close()


def test_a_state_stored_by_the_old_model_is_replayed_when_loaded(
    package, engine, pseudonymize, retrained, db: Database
) -> None:
    store = StatePersistence(db)
    svc = KTService(package, engine, KTSettings(microbatch_wait_ms=0.0), pseudonymize, persistence=store)
    svc.start()
    first = _answers(package, pseudonymize, "first", 12, 3)  # answered first: left on disk below
    _submit(svc, first)
    _submit(svc, [_answer(package, pseudonymize, f"s{n}", 0, n % 5, 1) for n in range(99)])
    later = _answers(package, pseudonymize, "later", 9, 4)
    _submit(svc, later)
    svc.stop()
    assert store.stored_count() == 101
    # the board restarts with the update installed, and a limit that leaves "first" on disk
    new_engine = OnnxRuntimeEngine(retrained.step_model, model_name="kt_step")
    settings = KTSettings(max_students=100, microbatch_wait_ms=0.0)
    restarted = KTService(retrained, new_engine, settings, pseudonymize, persistence=store)
    try:
        restarted.load(store.load_states(retrained.hidden, len(retrained.skills), 100))
        assert restarted.student_mastery(pseudonymize("first")) is None
        expected = _replayed(retrained, later)
        assert np.max(np.abs(_probs(restarted, pseudonymize("later")) - expected)) <= 1e-5
        assert restarted.student_mastery(pseudonymize("later"))["answers"] == 9  # type: ignore[index]
        restarted.start()
        more = _answer(package, pseudonymize, "first", 100, 2, 0)
        restarted.submit([more]).result(10)
        expected = _replayed(retrained, [*first, more])
        assert np.max(np.abs(_probs(restarted, pseudonymize("first")) - expected)) <= 1e-5
        assert restarted.student_mastery(pseudonymize("first"))["answers"] == 13  # type: ignore[index]
    finally:
        restarted.stop()
        new_engine.close()


def _kts1_blob(h: np.ndarray, c: np.ndarray, probs: np.ndarray, item: str) -> bytes:
    """A state as the releases before answers were kept wrote it."""
    text = item.encode()
    return b"".join([struct.pack("<4sII", b"KTS1", h.size, probs.size), h.astype("<f4").tobytes(),
                     c.astype("<f4").tobytes(), probs.astype("<f4").tobytes(), struct.pack("<I", len(text)),
                     text])


def test_a_state_stored_before_answers_were_kept_still_loads_and_carries_over(
    package, engine, kt_settings, pseudonymize, retrained, db: Database
) -> None:
    rng = np.random.default_rng(0)
    h, c = rng.normal(0, 0.3, (2, package.hidden)).astype(np.float32)
    probs = rng.uniform(0.2, 0.8, len(package.skills)).astype(np.float32)
    student = pseudonymize("old")
    blob = _kts1_blob(h, c, probs, package.items[4].id)
    insert = "INSERT INTO kt_student_state(student, state, answers, updated_at) VALUES (?, ?, 6, 0)"
    db.write(lambda conn: conn.execute(insert, (student, blob))).result(5)
    store = StatePersistence(db)
    state = store.load_states(package.hidden, len(package.skills))[student]
    assert state.model == UNKNOWN_MODEL and len(state.history) == 0 and state.answers == 6
    assert np.array_equal(state.h, h) and np.array_equal(state.c, c) and np.array_equal(state.probs, probs)
    svc = KTService(package, engine, kt_settings, pseudonymize, persistence=store)
    svc.load({student: state})
    svc.start()
    new_engine = OnnxRuntimeEngine(retrained.step_model, model_name="kt_step")
    try:
        svc.swap(retrained, new_engine).result(10)
        assert np.array_equal(_probs(svc, student), probs)  # nothing to replay: carried as before
        assert svc.student_mastery(student)["answers"] == 6  # type: ignore[index]
        svc.submit([_answer(package, pseudonymize, "old", 1, 0, 1)]).result(10)
        stored = store.states_of([student], package.hidden, len(package.skills))[student]
        # Its 6 earlier answers are not kept: one answer must not make it replayable from that one alone
        # (round 2: a mastery of 0.93 from 200 answers fell to 0.53, under the prior, at the next update)
        assert stored.answers == 7 and len(stored.history) == 1 and stored.model == UNKNOWN_MODEL
        after_one = _probs(svc, student).copy()
        svc.swap(package, OnnxRuntimeEngine(package.step_model, model_name="kt_step")).result(10).close()
        assert np.array_equal(_probs(svc, student), after_one)  # carried again, not rebuilt from 1 answer
        for n in range(2, HISTORY_CAP + 2):  # once its kept answers are a full window, it is replayable
            svc.submit([_answer(package, pseudonymize, "old", n, n % 7, n % 2)]).result(10)
        stored = store.states_of([student], package.hidden, len(package.skills))[student]
        assert len(stored.history) == HISTORY_CAP and stored.model not in (UNKNOWN_MODEL, bytes(32))
    finally:
        svc.stop()
        svc.engine.close()


def test_a_swap_whose_replay_fails_is_refused_and_the_running_model_stays(
    package, engine, kt_settings, pseudonymize, tmp_path: Path
) -> None:
    broken = _retrained(package, tmp_path / "kt-nan", nan=True)  # gives NaN for every answer
    svc = KTService(package, engine, kt_settings, pseudonymize)
    svc.start()
    answers = _answers(package, pseudonymize, "s1", 5, 5)
    _submit(svc, answers)
    before = _probs(svc, pseudonymize("s1"))
    new_engine = OnnxRuntimeEngine(broken.step_model, model_name="kt_step")
    try:
        with pytest.raises(ModelError, match="the running model stays"):
            svc.swap(broken, new_engine).result(10)
        assert svc.engine is engine and svc.package is package
        assert _probs(svc, pseudonymize("s1")) is before
        (fb,) = svc.submit([_answer(package, pseudonymize, "s1", 9, 1, 1)]).result(10)
        assert fb["status"] == "applied"
        assert svc.student_mastery(pseudonymize("s1"))["answers"] == 6  # type: ignore[index]
    finally:
        svc.stop()
        new_engine.close()


def test_after_a_model_swap_one_students_answer_does_not_move_the_class_figures(
    package: KTPackage, engine, pseudonymize: Pseudonymizer, retrained: KTPackage
) -> None:
    # The swap replayed only the students published before, with the answers 4 of them gave since, and
    # kept those 4 as "answered since": the next single answer completed the group of 5 and moved the
    # figures by that student alone (a review: a new student's 30 skills to 0.0006).
    svc = KTService(package, engine, KTSettings(min_group_size=5, microbatch_wait_ms=0.0), pseudonymize)
    svc.start()
    try:
        for n, student in enumerate("ABCDEF"):
            _submit(svc, [_answer(package, pseudonymize, student, 0, n * 7, n % 2)])
        assert svc.class_summary()["figures_students"] == 6
        for n, student in enumerate("ABCD"):
            _submit(svc, [_answer(package, pseudonymize, student, 1, 40 + n, 1)])
        svc.swap(retrained, OnnxRuntimeEngine(retrained.step_model, model_name="kt_step")).result(30)
        swapped = svc.class_summary()
        assert swapped["figures_students"] == 6
        _submit(svc, [_answer(package, pseudonymize, "X", 0, 100, 1)])
        after = svc.class_summary()
        assert [s["mastery_mean"] for s in after["skills"]] == [s["mastery_mean"] for s in swapped["skills"]]
    finally:
        svc.stop()


class _SlowEngine:
    """The new model's engine at 20 ms a call: a replay of many students takes a moment, as on a board."""

    def __init__(self, engine: OnnxRuntimeEngine) -> None:
        self.engine, self.inputs, self.outputs = engine, engine.inputs, engine.outputs
        self.model_name, self.backend, self.precision = engine.model_name, engine.backend, engine.precision

    def infer(self, feeds):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return self.engine.infer(feeds)

    def close(self) -> None:
        self.engine.close()


def test_a_student_retention_drops_while_a_swap_replays_stays_dropped(tmp_path: Path) -> None:
    # A review: the swap wrote every replayed state back, and a student retention had dropped meanwhile
    # (forget_students, from the store's writer thread) came back with the expired state, to be saved again
    package = load_package()
    new = _retrained(package, tmp_path / "kt-new")
    pseudo = Pseudonymizer(b"r" * 32)
    svc = KTService(package, OnnxRuntimeEngine(package.step_model, model_name="kt_step"),
                    KTSettings(microbatch_wait_ms=1.0), pseudo)
    svc.start()
    try:
        for k in range(10):
            svc.submit(_answers(package, pseudo, f"s{k}", 30, seed=k)).result(10)
        swapping = svc.swap(new, _SlowEngine(OnnxRuntimeEngine(new.step_model, model_name="kt_step")))
        time.sleep(0.05)  # the replay is under way
        assert svc.forget_students([pseudo("s9")]) == {pseudo("s9")}
        swapping.result(30)
        assert svc.student_mastery(pseudo("s9")) is None
        assert svc.student_mastery(pseudo("s0")) is not None
    finally:
        svc.stop()
