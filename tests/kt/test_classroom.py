"""The class summary (pure): what the teacher view and the synced windows get of a lesson."""

from __future__ import annotations

import json
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


def test_the_teachers_lesson_keeps_its_answers_per_minute_across_a_clock_step(package: KTPackage) -> None:
    # A review: NTP stepped the clock 3 days forward mid-lesson; the chart keyed on wall-clock minutes
    # showed only the last 2 hours on the new clock: "peak 7 in 120 minutes" of 90 answers.
    probs = np.asarray(package.prior_success, dtype=np.float32)
    behind = MINUTE - 3 * 86400
    window = LessonWindow(started=behind, started_mono=1000.0)
    for n in range(83):
        window.record(f"p{n % 9}", [0], probs, behind + 20 * n, 1000.0 + 20 * n)
    step_at = 83 * 20
    for n in range(7):  # the same lesson, on the stepped clock
        window.record(f"p{n}", [0], probs, MINUTE + step_at + 10 * n, 1000.0 + step_at + 10 * n)
    view = summarize(window, package, KTSettings(), MINUTE + step_at + 80, window_s=math.inf)
    assert sum(m["answers"] for m in view["activity"]) == 90
    assert view["activity"][0]["minute"] == MINUTE and len(view["activity"]) <= 30
    assert window.started == MINUTE  # the lesson's start on the clock it ends on


def test_the_time_the_teachers_figures_were_taken_moves_with_a_clock_step(package: KTPackage) -> None:
    # A review: after NTP stepped the clock 3 h forward mid-lesson, figures taken 21 s earlier read "as of"
    # a time 3 h back (the page notes figures 120 s older than the window's end)
    probs = np.asarray(package.prior_success, dtype=np.float32)
    behind, step = MINUTE - 3 * 3600, 3 * 3600
    window = LessonWindow(started=behind, started_mono=1000.0)
    for n in range(6):
        window.record(f"p{n}", [0], probs, behind + n, 1000.0 + n)
    summarize(window, package, KTSettings(), behind + 10, window_s=math.inf)  # the figures shown: 6 students
    window.record("p0", [0], probs, behind + step + 11, 1000.0 + 11)  # the clock stepped since
    view = summarize(window, package, KTSettings(), behind + step + 21, window_s=math.inf)
    assert view["figures_at"] is not None
    assert 0 <= view["window_end"] - view["figures_at"] <= 30, view["window_end"] - view["figures_at"]


def test_the_teachers_view_changes_only_once_a_group_of_students_has_answered(package: KTPackage) -> None:
    settings = KTSettings(min_group_size=3)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE)

    def view() -> dict[str, object]:  # as the service makes it: from a copy, outside its lock
        return summarize(window.copy(), package, settings, MINUTE + 30, window_s=math.inf)

    def means(summary: dict[str, object]) -> list[float]:
        return [s["mastery_mean"] for s in summary["skills"]]  # type: ignore[attr-defined, index]

    window.record("a", [0], prior * 0.9, MINUTE + 1)
    assert view()["suppressed"]  # the lesson's first reading: one student, nothing shown
    window.record("b", [0], prior * 0.8, MINUTE + 2)
    window.record("c", [0], prior * 0.7, MINUTE + 3)
    shown = view()  # three students: shown at once, as nothing was before
    assert not shown["suppressed"] and shown["figures_students"] == 3
    window.record("d", [0], prior * 0.2, MINUTE + 4)  # a fourth student, and one answering again and again
    for n in range(5):
        window.record("a", [0], prior * (0.1 + n / 10), MINUTE + 5 + n)
    again = view()
    assert means(again) == means(shown) and again["students"] == 4 and again["figures_students"] == 3
    # since when they stand, while students have answered since (a pause is no stale figure)
    assert shown["figures_at"] is None and again["figures_at"] == MINUTE + 3
    window.record("e", [0], prior * 0.5, MINUTE + 20)  # a, d, e: three since the figures were taken
    moved = view()
    assert means(moved) != means(shown) and moved["figures_students"] == 5
    assert moved["figures_at"] is None  # taken at MINUTE + 20, nobody since
    # The synced window is the window as it is, read once when it closes.
    synced = summarize(window, package, settings, MINUTE + 30)
    assert "figures_students" not in synced and synced["students"] == 5
    window.record("a", [0], prior, MINUTE + 21)
    assert means(summarize(window, package, settings, MINUTE + 30)) != means(view())


