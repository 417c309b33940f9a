"""A school's skill names and exercises from two spreadsheets, for ``edge-agent kt train --skills --items``.

    skills.csv   skill_id, name_zh [, name_en]          skill_id as the answer log spells it
    items.csv    item_id, skill_id, title_zh [, title_en] [, difficulty]

Before these, a trained package named every skill by its id and held one exercise per skill, titled
"知识点 一元一次方程 练习" / "practice on skill 一元一次方程" (a review): a school could only edit the JSON by
hand, and had to invent an English name for each. An English column left out or empty takes the Chinese
text. A malformed file is refused before the training starts, named by file and line; a skill or exercise
the answer log never practised is left out with a warning once the model is trained.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import InputRejected
from edge_agent.kt.data import skill_key
from edge_agent.kt.package import MAX_DIFFICULTY, item_id_problem
from edge_agent.spreadsheet_text import csv_rows, read_spreadsheet_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchoolBank:
    skill_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # skill id -> (name_zh, name_en)
    items: tuple[dict[str, Any], ...] = ()  # as items.json holds them
    item_lines: tuple[str, ...] = ()  # "items.csv line 7" for each item, to name in warnings


def _rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    columns, read = csv_rows(read_spreadsheet_text(path), str(path))
    # csv's DictReader keeps the last of two columns of one name: the other was dropped without a word
    twice = sorted({c for c in columns if c and columns.count(c) > 1})
    if twice:
        raise InputRejected(f"{path}: its first line names the column {', '.join(map(repr, twice))} twice; "
                            "keep one, or rename the other")
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputRejected(f"{path} has no column {', '.join(map(repr, missing))} (its first line should "
                            f"name the columns: {', '.join(required)}; it names: {', '.join(columns)})")
    rows = []
    for line, row in read:
        cells = {k: v.strip() for k, v in row.items()}
        if not any(cells.values()):
            continue
        for column in required:
            if not cells.get(column):
                raise InputRejected(f"{path} line {line}: {column!r} is empty")
        rows.append((line, cells))
    return rows


def _difficulty(text: str, where: str) -> float:
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > MAX_DIFFICULTY:
        raise InputRejected(f"{where}: difficulty {text!r} is not a number from -{MAX_DIFFICULTY:g} to "
                            f"{MAX_DIFFICULTY:g} (a logit offset from the skill's typical item: 0 typical, "
                            "1 harder, -1 easier)")
    return value


def read_school_bank(skills_csv: Path | None, items_csv: Path | None) -> SchoolBank:
    """The two files read and checked on their own (InputRejected names file and line); either may be
    absent."""
    names: dict[str, tuple[str, str]] = {}
    first: dict[str, tuple[int, str]] = {}  # skill_key -> line and spelling
    for line, row in _rows(skills_csv, ("skill_id", "name_zh")) if skills_csv else ():
        skill = row["skill_id"]
        # by skill_key, as package_entries matches them: "7" and "07" are one skill, and the last one's
        # names were taken without a word (a review)
        if skill_key(skill) in first:
            at, spelt = first[skill_key(skill)]
            also = "" if spelt == skill else f" as {spelt!r}"
            raise InputRejected(f"{skills_csv} line {line}: skill {skill!r} is listed twice (first on line "
                                f"{at}{also})")
        first[skill_key(skill)] = (line, skill)
        names[skill] = (row["name_zh"], row.get("name_en") or row["name_zh"])
    items: list[dict[str, Any]] = []
    lines: list[str] = []
    seen: dict[str, int] = {}
    for line, row in _rows(items_csv, ("item_id", "skill_id", "title_zh")) if items_csv else ():
        item = row["item_id"]
        if item in seen:
            raise InputRejected(f"{items_csv} line {line}: item {item!r} is listed twice (first on line "
                                f"{seen[item]}); the clickers name an exercise by its id")
        seen[item] = line
        problem = item_id_problem(item)
        if problem:  # else recommended to students, and every clicker answer on it refused
            raise InputRejected(f"{items_csv} line {line}: item id {item[:40]!r} is not one a clicker can "
                                f"send ({problem}): the answer API would refuse every answer on it")
        items.append({
            "id": item,
            "skill_id": row["skill_id"],
            "difficulty": _difficulty(row.get("difficulty", ""), f"{items_csv} line {line}"),
            "title_zh": row["title_zh"],
            "title_en": row.get("title_en") or row["title_zh"],
        })
        lines.append(f"{items_csv} line {line}")
    return SchoolBank(names, tuple(items), tuple(lines))


def package_entries(
    bank: SchoolBank, trained: Sequence[str]
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """skills.json's and items.json's entries for the skills the model was trained on (``trained``, as the
    answer log spells them, in output order). A skill or exercise the log never practised cannot be in
    the model: left out with a warning. A skill without an exercise gets one, so recommendations can name
    something to practise."""
    # matched as the answer log's ids are (data.skill_key): the log's "07" is the skills file's "7"
    known = {skill_key(s): s for s in trained}
    unused = [s for s in bank.skill_names if skill_key(s) not in known]
    if unused:
        shown = ", ".join(unused[:5]) + " ..." * (len(unused) > 5)
        log.warning("%s skills in the skills file are not in the answer log and are left out (the model has "
                    "no output for them): %s", len(unused), shown)
    names = {skill_key(s): n for s, n in bank.skill_names.items()}
    skills = []
    for s in trained:
        zh, en = names.get(skill_key(s), (s, s))
        skills.append({"id": s, "name_zh": zh, "name_en": en})
    items = []
    for item, where in zip(bank.items, bank.item_lines, strict=True):
        if skill_key(item["skill_id"]) in known:
            items.append(item | {"skill_id": known[skill_key(item["skill_id"])]})  # as the package names it
        else:
            # not "not in the answer log": the split may have held out every student who practised it
            log.warning("%s: exercise %r is on skill %r, which no training student practised (not in the "
                        "answer log, or only held-out students did): left out; give more students or --test",
                        where, item["id"], item["skill_id"])
    practised = {i["skill_id"] for i in items}
    taken = {i["id"] for i in items}
    for position, skill in enumerate(skills, 1):
        if skill["id"] not in practised:
            item_id = base = f"skill-{skill['id']}"
            if item_id_problem(base):  # a skill id of 123 characters or more: named by its place instead
                item_id = base = f"skill-{position}"
            n = 1
            while item_id in taken:  # a school's own exercise called so, or one made here (round 2)
                n += 1
                item_id = f"{base}-{n}"
            taken.add(item_id)
            items.append({"id": item_id, "skill_id": skill["id"], "difficulty": 0.0,
                          "title_zh": f"{skill['name_zh']}·练习",
                          "title_en": f"practice: {skill['name_en']}"})
    return skills, items
