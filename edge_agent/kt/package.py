"""Knowledge-tracing model packages: a directory the trainer writes and the daemon loads.

Layout (all required)::

    metadata.json     format, version, created, hidden, skill count, training-data sha256, AUC, oracle AUC,
                      prior_success (predicted success per skill before any answer)
    skills.json       {"skills": [{"id", "name_zh", "name_en"}]}, in model output order
    items.json        {"items": [{"id", "skill_id", "difficulty", "title_zh", "title_en"}]};
                      difficulty is a logit offset from the skill's average item (0 = typical)
    kt_step.onnx      one answer with explicit LSTM state (the daemon runs this)
    kt_sequence.onnx  whole sequences (evaluation, re-scoring)

:func:`load_package` validates all of it and raises :class:`ModelError` saying which file is wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from edge_agent import json_input
from edge_agent.errors import ModelError

FORMAT = 1
DEFAULT_PACKAGE_DIR = Path(__file__).resolve().parents[2] / "engines" / "kt-default"
REQUIRED = ("metadata.json", "skills.json", "items.json", "kt_step.onnx", "kt_sequence.onnx")


@dataclass(frozen=True)
class SkillInfo:
    id: str
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class ItemInfo:
    id: str
    skill_id: str
    difficulty: float
    title_zh: str
    title_en: str


@dataclass(frozen=True)
class KTPackage:
    path: Path
    metadata: dict[str, Any]
    skills: tuple[SkillInfo, ...]
    items: tuple[ItemInfo, ...]
    hidden: int
    prior_success: tuple[float, ...]

    @property
    def step_model(self) -> Path:
        return self.path / "kt_step.onnx"

    @property
    def sequence_model(self) -> Path:
        return self.path / "kt_sequence.onnx"

    @cached_property
    def skill_index(self) -> dict[str, int]:
        return {s.id: i for i, s in enumerate(self.skills)}

    @cached_property
    def item_index(self) -> dict[str, ItemInfo]:
        return {i.id: i for i in self.items}


def _read_json(path: Path) -> Any:
    try:
        return json_input.loads(path.read_text(encoding="utf-8"))  # depth, 1e999, NaN refused as ValueError
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError among them
        raise ModelError(f"KT package file {path} is not valid JSON: {exc}") from exc


def item_id_problem(item_id: str) -> str | None:
    """Why the answer API would refuse ``item_id`` from a clicker (answers.py's rule), or None: an exercise
    with a tab in its id, or of 130 characters, was recommended, and every answer on it refused (a review).

    Also an id no clicker types: one holding an invisible character, or one NFKC changes (full-width
    letters and digits). "Q2" with a zero-width space pasted after it was recommended, and a clicker's "Q2"
    was an unknown item; "Q1", "Ｑ１" and "Q1" + U+200B were three exercises (a review)."""
    from edge_agent.kt.answers import INVISIBLE, MAX_TEXT, NOT_TEXT  # here: answers.py imports this module

    if INVISIBLE.fullmatch(item_id):
        return "it has no visible character"
    if len(item_id) > MAX_TEXT:
        return f"it is longer than {MAX_TEXT} characters"
    if NOT_TEXT.search(item_id):
        return "it holds a control character: a tab or a line break, perhaps"
    # a space inside ("Lesson 3 Q1") is typed; one at either end, or any other blank, is not seen
    for position, char in enumerate(item_id):
        if INVISIBLE.fullmatch(char) and (char != " " or position in (0, len(item_id) - 1)):
            return (f"it holds an invisible character, U+{ord(char):04X} at position {position + 1}, pasted "
                    "with the text perhaps: a clicker sends the id without it")
    typed = unicodedata.normalize("NFKC", item_id)
    if typed != item_id:
        return (f"it holds full-width or other look-alike characters: a clicker types {typed[:40]!r}; use "
                "half-width letters and digits")
    return None


def _text(entry: Any, key: str, where: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, str) or not value:
        raise ModelError(f"{where}: missing or empty text field {key!r}")
    return value


def _skills(data: Any, path: Path) -> tuple[SkillInfo, ...]:
    entries = data.get("skills") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ModelError(f'{path}: expected {{"skills": [...]}} with at least one skill')
    skills = tuple(
        SkillInfo(
            _text(e, "id", f"{path} skill {n}"),
            _text(e, "name_zh", f"{path} skill {n}"),
            _text(e, "name_en", f"{path} skill {n}"),
        )
        for n, e in enumerate(entries)
    )
    if len({s.id for s in skills}) != len(skills):
        raise ModelError(f"{path}: skill ids must be unique")
    return skills


MAX_DIFFICULTY = 10.0  # logits: a success of 0.5 moves to 0.99995 or 0.00005

def _items(data: Any, path: Path, skill_ids: set[str]) -> tuple[ItemInfo, ...]:
    entries = data.get("items") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ModelError(f'{path}: expected {{"items": [...]}}')
    items = []
    for n, e in enumerate(entries):
        where = f"{path} item {n}"
        skill = _text(e, "skill_id", where)
        if skill not in skill_ids:
            raise ModelError(f"{where}: skill {skill!r} is not in skills.json")
        diff = e.get("difficulty", 0.0)
        # isfinite of an int past a float's range raised OverflowError (a review): the bound below takes it
        if isinstance(diff, bool) or not isinstance(diff, (int, float)) or (
                isinstance(diff, float) and not math.isfinite(diff)):
            raise ModelError(f"{where}: difficulty must be a finite number")
        # A logit offset: a rating on another scale (Elo's 1200) overflowed exp() in every answer's
        # recommendations, and each answer on that skill got 503 (a review)
        if abs(diff) > MAX_DIFFICULTY:
            bound = f"{MAX_DIFFICULTY:g}"
            raise ModelError(f"{where}: difficulty {diff} is outside -{bound}..{bound}: it is a logit offset "
                             "(typically -3..3), not a rating on another scale")
        item_id = _text(e, "id", where)
        problem = item_id_problem(item_id)
        if problem:
            raise ModelError(f"{where}: id {item_id[:40]!r} is not one a clicker can send ({problem}): "
                             "answers on it would all be refused; rename the exercise and retrain")
        items.append(
            ItemInfo(
                item_id,
                skill,
                float(diff),
                _text(e, "title_zh", where),
                _text(e, "title_en", where),
            )
        )
    if len({i.id for i in items}) != len(items):
        raise ModelError(f"{path}: item ids must be unique")
    return tuple(items)


def load_package(path: Path | None = None) -> KTPackage:
    path = path or DEFAULT_PACKAGE_DIR
    if not path.is_dir():
        raise ModelError(f"KT model package directory {path} does not exist (check kt.package_dir)")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise ModelError(f"KT model package {path} lacks {', '.join(missing)}; retrain or reinstall it")
    meta = _read_json(path / "metadata.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path / 'metadata.json'}: format must be {FORMAT} (package from another version?)")
    skills = _skills(_read_json(path / "skills.json"), path / "skills.json")
    items = _items(_read_json(path / "items.json"), path / "items.json", {s.id for s in skills})
    hidden, prior = meta.get("hidden"), meta.get("prior_success")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0:  # true is an int to Python
        raise ModelError(f"{path / 'metadata.json'}: 'hidden' must be a positive integer")
    if (
        not isinstance(prior, list)
        or len(prior) != len(skills)
        or not all(type(p) in (int, float) and 0.0 <= p <= 1.0 for p in prior)  # not true or false
    ):
        raise ModelError(f"{path / 'metadata.json'}: 'prior_success' needs one probability per skill")
    if meta.get("n_skills") != len(skills):
        raise ModelError(f"{path / 'metadata.json'}: n_skills {meta.get('n_skills')} != {len(skills)} skills")
    meta |= _signed_version(path)
    return KTPackage(path, meta, skills, items, hidden, tuple(float(p) for p in prior))


def _signed_version(path: Path) -> dict[str, str]:
    """A signed package's version (its manifest.json: edge_agent/provisioning/model_package.py) is its
    version: metadata.json's is the trainer's date stamp, kept by a school that signed the package as 2.0,
    so the kt_class windows and the log said 2026.11.1 where the status and metrics said 2.0 (a review).
    Only a manifest that still describes the package's model and metadata counts: one left behind by a
    retrain into the same folder named the new model '2.0', and an unreadable one stopped KT (round 3)."""
    try:
        body = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        files, version = body["files"], body["version"]
        current = all(
            files[name]["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
            for name in ("metadata.json", "kt_step.onnx")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {"version": version} if current and isinstance(version, str) else {}


def write_package_files(
    out_dir: Path, metadata: dict[str, Any], skills: list[dict[str, str]], items: list[dict[str, Any]]
) -> None:
    """Write the JSON files of a package (the trainer exports the ONNX files beside them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "metadata.json": {"format": FORMAT, **metadata},
        "skills.json": {"skills": skills},
        "items.json": {"items": items},
    }
    for name, data in files.items():
        (out_dir / name).write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", "utf-8")
