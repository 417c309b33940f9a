"""The class summary (pure): what the teacher view and the synced windows get of a lesson."""

from __future__ import annotations

import math

import numpy as np

from edge_agent.config import KTSettings
from edge_agent.kt.classroom import ACTIVITY_MINUTES, LessonWindow, summarize
from edge_agent.kt.package import KTPackage

MINUTE = 1_800_000_000 // 60 * 60  # a minute's start, epoch seconds


def test_the_answers_per_minute_count_the_quiet_minutes_of_a_lesson(package: KTPackage) -> None:
    # A review: answers at 20:17, 20:18 and 20:21 came as 3 minutes, drawn side by side ("3 minutes")
    # though the lesson had run 5.
    probs = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE + 5)
    for minute, answers in ((0, 3), (1, 2), (4, 1)):
        for n in range(answers):
            window.record(f"p{n}", [0], probs, MINUTE + 60 * minute + 10 + n)
    view = summarize(window, package, KTSettings(), MINUTE + 4 * 60 + 30, window_s=math.inf)
    assert view["activity"] == [{"minute": MINUTE + 60 * m, "answers": n} for m, n in
                                enumerate([3, 2, 0, 0, 1])]
    later = summarize(window, package, KTSettings(), MINUTE + 6 * 60 + 1, window_s=math.inf)
    assert [m["answers"] for m in later["activity"]] == [3, 2, 0, 0, 1, 0, 0]  # a lull up to now
    synced = LessonWindow(started=MINUTE + 5)
    synced.record("p0", [0], probs, MINUTE + 10)
    assert summarize(synced, package, KTSettings(lesson_window_s=120.0), MINUTE + 600)["activity"] == [
        {"minute": MINUTE + 60 * m, "answers": n} for m, n in enumerate([1, 0, 0])]  # to the window's end
    # A lesson that goes on all day sends its last ACTIVITY_MINUTES minutes, not one entry a minute since
    window.record("p0", [0], probs, MINUTE + 600 * 60)
    long = summarize(window, package, KTSettings(), MINUTE + 600 * 60 + 5, window_s=math.inf)["activity"]
    assert len(long) == ACTIVITY_MINUTES and long[-1] == {"minute": MINUTE + 600 * 60, "answers": 1}
