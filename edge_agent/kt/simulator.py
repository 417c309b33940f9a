"""Simulated students with known ground truth, for training the default package, tests and benchmarks.

Model (IRT with learning): student ``s`` has ability ``theta_s ~ N(0, 1)``; item ``i`` of skill ``k`` has
difficulty ``b_i = d_k + e_i``; each earlier practice of skill ``k`` adds ``gain_k`` (capped at
``max_practice`` practices) so ``P(correct) = sigmoid(theta_s + gain_k * min(n_sk, cap) - b_i)``.

The oracle knows every parameter except the student's ability, and predicts each answer from the exact
Bayesian posterior of ``theta_s`` given that student's earlier answers (a grid over theta). No model that
sees only answers can beat it on average, so its AUC is the ceiling a trained model is measured against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from edge_agent.kt.metrics import auc

_GRID = np.linspace(-4.0, 4.0, 161)
_PRIOR = np.exp(-0.5 * _GRID**2)
_PRIOR /= _PRIOR.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Curriculum:
    skill_difficulty: np.ndarray  # [skills]
    skill_gain: np.ndarray  # [skills] logit gain per practice
    item_skill: np.ndarray  # [items] skill index
    item_difficulty: np.ndarray  # [items]
    max_practice: int = 8

    @property
    def n_skills(self) -> int:
        return int(self.skill_difficulty.shape[0])


@dataclass(frozen=True)
class SimulatedData:
    """Answer sequences (one list per student) and the oracle's probability for each answer."""

    skills: list[np.ndarray]
    items: list[np.ndarray]
    correct: list[np.ndarray]
    oracle_p: list[np.ndarray]
    ability: np.ndarray

    def oracle_auc(self) -> float:
        return auc(np.concatenate(self.correct), np.concatenate(self.oracle_p))

    def digest(self) -> str:
        """sha256 of the answers in 3-line CSV form: what the package metadata records as training data."""
        return hashlib.sha256(to_dkt_csv(self.skills, self.correct).encode()).hexdigest()


def make_curriculum(
    skill_difficulty: np.ndarray, items_per_skill: int, seed: int, item_spread: float = 0.25
) -> Curriculum:
    rng = np.random.default_rng(seed)
    n = len(skill_difficulty)
    gain = rng.uniform(0.15, 0.35, size=n)
    item_skill = np.repeat(np.arange(n), items_per_skill)
    item_difficulty = np.asarray(skill_difficulty)[item_skill] + rng.normal(
        0, item_spread, size=len(item_skill)
    )
    return Curriculum(np.asarray(skill_difficulty, dtype=float), gain, item_skill, item_difficulty)


def _practice_order(rng: np.random.Generator, cur: Curriculum, length: int) -> np.ndarray:
    """Items a student works through: a run of skills in curriculum order with occasional review."""
    skill = int(rng.integers(0, cur.n_skills))
    by_skill = [np.flatnonzero(cur.item_skill == k) for k in range(cur.n_skills)]
    seen = [skill]
    items = []
    left = int(rng.integers(3, 8))
    for _ in range(length):
        if rng.random() < 0.15 and len(seen) > 1:
            k = int(rng.choice(seen[:-1]))  # review an earlier skill
        else:
            k = skill
            left -= 1
            if left <= 0:
                skill = (skill + 1) % cur.n_skills
                seen.append(skill)
                left = int(rng.integers(3, 8))
        items.append(int(rng.choice(by_skill[k])))
    return np.asarray(items, dtype=np.int64)


def simulate(cur: Curriculum, students: int, length: int, seed: int) -> SimulatedData:
    """Deterministic for a given seed: the same students answer the same way."""
    rng = np.random.default_rng(seed)
    ability = rng.normal(0.0, 1.0, size=students)
    out_s, out_i, out_c, out_p = [], [], [], []
    for s in range(students):
        items = _practice_order(rng, cur, length)
        skills = cur.item_skill[items]
        practice = np.zeros(cur.n_skills)
        posterior = _PRIOR.copy()
        correct = np.empty(length, dtype=np.int64)
        oracle = np.empty(length)
        for t, (item, k) in enumerate(zip(items, skills, strict=False)):
            offset = cur.skill_gain[k] * min(practice[k], cur.max_practice) - cur.item_difficulty[item]
            p_grid = _sigmoid(_GRID + offset)
            oracle[t] = float(posterior @ p_grid)
            p_true = float(_sigmoid(np.asarray(ability[s] + offset)))
            correct[t] = int(rng.random() < p_true)
            posterior *= p_grid if correct[t] else 1.0 - p_grid
            posterior /= posterior.sum()
            practice[k] += 1
        out_s.append(skills.astype(np.int64))
        out_i.append(items)
        out_c.append(correct)
        out_p.append(oracle)
    return SimulatedData(out_s, out_i, out_c, out_p, ability)


def to_dkt_csv(skills: list[np.ndarray], correct: list[np.ndarray]) -> str:
    """The 3-lines-per-student format: answer count, skill ids, 0/1 answers."""
    lines = []
    for sk, co in zip(skills, correct, strict=False):
        lines += [str(len(sk)), ",".join(map(str, sk.tolist())), ",".join(map(str, co.tolist()))]
    return "\n".join(lines) + "\n"
