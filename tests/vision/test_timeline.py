"""The teacher's "This lesson" chart: only the windows since the last break, wherever they came from."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from edge_agent.vision import pipeline
from edge_agent.vision.attention import FaceTracker, WindowAggregator, summarise
from edge_agent.vision.pipeline import LESSON_GAP_S, AttentionLoop, this_lesson

EVENING = 1_764_086_400.0  # 2025-11-25 16:00 UTC
MORNING = EVENING + 15.5 * 3600  # the next day 07:30


def _windows(start: float, count: int, share: float = 0.8, window_s: float = 60.0) -> list[dict[str, Any]]:
    return [summarise(start + i * window_s, start + (i + 1) * window_s, [20] * 5, [share] * 5, 3)
            for i in range(count)]


def test_the_first_lesson_of_a_morning_leaves_out_the_evening_before() -> None:
    # 120 windows kept (2 h at 60 s): the morning's first lesson showed the evening's last 2 h.
    evening, morning = _windows(EVENING, 110, share=0.3), _windows(MORNING, 10)
    shown = this_lesson(evening + morning, LESSON_GAP_S, MORNING + 10 * 60 + 20)
    assert shown == morning


def test_a_closure_shorter_than_the_lesson_gap_keeps_the_lesson_and_a_longer_one_starts_a_new_one() -> None:
    before = _windows(MORNING, 20, share=0.87)
    after_2_min = _windows(MORNING + 22 * 60, 5)
    assert this_lesson(before + after_2_min, LESSON_GAP_S, MORNING + 27 * 60) == before + after_2_min
    after_11_min = _windows(MORNING + 31 * 60, 5)
    assert this_lesson(before + after_11_min, LESSON_GAP_S, MORNING + 36 * 60) == after_11_min


def test_no_window_for_longer_than_the_lesson_gap_shows_no_lesson() -> None:
    lesson = _windows(MORNING, 40)
    end = lesson[-1]["end"]
    assert this_lesson(lesson, LESSON_GAP_S, end + LESSON_GAP_S - 1) == lesson  # still the lesson's break
    assert this_lesson(lesson, LESSON_GAP_S, end + LESSON_GAP_S + 1) == []  # the camera closed, the night


def test_a_clock_stepped_back_or_a_restart_inside_a_window_keeps_the_windows() -> None:
    lesson = _windows(MORNING, 5)
    restarted = [*lesson, summarise(lesson[-1]["start"], lesson[-1]["end"], [20], [0.5], 3)]  # same start
    assert this_lesson(restarted, LESSON_GAP_S, lesson[-1]["end"] + 5) == restarted
    assert this_lesson(lesson, LESSON_GAP_S, MORNING - 3600) == lesson  # NTP stepped the clock back an hour


def test_windows_stamped_before_the_clock_was_stepped_back_are_left_out() -> None:
    # Round 2: windows stamped an hour ahead, then the ones after NTP stepped the clock back: all 25 were
    # kept and the page, placing bars by time, drew the 5 current ones first and the axis ran backwards
    ahead, after_step = _windows(MORNING + 3600, 20), _windows(MORNING, 5)
    assert this_lesson(ahead + after_step, LESSON_GAP_S, MORNING + 5 * 60 + 10) == after_step


def _empty_room(start: float, count: int, window_s: float = 60.0) -> list[dict[str, Any]]:
    return [summarise(start + i * window_s, start + (i + 1) * window_s, [1] * 5, [1.0] * 5, 3)
            for i in range(count)]


def test_with_the_camera_on_all_day_an_empty_room_longer_than_the_gap_is_a_break() -> None:
    # A review: windows with too few faces came through every break, so "This lesson" held the last 2 h
    # of lessons and breaks, and its summary named a low point of the lesson before.
    first, second = _windows(MORNING, 40, share=0.3), _windows(MORNING + 51 * 60, 5)
    long_break, short_break = _empty_room(MORNING + 40 * 60, 11), _empty_room(MORNING + 40 * 60, 5)
    assert all(w["suppressed"] for w in long_break)
    # (the lesson starts with its first measured window, not with the empty room before it)
    assert this_lesson(first + long_break + second, LESSON_GAP_S, MORNING + 56 * 60 + 5) == second
    shorter = _windows(MORNING + 45 * 60, 5)
    assert this_lesson(first + short_break + shorter, LESSON_GAP_S, MORNING + 50 * 60 + 5) \
        == first + short_break + shorter  # a room empty for 5 minutes: the same lesson
    # the room empty since the lesson ended: no lesson, however many empty windows came since
    assert this_lesson(first + long_break, LESSON_GAP_S, MORNING + 51 * 60 + 5) == []


class _Clock:
    def __init__(self, wall: float) -> None:
        self.wall, self.mono = wall, 5000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_a_clock_step_mid_lesson_moves_the_timeline_with_it_instead_of_emptying_it(monkeypatch) -> None:
    # A review: NTP stepped the clock 3 days forward mid-lesson and the teacher's timeline went empty (its
    # windows were "3 days ago"); a step back ended the lesson at the step.
    clock = _Clock(MORNING)
    monkeypatch.setattr(pipeline, "time", clock)
    camera = SimpleNamespace(state=lambda: ("running", ""))
    analyser = SimpleNamespace(pose=SimpleNamespace(method="landmarks"))
    loop = AttentionLoop(camera, analyser, FaceTracker(), WindowAggregator(), on_window=lambda _w: None)  # type: ignore[arg-type]
    for window in _windows(MORNING, 30):
        clock.tick(60.0)
        loop._emit(window)
    assert len(loop.live_section()["timeline"]) == 30
    clock.tick(20.0)
    clock.wall += 3 * 86400  # NTP
    assert len(loop.live_section()["timeline"]) == 30  # before the next window: on the monotonic clock
    closed_at_step = summarise(MORNING + 30 * 60, MORNING + 30 * 60 + 20, [20] * 5, [0.8] * 5, 3)
    loop._emit(closed_at_step)  # the window the step closed, in the old clock's times
    clock.tick(60.0)
    loop._emit(_windows(clock.wall - 60, 1)[0])
    shown = loop.live_section()["timeline"]
    assert len(shown) == 32 and shown[0]["start"] == MORNING + 3 * 86400
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(shown))
    for step in (-3 * 86400, 3600):  # a step back (an RTC that ran ahead) and a DST-like hour keep it too
        clock.wall += step
        clock.tick(60.0)
        loop._emit(_windows(clock.wall - 60, 1)[0])
        assert len(loop.live_section()["timeline"]) == len(shown) + (1 if step < 0 else 2)