def test_a_restart_mid_lesson_keeps_the_figures_the_view_showed(package: KTPackage) -> None:
    # Privacy review: the first reading after a restart showed the figures as they were, so a reading
    # before it and one after gave away the one student who answered between (30 skills to 0.0005)
    settings = KTSettings(min_group_size=3)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abc"):
        window.record(student, [0], prior * (0.9 - n / 10), MINUTE + 1 + n)
    shown = summarize(window.copy(), package, settings, MINUTE + 10, window_s=math.inf)
    window.record("d", [0], prior * 0.2, MINUTE + 11)  # one student answers between the two readings
    current = dict(window.probs)
    saved = json.loads(json.dumps(window.to_json(clean=True)))  # as a stop keeps it
    restored = LessonWindow.from_json(saved, current, 3, dict(window.known))
    after = summarize(restored.copy(), package, settings, MINUTE + 20, window_s=math.inf)
    assert [s["mastery_mean"] for s in after["skills"]] == [s["mastery_mean"] for s in shown["skills"]]
    assert after["figures_students"] == 3 and after["figures_at"] == MINUTE + 10 and after["students"] == 4
    # the group goes on counting from before the restart: d, then e and f make three
    for student in "ef":
        restored.record(student, [0], prior * 0.5, MINUTE + 21)
    moved = summarize(restored.copy(), package, settings, MINUTE + 30, window_s=math.inf)
    assert moved["figures_students"] == 6
    # a larger kt.min_group_size set at the restart holds from then on (round 2: the saved one did)
    lenient = LessonWindow(started=MINUTE)
    for n, student in enumerate("abc"):
        lenient.record(student, [0], prior * (0.9 - n / 10), MINUTE + 1 + n)
    summarize(lenient.copy(), package, KTSettings(min_group_size=2), MINUTE + 10, window_s=math.inf)
    lenient.record("d", [0], prior * 0.2, MINUTE + 11)
    saved_lenient = json.loads(json.dumps(lenient.to_json(clean=True)))
    stricter = LessonWindow.from_json(saved_lenient, dict(lenient.probs), 3, {})
    stricter.record("e", [0], prior * 0.5, MINUTE + 21)  # d and e since: 2, the old group, not the new 3
    held = summarize(stricter.copy(), package, settings, MINUTE + 30, window_s=math.inf)
    assert held["figures_students"] == 3
    # a record saved without figures (an earlier release), or for a model of another size: as they are
    del saved["published"]
    assert summarize(LessonWindow.from_json(saved, current, 3, {}).copy(), package, settings, MINUTE + 20,
                     window_s=math.inf)["figures_students"] == 4


