"""Realistic LiveBoard sections for the teacher view tests, shaped exactly as the ground rules say.

Learning data comes from the knowledge-tracing simulator over the default curriculum: a class of 28
simulated students answering this lesson's skills, aggregated the way the KT service aggregates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.kt.curriculum import ITEM_KINDS, SKILLS
from edge_agent.kt.simulator import make_curriculum, simulate
from edge_agent.live import LiveBoard

LESSON_SKILLS = SKILLS[11:17]  # grade 8: triangles to Pythagoras
MASTERY_THRESHOLD = 0.6
LESSON_START = 1_764_050_400.0  # 2025-11-25 06:00 UTC: fixed so screenshots are comparable


def learning_section(students: int = 28, answers_each: int = 18, seed: int = 7) -> dict[str, Any]:
    cur = make_curriculum(np.array([s.difficulty for s in LESSON_SKILLS]), items_per_skill=6, seed=seed)
    sim = simulate(cur, students, answers_each, seed)
    # Mastery of skill k for a student: P(correct) on an average item of k after their practice.
    mastery = np.zeros((students, cur.n_skills))
    for s in range(students):
        practice = np.bincount(sim.skills[s], minlength=cur.n_skills)
        gain = cur.skill_gain * np.minimum(practice, cur.max_practice)
        logit = sim.ability[s] + gain - cur.skill_difficulty
        mastery[s] = 1.0 / (1.0 + np.exp(-logit))
    skills = [
        {"id": sk.id, "name_zh": sk.name_zh, "name_en": sk.name_en,
         "mastery_mean": round(float(mastery[:, k].mean()), 4), "students": students,
         "below_threshold": int((mastery[:, k] < MASTERY_THRESHOLD).sum()),
         # every student of the lesson has answered on its skills
         "assessed": students, "assessed_mean": round(float(mastery[:, k].mean()), 4),
         "assessed_below_threshold": int((mastery[:, k] < MASTERY_THRESHOLD).sum())}
        for k, sk in enumerate(LESSON_SKILLS)
    ]
    order = np.argsort(mastery.mean(axis=0))
    weakest = [LESSON_SKILLS[int(k)].id for k in order[:3]]
    recommended = []
    for rank, k in enumerate(order[:3]):
        zh, en = ITEM_KINDS[rank]
        sk = LESSON_SKILLS[int(k)]
        recommended.append({"item_id": f"{sk.id}-{rank + 1:02d}", "skill_id": sk.id,
                            "title_zh": f"{sk.name_zh}·{zh}", "title_en": f"{sk.name_en}: {en}",
                            "predicted_success": round(0.62 + 0.04 * rank, 2)})
    total = students * answers_each
    per_minute = np.bincount(np.random.default_rng(seed).integers(0, 20, size=total), minlength=20)
    activity = [{"minute": LESSON_START + 60 * m, "answers": int(n)} for m, n in enumerate(per_minute)]
    return {"lesson_started": LESSON_START, "answers": total, "students": students, "suppressed": False,
            "mastery_threshold": MASTERY_THRESHOLD, "skills": skills, "weakest": weakest,
            "recommended": recommended, "activity": activity}


def attention_section(current: float | None = 0.78, faces: int = 27, low: bool = False) -> dict[str, Any]:
    means = [0.86, 0.83, 0.81, 0.74, 0.69, 0.45, 0.41, 0.38, None, 0.72, 0.79, 0.8, 0.77, 0.81]
    timeline = []
    for i, mean in enumerate(means):
        start = LESSON_START + 60 * i
        suppressed = mean is None
        timeline.append({"start": start, "end": start + 60, "attentive_mean": mean,
                         "attentive_p10": None if suppressed else round(mean - 0.18, 2),
                         "attentive_median": None if suppressed else round(mean + 0.02, 2),
                         "faces_mean": 1.6 if suppressed else 26.4, "faces_max": 2 if suppressed else 28,
                         "frames": 300, "low": (mean is not None and mean < 0.5), "suppressed": suppressed})
    return {"current_share": current, "faces": faces, "window_s": 60.0, "low_attention": low,
            "timeline": timeline, "camera": {"state": "running", "fps": 5.0, "detail": ""},
            "pose_method": "fsanet"}


def health_section() -> dict[str, Any]:
    return {"state": "degraded",
            "components": [{"name": "kt", "ok": True, "detail": ""},
                           {"name": "vision", "ok": True, "detail": ""},
                           {"name": "sync", "ok": False,
                            "detail": "broker mqtt.school.example:8883 refused TLS"}],
            "engines": [{"name": "face", "backend": "tensorrt", "precision": "fp16", "fallback": None},
                        {"name": "pose", "backend": "tensorrt", "precision": "fp16", "fallback": None},
                        {"name": "kt-step", "backend": "onnxruntime", "precision": "fp32",
                         "fallback": "TensorRT engine build failed: out of workspace"}]}


def sync_section(now: float) -> dict[str, Any]:
    return {"connected": False, "backlog": 142, "oldest_age_s": 1260.0, "last_success": now - 1300.0,
            "drops": {"max_age": 0}, "detail": "TLS handshake failed: certificate expired"}


def device_section() -> dict[str, Any]:
    return {"source": "sysfs", "gpu_load": 0.37, "gpu_memory_bytes": 1_288_490_188,
            "temperatures": {"cpu": 58.5, "gpu": 56.0, "soc0": 57.2}, "power_w": {"VDD_IN": 9.8},
            "detail": ""}


def fill_board(board: LiveBoard, now: float) -> None:
    board.publish("attention", attention_section())
    board.publish("learning", learning_section())
    board.publish("health", health_section())
    board.publish("sync", sync_section(now))
    board.publish("device", device_section())
