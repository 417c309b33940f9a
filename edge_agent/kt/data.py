"""Reading answer logs for training: the 3-lines-per-student CSV and pyKT-style CSV (pure, no torch).

Both readers return :class:`Sequences`: per student, skill ids (strings, as the file spells them) and 0/1
answers. A malformed file raises :class:`InputRejected` naming the line and what is wrong.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.errors import InputRejected


@dataclass
class Sequences:
    skills: list[list[str]] = field(default_factory=list)
    correct: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.skills)

    def vocabulary(self) -> list[str]:
        ids = {s for seq in self.skills for s in seq}
        return sorted(ids, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))

    def encode(self, vocab: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Skill ids mapped to indices of ``vocab``; answers on skills outside it are dropped."""
        index = {s: i for i, s in enumerate(vocab)}
        out_s, out_c = [], []
        for sk, co in zip(self.skills, self.correct, strict=False):
            keep = [(index[s], c) for s, c in zip(sk, co, strict=False) if s in index]
            if len(keep) >= 2:
                out_s.append(np.asarray([k for k, _ in keep], dtype=np.int64))
                out_c.append(np.asarray([c for _, c in keep], dtype=np.int64))
        return out_s, out_c


def _answers(values: list[str], where: str) -> list[int]:
    try:
        numbers = [float(v) for v in values]  # "1.0" is 1; 0.7 is refused, not cut to 0
    except ValueError as exc:
        raise InputRejected(f"{where}: answers must be 0 or 1 ({exc})") from exc
    if any(a not in (0.0, 1.0) for a in numbers):
        raise InputRejected(f"{where}: answers must be 0 or 1 (partial credit such as 0.7 is not an answer)")
    return [int(a) for a in numbers]


def parse_dkt_csv(text: str, source: str = "<csv>") -> Sequences:
    """Count line, skill-id line, answer line per student; blank lines ignored."""
    lines = [(n, line.strip().rstrip(",")) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) % 3:
        raise InputRejected(f"{source}: {len(lines)} non-blank lines; the format needs 3 per student")
    seqs = Sequences()
    for i in range(0, len(lines), 3):
        (n1, count), (n2, skills), (n3, answers) = lines[i : i + 3]
        try:
            expected = int(count)
        except ValueError as exc:
            raise InputRejected(f"{source} line {n1}: expected an answer count, got {count[:40]!r}") from exc
        skill_ids = [s.strip() for s in skills.split(",")]
        values = _answers([a.strip() for a in answers.split(",")], f"{source} line {n3}")
        if not (len(skill_ids) == len(values) == expected):
            raise InputRejected(
                f"{source} lines {n1}-{n3}: count {expected} but "
                f"{len(skill_ids)} skills and {len(values)} answers"
            )
        if any(not s for s in skill_ids):
            raise InputRejected(f"{source} line {n2}: empty skill id")
        seqs.skills.append(skill_ids)
        seqs.correct.append(values)
    return seqs


def parse_pykt_csv(text: str, source: str = "<csv>") -> Sequences:
    """pyKT's sequence CSV: columns ``concepts`` and ``responses`` hold comma-separated lists, -1 pads.

    pyKT cuts a student's answers into rows of at most 200, each keeping the student's ``uid``: rows of one
    uid are one student again (in file order), so the split by student cannot put one student's answers on
    both sides."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"concepts", "responses"} <= set(reader.fieldnames):
        raise InputRejected(f"{source}: a pyKT CSV needs a header with 'concepts' and 'responses' columns")
    seqs = Sequences()
    row_of_uid: dict[str, int] = {}
    for row in reader:
        where = f"{source} line {reader.line_num}"
        concepts = [c.strip() for c in (row["concepts"] or "").split(",")]
        responses = [r.strip() for r in (row["responses"] or "").split(",")]
        if len(concepts) != len(responses):
            raise InputRejected(f"{where}: {len(concepts)} concepts but {len(responses)} responses")
        # pyKT's own columns, where present: is_repeat marks the copies it made of a question on several
        # concepts (the same response again: trivially predictable), selectmasks the positions a window
        # file adds (the rest repeat the window before). Read as plain answers, both inflated the AUC
        # (a review: 0.894 and 0.866 against 0.817 for the same students).
        keep = [True] * len(concepts)
        for column, kept in (("is_repeat", lambda v: v != "1"), ("selectmasks", lambda v: v == "1")):
            if row.get(column) is not None:
                marks = [v.strip() for v in row[column].split(",")]
                if len(marks) != len(concepts):
                    raise InputRejected(f"{where}: {len(marks)} {column} for {len(concepts)} concepts")
                keep = [k and kept(v) for k, v in zip(keep, marks, strict=True)]
        pairs = [
            (c.split("_")[0], r)
            for c, r, k in zip(concepts, responses, keep, strict=False)
            if k and r != "-1" and c not in ("", "-1")
        ]
        if not pairs:
            continue
        skills, answers = [c for c, _ in pairs], _answers([r for _, r in pairs], where)
        uid = (row.get("uid") or "").strip()
        if uid and uid in row_of_uid:
            seqs.skills[row_of_uid[uid]] += skills
            seqs.correct[row_of_uid[uid]] += answers
            continue
        if uid:
            row_of_uid[uid] = len(seqs.skills)
        seqs.skills.append(skills)
        seqs.correct.append(answers)
    return seqs


def read_sequences(path: Path, fmt: str) -> Sequences:
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes "UTF-8 CSV" with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise InputRejected(f"cannot read training file {path}: {exc}") from exc
    if fmt == "dkt-csv":
        return parse_dkt_csv(text, str(path))
    if fmt == "pykt-csv":
        return parse_pykt_csv(text, str(path))
    raise InputRejected(f"unknown training data format {fmt!r} (use dkt-csv or pykt-csv)")


def split_students(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out students: the split is by student, never by answer."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, round(n * test_share))
    return order[cut:], order[:cut]