def test_after_a_power_cut_figures_move_only_once_a_group_has_answered_since_the_restart(
    package: KTPackage,
) -> None:
    # A review: the lesson is saved every 15 s while the board runs; figures shown between that save and a
    # power cut are not in it. With 4 students counted since the save, the 5th's answer moved the figures
    # (shown), the board lost power, and the first answer after the restart moved them again from the
    # saved count: the two readings differed by that one student's change alone.
    settings = KTSettings(min_group_size=5)
    prior = np.asarray(package.prior_success, dtype=np.float32)

    def figures(window: LessonWindow, at: float) -> list[float]:
        return [s["mastery_mean"] for s in summarize(window.copy(), package, settings, at,
                                                     window_s=math.inf)["skills"]]

    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abcdefgh"):
        window.record(student, [0], prior * (0.9 - n / 20), MINUTE + n, known=[0])
    first = figures(window, MINUTE + 10)  # 8 students: shown at once
    for n, student in enumerate("abcd"):
        window.record(student, [0], prior * 0.3, MINUTE + 20 + n, known=[0])
    saved = json.loads(json.dumps(window.to_json()))  # the save while it runs: a, b, c and d since
    window.record("e", [0], prior * 0.4, MINUTE + 30, known=[0])
    before_cut = figures(window, MINUTE + 31)
    assert before_cut != first  # five since: taken anew, and read just before the power cut
    restored = LessonWindow.from_json(saved, dict(window.probs), 5, dict(window.known))
    assert figures(restored, MINUTE + 40) == first  # what the record holds, shown before
    for n, student in enumerate("fghi"):  # four answer after the restart: nothing moves
        restored.record(student, [0], prior * 0.6, MINUTE + 50 + n, known=[0])
        assert figures(restored, MINUTE + 51 + n) == first
    # a clean stop and start in between (an update, a config reload) keeps the caution: round 2 took the
    # figures early again after it, and one student's answer gave all their skills by difference
    restored = LessonWindow.from_json(json.loads(json.dumps(restored.to_json(clean=True))),
                                      dict(restored.probs), 5, dict(restored.known))
    assert figures(restored, MINUTE + 59) == first
    restored.record("j", [0], prior * 0.7, MINUTE + 60, known=[0])  # the fifth since the restart
    assert figures(restored, MINUTE + 61) != first
    # saved at a stop (after the last answer) the count goes on as before: d, e and a new one make 3
    clean = LessonWindow(started=MINUTE)
    for n, student in enumerate("abcdefgh"):
        clean.record(student, [0], prior * (0.9 - n / 20), MINUTE + n, known=[0])
    shown = figures(clean, MINUTE + 10)
    for n, student in enumerate("abcd"):
        clean.record(student, [0], prior * 0.3, MINUTE + 20 + n, known=[0])
    again = LessonWindow.from_json(json.loads(json.dumps(clean.to_json(clean=True))), dict(clean.probs), 5,
                                   dict(clean.known))
    again.record("e", [0], prior * 0.4, MINUTE + 30, known=[0])
    assert figures(again, MINUTE + 31) != shown


def test_after_a_power_cut_before_any_figure_was_saved_none_is_shown_until_a_group_has_answered(
    package: KTPackage,
) -> None:
    # The save came before the view's first reading; figures shown after it are not known, so the view
    # shows none until 5 students have answered since the restart (as they were, they would differ from
    # what was shown before the cut by whoever answered in between)
    settings = KTSettings(min_group_size=5)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abcdef"):
        window.record(student, [0], prior * (0.9 - n / 20), MINUTE + n, known=[0])
    saved = json.loads(json.dumps(window.to_json()))
    restored = LessonWindow.from_json(saved, dict(window.probs), 5, dict(window.known))
    view = summarize(restored.copy(), package, settings, MINUTE + 10, window_s=math.inf)
    assert view["suppressed"] and view["students"] == 6
    for n, student in enumerate("ab"):
        restored.record(student, [0], prior * 0.5, MINUTE + 20 + n, known=[0])
    assert summarize(restored.copy(), package, settings, MINUTE + 30, window_s=math.inf)["suppressed"]
    # and a clean restart in between: round 2 took the figures at the next answer after it (as for a
    # lesson's first figures), and they differed from those shown before the cut by one student
    restored = LessonWindow.from_json(json.loads(json.dumps(restored.to_json(clean=True))),
                                      dict(restored.probs), 5, dict(restored.known))
    for n, student in enumerate("cd"):
        restored.record(student, [0], prior * 0.5, MINUTE + 32 + n, known=[0])
        assert summarize(restored.copy(), package, settings, MINUTE + 35, window_s=math.inf)["suppressed"]
    restored.record("e", [0], prior * 0.5, MINUTE + 40, known=[0])
    view = summarize(restored.copy(), package, settings, MINUTE + 41, window_s=math.inf)
    assert not view["suppressed"] and view["figures_students"] == 6
    assert view["skills"][0]["assessed"] == 6


