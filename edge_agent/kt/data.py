"""Reading answer logs for training: the 3-lines-per-student CSV and pyKT-style CSV (pure, no torch).

Both readers return :class:`Sequences`: per student, skill ids (strings) and 0/1 answers. A file's skill ids
are all numbers or all names. A whole number is one skill in any spelling ("7", "07", "7.0" and " 7"),
named as the file first spells it without a fraction ("07"; "7" if only "7.0" appears); a code such as "1.1"
and a name are kept as written. A malformed file raises :class:`InputRejected` naming the line and what is
wrong.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.errors import InputRejected
from edge_agent.spreadsheet_text import SAVE_AS, likely_encoding


@dataclass
class Sequences:
    skills: list[list[str]] = field(default_factory=list)  # a whole number as its value ("07" is "7")
    correct: list[list[int]] = field(default_factory=list)
    # A whole-number skill's id as the file first spelled it without a fraction ("07"), where that is not
    # its value: the package names the skill so, and the clicker's own "07" is taken (see name()).
    names: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.skills)

    def name(self, skill: str) -> str:
        return self.names.get(skill, skill)

    def vocabulary(self) -> list[str]:
        ids = {s for seq in self.skills for s in seq}
        # numbers by value, names after: "①" and "²" are digits to str.isdigit, not to int (a review)
        return sorted(ids, key=lambda s: (0, int(s), s) if _WHOLE.fullmatch(s) else (1, 0, s))

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


# A number: a whole one, also as a float with a zero fraction (pandas writes a column that had a gap as
# floats, "7.0"; read as written, 7 and 7.0 were two skills, a doubled vocabulary, silently), or a
# chapter.section code ("1.1", "1.10"), which is kept as written.
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?")
_WHOLE = re.compile(r"[0-9]+")  # a skill key that is a whole number (skill_key made it so)


def skill_key(text: str) -> str:
    """The skill a spelling names: a whole number as its value ("07", "7.0" and " 7" are "7"), a code such
    as "1.1" or a name as written (spaces around it dropped)."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        whole, _, fraction = text.partition(".")
        if not fraction.strip("0"):
            return str(int(whole))
    return text


