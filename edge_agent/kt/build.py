"""Build model packages with the trainer (requires torch): from a school's answer log, or the default one.

The default package is trained on simulated students of :mod:`edge_agent.kt.curriculum`; its metadata
records the simulator's parameters and the sha256 of the generated training data so anyone can rebuild
and check it, plus the held-out AUC beside the oracle's.

A package is written into a folder beside ``--out`` and swapped in whole (see :func:`_staged`): the daemon
finds the old package or the new one, never a mix of the two.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.kt.curriculum import ITEM_KINDS, SKILLS
from edge_agent.kt.data import Sequences, split_students
from edge_agent.kt.metrics import auc
from edge_agent.kt.package import REQUIRED, write_package_files
from edge_agent.kt.school_bank import SchoolBank, package_entries
from edge_agent.kt.simulator import make_curriculum, simulate, to_dkt_csv
from edge_agent.kt.train import TrainOptions, evaluate, export_onnx, prior_success, train_model
from edge_agent.provisioning.files import sync_folder, sync_tree

log = logging.getLogger(__name__)

PACKAGE_VERSION = "2026.12.3"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# What a package folder may hold besides REQUIRED: a signed package's pair (provisioning/model_package.py),
# which a retrain drops with the rest (it signed the old model). Anything else in --out is refused: the
# whole folder is replaced, and "--out ." would take a user's own files with it.
_SIGNED = ("manifest.json", "manifest.sig")


def _package_folder(out_dir: Path) -> Path:
    """The folder that will be replaced: --out itself, or the folder a link named --out points to (the link
    is kept, so a kt.package_dir naming the link finds the new package). Checked before the training."""
    out = out_dir.resolve()
    if os.path.ismount(out):  # a mount point cannot be renamed, nor a folder beside it renamed onto it
        raise ModelError(f"--out {out_dir} is a mount point, which cannot be swapped for a new folder (a "
                         "package is written beside its folder and swapped in whole); give a folder inside "
                         f"it (e.g. {out_dir / 'kt-package'}) and set kt.package_dir to that")
    try:
        _clean_leftovers(out)
    except OSError as exc:
        raise ModelError(f"cannot tidy what a killed kt train left beside --out {out_dir}: {exc}") from exc
    _staging_folder(out).rmdir()  # an unwritable parent folder said before the training
    if out.is_dir():
        foreign = sorted(set(os.listdir(out)) - {*REQUIRED, *_SIGNED})
        if foreign:
            raise ModelError(f"--out {out_dir} holds files that are not a KT package's "
                             f"({', '.join(foreign[:3])}): the new package replaces the whole folder; give "
                             "a new or empty folder, or move those files out")
    return out


def _leftover(path: Path, out: Path) -> str | None:
    """'tmp' or 'old' for a folder a killed run of ours left beside ``out``, else None (a live run's too)."""
    match = re.fullmatch(rf"\.{re.escape(out.name)}\.(tmp|old)-([0-9]+)", path.name)
    if match is None or not path.is_dir() or path.is_symlink():
        return None
    pid = int(match[2])
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
            return None  # another kt train into the same folder, still running
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            return None
    return match[1]


def _clean_leftovers(out: Path) -> None:
    """A killed run leaves its staging folder (removed here); killed between the two renames of
    :func:`_swap_in` without an exchange, it left no package folder and the old package under its .old
    name, which is put back (the CLI may have made an empty --out since)."""
    if not out.parent.is_dir():
        return
    for path in sorted(out.parent.iterdir()):
        kind = _leftover(path, out)
        if kind == "old" and (not out.exists() or (out.is_dir() and not any(out.iterdir()))):
            with contextlib.suppress(FileNotFoundError):
                out.rmdir()
            path.rename(out)
            log.warning("%s: put back the package a killed kt train had moved aside", out)
        elif kind is not None:
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where the C library (glibc
    before 2.28) or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(staged: Path, out: Path) -> None:
    """Put the written package in place of ``out``; ``staged`` then holds the old one (or nothing)."""
    if not out.exists():
        os.rename(staged, out)
    elif not _exchange(staged, out):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(staged, out)  # killed between the two, the next run puts the old package back
        os.rename(old, staged)
    sync_folder(out.parent)


def _staging_folder(out: Path) -> Path:
    staged = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.mkdir()
        if out.is_dir():  # the folder's permissions, as IT set them
            os.chmod(staged, stat.S_IMODE(out.stat().st_mode))
    except OSError as exc:
        raise ModelError(f"cannot write {staged}: {exc.strerror or exc}; a package is written in a folder "
                         f"beside --out and swapped in whole, so {out.parent} must be writable too") from exc
    return staged


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A folder beside ``out`` to write the package into, swapped in for ``out`` once all of it is on disk.

    A review: the files were rewritten in place one by one, and a kill midway (a power cut, an OOM kill,
    Ctrl-C) left the new weights under the old skills.json, which the daemon loaded, naming each output by
    another skill; or a truncated JSON file, and KT down at the next start."""
    staged = _staging_folder(out)
    try:
        yield staged
        sync_tree(staged)
        try:
            _swap_in(staged, out)
        except OSError as exc:
            raise ModelError(f"cannot put the new package in place of {out}: {exc}") from exc
    finally:
        shutil.rmtree(staged, ignore_errors=True)


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


def _split(data: Sequences, test_share: float, seed: int) -> tuple[Sequences, Sequences]:
    """Training and held-out students, by student. A held-out student who practised a skill no training
    student did trains instead, while another held-out student with 2+ answers is left: the model had no
    output for such a skill, and its exercises were dropped (a review). In the split's order (--seed)."""
    tr_idx, te_idx = split_students(len(data), test_share, seed)
    trained = {s for i in tr_idx for s in data.skills[i]}
    train, test = [int(i) for i in tr_idx], list[int]()
    for n, i in enumerate(te_idx):
        new = set(data.skills[i]) - trained
        others = [*test, *te_idx[n + 1 :]]
        if new and any(len(data.skills[j]) >= 2 for j in others):
            train.append(int(i))
            trained |= new
        else:
            test.append(int(i))
    return (Sequences([data.skills[i] for i in train], [data.correct[i] for i in train], data.names),
            Sequences([data.skills[i] for i in test], [data.correct[i] for i in test]))


def _check_scorable(te_c: list[np.ndarray], given: bool) -> None:
    """Before the training, not after it: held-out answers all right (or all wrong) have no AUC, and the
    bare "AUC needs both correct and wrong answers" came after minutes of training (a review). The scored
    answers are each student's second on."""
    seen = {int(v) for c in te_c for v in c[1:]}
    if len(seen) == 1:
        what = "right" if seen == {1} else "wrong"
        who, fix = (("the --test file's answers", "give a test file with both") if given else
                    ("the held-out students' answers", "give more students or --test"))
        raise ValueError(f"{who} are all {what}: the AUC that scores the model needs right and wrong "
                         f"answers; {fix}")


def build_from_sequences(
    train: Sequences, test: Sequences | None, out_dir: Path, opts: TrainOptions, test_share: float = 0.2,
    *, bank: SchoolBank | None = None,
) -> dict[str, Any]:
    """Train on a school's log; without ``test``, hold out ``test_share`` of the students. ``bank``: the
    school's skill names and exercises (school_bank.py); without it skills are named by their ids."""
    import hashlib

    out = _package_folder(out_dir)
    given = test is not None
    if test is None:
        # one student went all to the held-out side, and the error blamed a test file never given (a review)
        usable = sum(len(seq) >= 2 for seq in train.skills)
        if usable < 2:
            raise ValueError(f"the training data holds {usable} student(s) with 2 or more answers: at least "
                             "2 are needed, one to train on and one held out (or give --test)")
        train, test = _split(train, test_share, opts.seed)
    vocab = train.vocabulary()
    tr_s, tr_c = train.encode(vocab)
    te_s, te_c = test.encode(vocab)
    _check_held_out(test, set(vocab), given)
    if not tr_s or not te_s:
        raise ValueError("need at least one training and one held-out student with 2+ answers")
    _check_scorable(te_c, given)
    model = train_model(tr_s, tr_c, len(vocab), opts)
    scores = evaluate(model, te_s, te_c)
    digest = hashlib.sha256(to_dkt_csv(tr_s, tr_c).encode()).hexdigest()
    names = [train.name(s) for s in vocab]  # as the school's file spells them: its clicker sends those
    skills, items = package_entries(bank or SchoolBank(), names)
    with _staged(out) as staged:
        export_onnx(model, staged)
        weights = hashlib.sha256((staged / "kt_step.onnx").read_bytes()).hexdigest()
        meta = {
            # two packages of one day told apart by their weights (data, options or seed: round 2)
            "version": f"{_now()[:10]}.{weights[:8]}",
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
        write_package_files(staged, meta, skills, items)
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
    out = _package_folder(out_dir)
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
    with _staged(out) as staged:
        export_onnx(model, staged)
        write_package_files(staged, meta, skills, items)
    return {
        "auc": meta["auc"],
        "oracle_auc": meta["oracle_auc"],
        "accuracy": meta["accuracy"],
        "gap": round(oracle - scores["auc"], 4),
        "out": str(out_dir),
    }
