"""What to practise next (pure): the weakest skills, and items on them nearest the target success.

Plain Python over lists on purpose: feedback is built for micro-batches of one or two answers in a
classroom, where numpy's per-call overhead costs more than the ~20 items it would score (measured: 33 µs
against 8.5 µs per answer at batch 1; numpy wins by 3 µs only from batches of 32 on).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.kt.package import ItemInfo

_CLIP = 1e-6


@dataclass(frozen=True)
class Recommendation:
    item: ItemInfo
    predicted_success: float

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used in answer feedback and the class view."""
        return {
            "item_id": self.item.id,
            "skill_id": self.item.skill_id,
            "title_zh": self.item.title_zh,
            "title_en": self.item.title_en,
            "predicted_success": round(self.predicted_success, 4),
        }


def _logit(p: float) -> float:
    p = min(max(p, _CLIP), 1 - _CLIP)
    return math.log(p / (1 - p))


def item_success(skill_prob: float, difficulty: float) -> float:
    """Shift the skill's predicted success by the item's logit difficulty offset."""
    return 1.0 / (1.0 + math.exp(difficulty - _logit(skill_prob)))


def weakest_skills(
    probs: np.ndarray | Sequence[float], count: int, among: Collection[int] | None = None
) -> list[int]:
    """Indices of the ``count`` lowest-probability skills (ties by index), optionally only ``among``."""
    values = probs.tolist() if isinstance(probs, np.ndarray) else probs
    candidates = range(len(values)) if among is None else sorted(set(among))
    return sorted(candidates, key=values.__getitem__)[:count]  # stable: ties keep index order


class ItemBank:
    """The items of each skill, ready for scoring: (difficulty, id, item), in id order."""

    def __init__(self, items_by_skill: Mapping[int, Sequence[ItemInfo]], n_skills: int | None = None) -> None:
        """Built once per package: sorting a 50,000-item bank takes 270 ms (a review found it built for
        every class summary, once a second on the event loop)."""
        self._by_skill = {
            k: tuple((item.difficulty, item.id, item) for item in sorted(items, key=lambda i: i.id))
            for k, items in items_by_skill.items()
        }
        with_items = sorted(k for k, entries in self._by_skill.items() if entries)
        self._skills_of: dict[str, set[int]] = {}  # item id -> its skills, for the excluded items
        for k, entries in self._by_skill.items():
            for _difficulty, item_id, _item in entries:
                self._skills_of.setdefault(item_id, set()).add(k)
        # The skills practice can be recommended on; None when every one of the package's ``n_skills``
        # has items (the usual case, and the answer path's fast one)
        self.practicable: list[int] | None = None if len(with_items) == n_skills else with_items

    def practice_skills(
        self,
        probs: np.ndarray | Sequence[float],
        weak: Sequence[int],
        among: Collection[int] | None = None,
        exclude: Collection[str] = (),
    ) -> Sequence[int]:
        """As many of the weakest skills with an item that is not excluded (of ``among``, where given) as
        ``weak`` holds, ``weak`` being the weakest of all: with no items on those, nothing was recommended
        (108 of 200 answers in a review), nor with one item per skill (``kt train`` without --items) when
        the student had just answered each weak skill's (54 of 120). Pass recommend's ``exclude``."""
        used_up = self._used_up(exclude)
        if self.practicable is None and used_up.isdisjoint(weak):
            return weak
        candidates: Collection[int] = range(len(probs)) if self.practicable is None else self.practicable
        if among is not None:
            candidates = set(among) & set(candidates)
        return weakest_skills(probs, len(weak), [k for k in candidates if k not in used_up])

    def _used_up(self, exclude: Collection[str]) -> set[int]:
        """The skills whose items are all excluded."""
        touched = {k for item_id in exclude for k in self._skills_of.get(item_id, ())}
        return {k for k in touched if all(item_id in exclude for _d, item_id, _i in self._by_skill[k])}

    def recommend(
        self,
        probs: np.ndarray | Sequence[float],
        weak: Sequence[int],
        *,
        target: float,
        count: int,
        exclude: Sequence[str] = (),
    ) -> list[Recommendation]:
        """Items on the ``weak`` skills whose predicted success is nearest ``target``, never an excluded
        item: the best item of each skill in ``weak``'s order (the weakest first), then the second best of
        each, and so on (ties: the item id). Ranked by nearness alone, the target favoured the least weak
        of them (a review: 73 % of feedbacks recommended nothing on the weakest skill)."""
        per_skill = []
        for k in weak:
            logit = _logit(float(probs[k]))
            scored = []
            for difficulty, item_id, item in self._by_skill.get(k, ()):
                if item_id not in exclude:
                    p = 1.0 / (1.0 + math.exp(difficulty - logit))
                    scored.append((abs(p - target), item_id, p, item))
            scored.sort(key=lambda t: t[:2])
            per_skill.append(scored)
        picked: list[Recommendation] = []
        for turn in range(count):
            picked += [Recommendation(s[turn][3], s[turn][2]) for s in per_skill if turn < len(s)]
            if len(picked) >= count:
                break
        return picked[:count]


def recommend(
    probs: np.ndarray | Sequence[float],
    items_by_skill: Mapping[int, Sequence[ItemInfo]],
    weak: Sequence[int],
    *,
    target: float,
    count: int,
    exclude: Sequence[str] = (),
) -> list[Recommendation]:
    """Items on the ``weak`` skills whose predicted success is nearest ``target``, never an excluded item."""
    return ItemBank(items_by_skill).recommend(probs, weak, target=target, count=count, exclude=exclude)
