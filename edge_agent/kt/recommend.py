"""What to practise next (pure): the weakest skills, and items on them nearest the target success."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.kt.package import ItemInfo


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
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def item_success(skill_prob: float, difficulty: float) -> float:
    """Shift the skill's predicted success by the item's logit difficulty offset."""
    return 1.0 / (1.0 + math.exp(difficulty - _logit(skill_prob)))


def weakest_skills(probs: np.ndarray, count: int, among: Sequence[int] | None = None) -> list[int]:
    """Indices of the ``count`` lowest-probability skills (ties by index), optionally only ``among``."""
    candidates = np.arange(probs.size) if among is None else np.asarray(sorted(set(among)), dtype=np.int64)
    if candidates.size == 0:
        return []
    order = np.lexsort((candidates, probs[candidates]))
    return [int(i) for i in candidates[order][:count]]


def recommend(
    probs: np.ndarray,
    items_by_skill: dict[int, list[ItemInfo]],
    weak: Sequence[int],
    *,
    target: float,
    count: int,
    exclude: Sequence[str] = (),
) -> list[Recommendation]:
    """Items on the ``weak`` skills whose predicted success is nearest ``target``, never an excluded item."""
    banned = set(exclude)
    scored = []
    for rank, k in enumerate(weak):
        logit = _logit(float(probs[k]))
        for item in items_by_skill.get(k, ()):
            if item.id not in banned:
                p = 1.0 / (1.0 + math.exp(item.difficulty - logit))
                scored.append((abs(p - target), rank, item.id, p, item))
    scored.sort(key=lambda t: t[:3])
    return [Recommendation(t[4], t[3]) for t in scored[:count]]
