"""`kt train` replaces a package folder as a whole: a kill at any moment leaves the old package or the new
one; and the data checks that can fail do so before the training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_agent.cli import main
from edge_agent.kt.package import REQUIRED, load_package

# the CLI in a child that SIGKILLs itself at one moment of the write (a power cut, an OOM kill, Ctrl-C)
KILL_AT = {
    # the ONNX files written, the JSON files not yet: the review's new weights under the old skills.json
    "after-the-onnx-export": (
        "real = b.export_onnx\n"
        "def export(*a, **k):\n    real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)\n"
        "b.export_onnx = export\n"),
    # half of metadata.json written: the review's truncated JSON
    "halfway-through-a-json-file": (
        "def write_text(self, data, *a, **k):\n"
        "    with open(self, 'w', encoding='utf-8') as f:\n        f.write(data[: len(data) // 2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pathlib.Path.write_text = write_text\n"),
    # the new package in place, the old one not yet removed from beside it
    "after-the-swap": (
        "real = b._swap_in\n"
        "def swap(*a):\n    real(*a); os.kill(os.getpid(), signal.SIGKILL)\n"
        "b._swap_in = swap\n"),
}


def _answers(path: Path, skills: list[str], students: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(students):
        sk = rng.choice(skills, 12)
        lines += ["12", ",".join(sk), ",".join(str(int(v)) for v in rng.integers(0, 2, 12))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train_args(data: Path, out: Path) -> list[str]:
    return ["kt", "train", "--train", str(data), "--out", str(out), "--epochs", "1", "--hidden", "8"]


def _killed_run(args: list[str], kill: str) -> int:
    code = ("import os, pathlib, signal, sys\nimport edge_agent.kt.build as b\n" + kill
            + "from edge_agent.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # light on a shared CI machine
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                         env=env)
    return run.returncode


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_whole(out: Path, skill_ids: list[str]) -> None:
    """Loadable by the daemon, its skills those of one training, its metadata that of these weights."""
    package = load_package(out)
    assert [s.id for s in package.skills] == skill_ids
    digest = hashlib.sha256(package.step_model.read_bytes()).hexdigest()
    assert package.metadata["version"].endswith(digest[:8])


@pytest.mark.parametrize("moment", list(KILL_AT))
def test_a_kt_train_killed_while_writing_leaves_the_old_package_or_the_new_one_whole(
    tmp_path: Path, moment: str
) -> None:
    # A review: the files were rewritten in place; killed after the export, the folder held the new weights
    # under the old skills.json, and the daemon's load_package and check_engine accepted it
    out = tmp_path / "pkg"
    assert main(_train_args(_answers(tmp_path / "term1.csv", list("01234"), 30, 1), out)) == 0
    old = _files(out)
    term2 = _answers(tmp_path / "term2.csv", list("12345"), 30, 2)  # next term's export numbers them 1..5
    assert _killed_run(_train_args(term2, out), KILL_AT[moment]) == -9
    if moment == "after-the-swap":
        _assert_whole(out, list("12345"))
    else:
        assert _files(out) == old
        _assert_whole(out, list("01234"))
    assert main(_train_args(term2, out)) == 0  # the next run: the new package, the killed run's folder gone
    _assert_whole(out, list("12345"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "term1.csv", "term2.csv"]


def test_a_kt_train_killed_between_the_renames_of_a_file_system_without_an_exchange_gets_the_old_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without renameat2's exchange (glibc before 2.28) the old folder is moved aside, then the new one in
    out = tmp_path / "pkg"
    assert main(_train_args(_answers(tmp_path / "term1.csv", list("01234"), 30, 1), out)) == 0
    old = _files(out)
    kill = ("b._exchange = lambda a, c: False\nreal, calls = os.rename, []\n"
            "def rename(a, c):\n    calls.append(a)\n"
            "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n    real(a, c)\n"
            "os.rename = rename\n")
    term2 = _answers(tmp_path / "term2.csv", list("12345"), 30, 2)
    assert _killed_run(_train_args(term2, out), kill) == -9
    assert not out.exists()  # the moment the daemon would not start (the exchange has none)
    # the next run, even one that stops at its data checks, puts the old package back
    bad = tmp_path / "bad.csv"
    bad.write_text("3\n1,2,1\n1,0,1\n", encoding="utf-8")
    assert main(_train_args(bad, out)) == 1
    assert _files(out) == old
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg.")]


def test_kt_train_through_a_link_replaces_the_folder_it_points_to_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "pkg-2026").mkdir()
    link = tmp_path / "kt-current"
    link.symlink_to("pkg-2026")
    assert main(_train_args(_answers(tmp_path / "term1.csv", list("01234"), 30, 1), link)) == 0
    assert link.is_symlink() and sorted(p.name for p in link.iterdir()) == sorted(REQUIRED)
    _assert_whole(tmp_path / "pkg-2026", list("01234"))


def test_kt_train_refuses_an_out_folder_holding_other_files_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # the whole folder is replaced: "--out ." would have taken a user's own files with it
    out = tmp_path / "school"
    out.mkdir()
    (out / "notes.txt").write_text("ours", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert main(_train_args(_answers(tmp_path / "a.csv", list("01234"), 30, 1), out)) == 1
    assert "holds files that are not a KT package's (notes.txt)" in capsys.readouterr().out
    assert "epoch" not in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_building_into_a_mount_point_is_refused_before_training(tmp_path: Path) -> None:
    # a mount point cannot be swapped for a folder beside it; written in place it could be left half new
    from edge_agent.errors import ModelError
    from edge_agent.kt.build import build_from_sequences
    from edge_agent.kt.data import read_sequences
    from edge_agent.kt.train import TrainOptions

    train = read_sequences(_answers(tmp_path / "a.csv", list("01234"), 30, 1), "dkt-csv")
    with pytest.raises(ModelError, match=r"--out /proc is a mount point, .* give a folder inside it"):
        build_from_sequences(train, None, Path("/proc"), TrainOptions(hidden=8, embed=8, epochs=1))


def test_a_skill_practised_only_by_a_held_out_student_stays_in_the_package(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A review: the vocabulary came from the training students only, so the split dropped 'probability'
    # and its exercise Q-9, "which is not in the answer log" although the log had it
    from edge_agent.kt.data import split_students

    rare = int(split_students(30, 0.2, 0)[1][0])  # held out by --seed 0's split
    rng = np.random.default_rng(0)
    lines = []
    for s in range(30):
        sk = ["algebra", "geometry", "ratio", "algebra"] + ["probability", "probability"] * (s == rare)
        lines += [str(len(sk)), ",".join(sk), ",".join(str(int(v)) for v in rng.integers(0, 2, len(sk)))]
    (tmp_path / "rare.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_text("item_id,skill_id,title_zh\nQ-1,algebra,代数\nQ-9,probability,概率\n", encoding="utf-8")
    out = tmp_path / "pkg"
    with caplog.at_level(logging.WARNING):
        assert main([*_train_args(tmp_path / "rare.csv", out), "--items", str(items)]) == 0
    package = load_package(out)
    assert "probability" in [s.id for s in package.skills]
    assert "Q-9" in {i.id for i in package.items}
    assert "left out" not in caplog.text
    assert json.loads((out / "metadata.json").read_text())["students_test"] == 5  # 6 held out, one moved


def test_an_exercise_on_a_skill_no_training_student_practised_is_said_to_be_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # it said "which is not in the answer log" of a skill only held-out students had practised (a review)
    from edge_agent.kt.school_bank import SchoolBank, package_entries

    item = {"id": "Q-9", "skill_id": "probability", "difficulty": 0.0, "title_zh": "概率", "title_en": "p"}
    with caplog.at_level(logging.WARNING):
        package_entries(SchoolBank({}, (item,), ("items.csv line 2",)), ["algebra"])
    said = caplog.text
    assert "which no training student practised" in said and "only held-out students did" in said
    assert "give more students or --test" in said


def test_held_out_answers_all_right_are_said_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # A review: the whole training ran, then "AUC needs both correct and wrong answers", and no package
    from edge_agent.kt.data import split_students

    held_out = set(split_students(12, 0.2, 0)[1].tolist())
    data = tmp_path / "answers.csv"
    data.write_text("".join(f"4\n1,2,3,1\n{'1,1,1,1' if s in held_out else '1,0,1,0'}\n" for s in range(12)),
                    encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert main(_train_args(data, tmp_path / "pkg")) == 1
    said = capsys.readouterr().out
    assert "the held-out students' answers are all right" in said and "give more students or --test" in said
    assert "epoch" not in caplog.text  # before the training, not after it