def test_a_students_first_answer_on_a_skill_does_not_move_its_figure_alone(package: KTPackage) -> None:
    # A skill's figure is the mean of the students who have answered on it. The view's figures change
    # only once kt.min_group_size students have answered since; so must the students each skill counts,
    # or d's first answer on skill 1 would add d's figure to its mean alone, readable by difference.
    settings = KTSettings(min_group_size=3)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abc"):
        window.record(student, [1], prior * (0.9 - n / 10), MINUTE + 1 + n, known=[0])
    for student in "dgh":  # three who never answered on skill 1: as many as the group, or the two sets'
        window.record(student, [0], prior * 0.2, MINUTE + 4, known=[0])  # difference would be them

    def skill_1(view: LessonWindow, at: float) -> tuple[int, float]:
        entry = summarize(view.copy(), package, settings, at, window_s=math.inf)["skills"][1]
        return entry["assessed"], entry["assessed_mean"]

    shown = skill_1(window, MINUTE + 10)
    assert shown == (3, round(float(prior[1] * 0.8), 4))  # a, b and c: 0.9, 0.8 and 0.7 of the prior
    window.record("d", [1], prior * 0.1, MINUTE + 11, known=[0, 1])
    assert skill_1(window, MINUTE + 12) == shown
    saved = json.loads(json.dumps(window.to_json(clean=True)))  # and across a restart
    restored = LessonWindow.from_json(saved, dict(window.probs), 3, dict(window.known))
    assert skill_1(restored, MINUTE + 13) == shown
    for student in "ef":  # d, e and f since: the figures move, d's included
        restored.record(student, [1], prior * 0.5, MINUTE + 14, known=[1])
    assert skill_1(restored, MINUTE + 15) != shown


def test_a_skills_figure_moves_only_once_a_group_of_its_own_students_has_answered(package: KTPackage) -> None:
    # Round 2: the class's figures moved once 5 students had answered, any skill; with 4 of them on
    # skill J, one student's first answer on K was the only change in K's figure: 0.6447 * 6 - 0.6433 * 5
    # gave their mastery on K (0.6517 against 0.6513)
    settings = KTSettings(min_group_size=5)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    k, j = 5, 7
    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abcde"):
        window.record(student, [k], prior * (0.9 - n / 20), MINUTE + n, known=[k])
    for n, student in enumerate("uvwxy"):
        window.record(student, [j], prior * 0.5, MINUTE + 10 + n, known=[j])

    def skill_k(at: float) -> tuple[int, float | None, int | None]:
        entry = summarize(window.copy(), package, settings, at, window_s=math.inf)["skills"][k]
        return entry["assessed"], entry["assessed_mean"], entry["assessed_below_threshold"]

    shown = skill_k(MINUTE + 20)
    assert shown[0] == 5 and shown[1] is not None
    for n, student in enumerate("uvwx"):  # four students answer J again: the class's figures move
        window.record(student, [j], prior * 0.7, MINUTE + 30 + n, known=[j])
    window.record("t", [k], prior * 0.2, MINUTE + 35, known=[k])  # and t's first answer on K
    assert skill_k(MINUTE + 40) == shown
    for n, student in enumerate("abcd"):  # four of K's students answer again: with t, five
        window.record(student, [k], prior * 0.6, MINUTE + 50 + n, known=[k])
    moved = skill_k(MINUTE + 60)
    assert moved[0] == 6 and moved[1] != shown[1]


def test_a_skill_answered_by_all_but_a_few_shows_the_whole_lessons_figures(package: KTPackage) -> None:
    # Round 3: five of six students had answered on A, the sixth never: the mean over the five beside the
    # mean over all six gave the sixth's mastery (6 * 0.714 - 5 * 0.7043 = 0.7625, true 0.763), on the
    # teacher view and in the window synced to the cloud
    settings = KTSettings(min_group_size=5)
    prior = np.asarray(package.prior_success, dtype=np.float32)
    window = LessonWindow(started=MINUTE)
    for n, student in enumerate("abcde"):
        window.record(student, [0], prior * (0.9 - n / 20), MINUTE + n, known=[0])
    window.record("absent", [3], prior * 0.4, MINUTE + 6, known=[3])
    for view in (math.inf, None):
        entry = summarize(window.copy(), package, settings, MINUTE + 10, window_s=view)["skills"][0]
        assert entry["assessed"] == 6 and entry["assessed_mean"] == entry["mastery_mean"]
        assert entry["assessed_below_threshold"] == entry["below_threshold"]