class _SkillIds:
    """The skill ids of one file, a whole number as its value; the file's first id says whether all are
    numbers or all are names. Each distinct spelling is checked once and then shared."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._spelled: dict[str, str] = {}  # as the file spells it -> the id
        self._ids: dict[str, str] = {}  # one str object per id
        # Named as the file first spells a whole number without a fraction: renamed to its value ('07' ->
        # '7'), a school's package refused the clicker's own '07'; named as first spelled, a pandas log's
        # '7.0' named the skill '7.0' (round 3). Ids stay values, so a --test file's '7' meets '07'.
        self.names: dict[str, str] = {}
        self._first: tuple[bool, int, str] | None = None  # a number?, line, spelling of the file's first id

    def __call__(self, spellings: list[str], line: int) -> list[str]:
        spelled = self._spelled
        for n, raw in enumerate(spellings, 1):
            if raw not in spelled:
                spelled[raw] = self._new(raw, line, n, len(spellings))
        return [spelled[raw] for raw in spellings]

    def _new(self, raw: str, line: int, n: int, of: int) -> str:
        where = f"{self._source} line {line}"
        text = raw.strip()
        if not text:
            raise InputRejected(f"{where}: skill id {n} of {of} is empty; every answer needs its skill id")
        number = _NUMBER.fullmatch(text) is not None
        if number and text.startswith("-"):  # a review: trained into a package as skills '-3', '-2', '-1'
            raise InputRejected(f"{where}: skill id {text!r} is negative; skill ids are numbers from 0, "
                                "or names")
        if self._first is None:
            self._first = (number, line, text)
        elif self._first[0] != number:
            _, first_line, first = self._first
            kind, other = ("a number", "names") if number else ("a name", "numbers")
            raise InputRejected(
                f"{where}: skill id {text!r} is {kind}, but the file's skill ids are {other} (the first, "
                f"{first!r}, is on line {first_line}); use numbers throughout or names throughout"
            )
        key = skill_key(text)
        if number and "." not in text:
            self.names.setdefault(key, text)
        return self._ids.setdefault(key, key)

    def renamed(self) -> dict[str, str]:
        """The whole-number skills whose name is not their value ('7' named '07')."""
        return {key: name for key, name in self.names.items() if key != name}


_BITS = {"0": 0, "1": 1}


def _answers(values: list[str], where: str) -> list[int]:
    try:
        return [_BITS[v] for v in values]  # the usual spelling, without a float per answer
    except KeyError:
        pass
    try:
        numbers = [float(v) for v in values]  # "1.0" is 1; 0.7 is refused, not cut to 0
    except ValueError as exc:
        raise InputRejected(f"{where}: answers must be 0 or 1 ({exc})") from exc
    if any(a not in (0.0, 1.0) for a in numbers):
        raise InputRejected(f"{where}: answers must be 0 or 1 (partial credit such as 0.7 is not an answer)")
    return [int(a) for a in numbers]


def parse_dkt_csv(text: str, source: str = "<csv>") -> Sequences:
    """Count line, skill-id line, answer line per student; blank lines ignored."""
    return _read_dkt(text.splitlines(), source)


def _read_dkt(lines: Iterable[str], source: str) -> Sequences:
    seqs = Sequences()
    ids = _SkillIds(source)
    block: list[tuple[int, str]] = []
    nonblank = 0
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        nonblank += 1
        block.append((n, line.rstrip(",")))
        if len(block) < 3:
            continue
        (n1, count), (n2, skills), (n3, answers) = block
        block = []
        try:
            expected = int(count)
        except ValueError as exc:
            raise InputRejected(f"{source} line {n1}: expected an answer count, got {count[:40]!r}") from exc
        skill_ids = skills.split(",")
        values = _answers([a.strip() for a in answers.split(",")], f"{source} line {n3}")
        if not (len(skill_ids) == len(values) == expected):
            raise InputRejected(
                f"{source} lines {n1}-{n3}: count {expected} but "
                f"{len(skill_ids)} skills and {len(values)} answers"
            )
        seqs.skills.append(ids(skill_ids, n2))
        seqs.correct.append(values)
    if block:
        raise InputRejected(f"{source}: {nonblank} non-blank lines; the format needs 3 per student")
    seqs.names = ids.renamed()
    return seqs


def _first_concept(concept: str) -> str:
    """pyKT joins the concept ids of a question on several with "_" (``11_12``): the first counts. A name
    holding "_" is one concept (a review: algebra_linear and algebra_quadratic became one skill, algebra)."""
    parts = concept.split("_")
    return parts[0] if len(parts) > 1 and all(part.strip().isdigit() for part in parts) else concept


def parse_pykt_csv(text: str, source: str = "<csv>") -> Sequences:
    """pyKT's sequence CSV: columns ``concepts`` and ``responses`` hold comma-separated lists, -1 pads.

    pyKT cuts a student's answers into rows of at most 200, each keeping the student's ``uid``: rows of one
    uid are one student again (in file order), so the split by student cannot put one student's answers on
    both sides."""
    return _read_pykt(io.StringIO(text, newline=""), source)


def _read_pykt(lines: Iterable[str], source: str) -> Sequences:
    reader = csv.DictReader(lines)
    if not reader.fieldnames or not {"concepts", "responses"} <= set(reader.fieldnames):
        raise InputRejected(f"{source}: a pyKT CSV needs a header with 'concepts' and 'responses' columns")
    seqs = Sequences()
    ids = _SkillIds(source)
    row_of_uid: dict[str, int] = {}
    for row in reader:
        where = f"{source} line {reader.line_num}"
        if row["concepts"] is None or row["responses"] is None:  # a short row: skipped unseen (a review)
            raise InputRejected(f"{where}: the row ends before its 'concepts' and 'responses' columns")
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
        # an answer without its concept was dropped unseen
        for n, (c, r) in enumerate(zip(concepts, responses, strict=True), 1):
            if c in ("", "-1") and r not in ("", "-1"):  # -1 pads a row, both columns alike
                raise InputRejected(f"{where}: concept {n} of {len(concepts)} is {c or 'empty'} but has a "
                                    "response")
        pairs = [
            (_first_concept(c), r)
            for c, r, k in zip(concepts, responses, keep, strict=False)
            if k and r != "-1" and c not in ("", "-1")
        ]
        if not pairs:
            continue
        answers = _answers([r for _, r in pairs], where)
        skills = ids([c for c, _ in pairs], reader.line_num)
        uid = (row.get("uid") or "").strip()
        if uid and uid in row_of_uid:
            seqs.skills[row_of_uid[uid]] += skills
            seqs.correct[row_of_uid[uid]] += answers
            continue
        if uid:
            row_of_uid[uid] = len(seqs.skills)
        seqs.skills.append(skills)
        seqs.correct.append(answers)
    seqs.names = ids.renamed()
    return seqs


def read_sequences(path: Path, fmt: str) -> Sequences:
    """Read line by line: the whole text, its list of lines and a str object per skill id held about 17x
    the file's size (+516 MB for a 30 MB file)."""
    if fmt not in ("dkt-csv", "pykt-csv"):
        raise InputRejected(f"unknown training data format {fmt!r} (use dkt-csv or pykt-csv)")
    try:
        # Excel writes "UTF-8 CSV" with a BOM; the csv module wants newline="" (a newline inside quotes)
        with path.open(encoding="utf-8-sig", newline="" if fmt == "pykt-csv" else None) as lines:
            return (_read_dkt if fmt == "dkt-csv" else _read_pykt)(lines, str(path))
    except OSError as exc:  # "answer log", not "training file": it may be the --test one (a review)
        raise InputRejected(f"cannot read answer log {path}: {exc}") from exc
    except UnicodeDecodeError as exc:  # its position counts from the block read, not the file: left out
        # a UTF-16 log was told to convert from GBK, which fails on it (a review): named as the roster's is
        raise InputRejected(
            f"answer log {path} is not UTF-8 text ({likely_encoding(_head(path), path)}); {SAVE_AS}"
        ) from exc


def _head(path: Path, most: int = 16 << 20) -> bytes:
    """The file's first ``most`` bytes, cut after a line end (never inside a GBK character), to name its
    encoding from."""
    try:
        with path.open("rb") as file:
            data = file.read(most + 1)
    except OSError:
        return b""
    return data if len(data) <= most else data[: data.rfind(b"\n", 0, most) + 1]


def split_students(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out students: the split is by student, never by answer."""
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, round(n * test_share))
    return order[cut:], order[:cut]
