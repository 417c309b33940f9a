"""Build model packages with the trainer (requires torch): from a school's answer log, or the default one.

The default package is trained on simulated students of :mod:`edge_agent.kt.curriculum`; its metadata
records the simulator's parameters and the sha256 of the generated training data so anyone can rebuild
and check it, plus the held-out AUC beside the oracle's.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.kt.curriculum import ITEM_KINDS, SKILLS
from edge_agent.kt.data import Sequences, split_students
from edge_agent.kt.metrics import auc
from edge_agent.kt.package import write_package_files
from edge_agent.kt.school_bank import SchoolBank, package_entries
from edge_agent.kt.simulator import make_curriculum, simulate, to_dkt_csv
from edge_agent.kt.train import TrainOptions, evaluate, export_onnx, prior_success, train_model

log = logging.getLogger(__name__)

PACKAGE_VERSION = "2026.12.3"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _check_held_out(test: Sequences, known: set[str], given: bool) -> None:
    """Held-out answers on skills the training data lacks are left out of the scores: said, with how many,
    and refused when none is left (the bare "need a held-out student" sent IT looking at the wrong file)."""
    answers = sum(len(seq) for seq in test.skills)
    unknown = [s for seq in test.skills for s in seq if s not in known]
    if not unknown:
        return
    example = ", ".join(repr(s) for s in sorted(set(unknown))[:3])
    what = (
        f"{len(unknown)} of {answers} held-out answers are on skills the training data does not have "
        f"(e.g. {example})"
    )
    if len(unknown) == answers:
        fix = ("the test file must use the training file's skill ids" if given else
               "the held-out students practised skills no other student did; give more students or --test")
        raise ValueError(f"{what}: {fix}")
    log.warning("%s; they are left out of the AUC and accuracy", what)


def build_from_sequences(
    train: Sequences, test: Sequences | None, out_dir: Path, opts: TrainOptions, test_share: float = 0.2,
    *, bank: SchoolBank | None = None,
) -> dict[str, Any]:
    """Train on a school's log; without ``test``, hold out ``test_share`` of the students. ``bank``: the
    school's skill names and exercises (school_bank.py); without it skills are named by their ids."""
    import hashlib

    given = test is not None
    if test is None:
        # one student went all to the held-out side, and the error blamed a test file never given (a review)
        usable = sum(len(seq) >= 2 for seq in train.skills)
        if usable < 2:
            raise ValueError(f"the training data holds {usable} student(s) with 2 or more answers: at least "
                             "2 are needed, one to train on and one held out (or give --test)")
        tr_idx, te_idx = split_students(len(train), test_share, opts.seed)
        test = Sequences([train.skills[i] for i in te_idx], [train.correct[i] for i in te_idx])
        train = Sequences([train.skills[i] for i in tr_idx], [train.correct[i] for i in tr_idx], train.names)
    vocab = train.vocabulary()
    tr_s, tr_c = train.encode(vocab)
    te_s, te_c = test.encode(vocab)
    _check_held_out(test, set(vocab), given)
    if not tr_s or not te_s:
        raise ValueError("need at least one training and one held-out student with 2+ answers")
    model = train_model(tr_s, tr_c, len(vocab), opts)
    scores = evaluate(model, te_s, te_c)
    export_onnx(model, out_dir)
    digest = hashlib.sha256(to_dkt_csv(tr_s, tr_c).encode()).hexdigest()
    names = [train.name(s) for s in vocab]  # as the school's file spells them: its clicker sends those
    skills, items = package_entries(bank or SchoolBank(), names)
    meta = {
        # two packages of one day told apart by their weights (data, options or seed: round 2)
        "version": f"{_now()[:10]}.{hashlib.sha256((out_dir / 'kt_step.onnx').read_bytes()).hexdigest()[:8]}",
        "created": _now(),
        "hidden": opts.hidden,
        "n_skills": len(vocab),
        "training_data_sha256": digest,
        "auc": scores["auc"],
        "accuracy": scores["accuracy"],
        "oracle_auc": None,
        "students_train": len(tr_s),
        "students_test": len(te_s),
        "train_options": asdict(opts),
        "prior_success": prior_success(model),
    }
    write_package_files(out_dir, meta, skills, items)
    return {k: meta[k] for k in ("auc", "accuracy", "students_train", "students_test")} | {
        "out": str(out_dir)
    }


def build_default(
    out_dir: Path,
    *,
    students: int = 8000,
    test_students: int = 1500,
    length: int = 60,
    opts: TrainOptions | None = None,
    seed: int = 20261125,
) -> dict[str, Any]:
    opts = opts or TrainOptions(hidden=64, embed=32, epochs=15)
    difficulty = np.array([s.difficulty for s in SKILLS])
    items_per_skill = len(ITEM_KINDS)
    cur = make_curriculum(difficulty, items_per_skill, seed)
    train = simulate(cur, students, length, seed + 1)
    test = simulate(cur, test_students, length, seed + 2)
    model = train_model(train.skills, train.correct, cur.n_skills, opts)
    scores = evaluate(model, test.skills, test.correct)
    # the oracle scored on the same answers as the model (each student's second answer on)
    oracle = auc(
        np.concatenate([c[1:] for c in test.correct]), np.concatenate([p[1:] for p in test.oracle_p])
    )
    export_onnx(model, out_dir)
    skills = [{"id": s.id, "name_zh": s.name_zh, "name_en": s.name_en} for s in SKILLS]
    items = []
    for n, (k, diff) in enumerate(zip(cur.item_skill, cur.item_difficulty, strict=False)):
        skill = SKILLS[int(k)]
        kind_zh, kind_en = ITEM_KINDS[n % items_per_skill]
        items.append(
            {
                "id": f"{skill.id}-{n % items_per_skill + 1}",
                "skill_id": skill.id,
                "difficulty": round(float(diff - skill.difficulty), 4),
                "title_zh": f"{skill.name_zh}·{kind_zh}",
                "title_en": f"{skill.name_en}: {kind_en}",
            }
        )
    meta = {
        "version": PACKAGE_VERSION,
        "created": _now(),
        "hidden": opts.hidden,
        "n_skills": cur.n_skills,
        "training_data": "simulated students (edge_agent.kt.simulator), see simulator",
        "training_data_sha256": train.digest(),
        "auc": round(scores["auc"], 4),
        "accuracy": round(scores["accuracy"], 4),
        "oracle_auc": round(oracle, 4),
        "students_train": students,
        "students_test": test_students,
        "simulator": {"seed": seed, "answers_per_student": length, "items_per_skill": items_per_skill},
        "train_options": asdict(opts),
        "prior_success": [round(p, 6) for p in prior_success(model)],
    }
    write_package_files(out_dir, meta, skills, items)
    return {
        "auc": meta["auc"],
        "oracle_auc": meta["oracle_auc"],
        "accuracy": meta["accuracy"],
        "gap": round(oracle - scores["auc"], 4),
        "out": str(out_dir),
    }
