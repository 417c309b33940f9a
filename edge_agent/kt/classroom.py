"""Class aggregates over one lesson window (pure): answer counts, mastery by skill, class recommendations.

A window opens at the first answer. The one synced closes ``lesson_window_s`` later; the one the teacher
sees is the lesson, which ends after ``lesson_gap_s`` without an answer (the break between lessons). Only
class-level numbers leave this module; a class with fewer than ``min_group_size`` students has its skill
data suppressed.

The teacher's view (read again and again during the lesson) takes its skill figures anew only once
``min_group_size`` distinct students have answered since it last did (:class:`Published`): with means
recomputed on every answer, two readings around one student's answer gave that student's whole mastery
vector (mean_after * 6 - mean_before * 5, to 0.0005), and a mean that moved right after a classmate
answered told the room whether the answer was right.

A skill's class figures that a teacher reads (``assessed_mean``, the weakest skills, class practice) are of
the students who have answered on it (their kept answers, any lesson): the model's figure for a skill a
student never answered is a guess from other skills (a review: ECE 0.151 there against 0.014 on
practised skills; angles at 52 % over 12 students of whom 4 had practised it). With fewer than
``min_group_size`` such students the skill's figure is not shown, as for a class of too few students.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.config import KTSettings
from edge_agent.kt.package import ItemInfo, KTPackage
from edge_agent.kt.recommend import ItemBank, weakest_skills

HISTOGRAM_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0000001)
CLOCK_STEP_S = 10.0  # a wall clock this far off the monotonic one within a window was stepped (NTP)
ACTIVITY_MINUTES = 120  # the answers-per-minute chart's last minutes: a double lesson and its break


@dataclass
class Published:
    """The students' success probabilities the teacher's view computes its skill figures from. The first
    summary of a window takes them as they are; after that :meth:`LessonWindow.record` takes them anew
    once ``group`` distinct students have answered since (or, while they describe too few students to be
    shown, once the window has ``group``): any change a viewer sees is the sum of at least ``group``
    students' changes. Shared by a window and its copies. :func:`summarize` (on the event loop) writes
    only while ``group`` is None, the service not having given a window its settings; after that only
    ``record`` (under the service's lock) does. ``probs`` is replaced, never changed, so a summary reads
    it without that lock."""

    group: int | None = None  # kt.min_group_size, once a summary has been made
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    since: set[str] = field(default_factory=set)  # who answered since ``probs`` was taken
    # When ``probs`` was taken: with fewer than ``group`` students still answering the figures stay as
    # they were (a second review: 80 right answers of 4 students later, the class had "not improved"),
    # and the page says since when they stand.
    at: float | None = None
    threshold: float = 0.6  # kt.mastery_threshold, with ``group``
    # Each skill's figure over the students who have answered on it (``assessed``), taken on its own: the
    # whole class's ``probs`` moved once 5 students had answered, but with 4 of them on other skills one
    # student's first answer on a skill was its figure's only change, readable by difference (round 2:
    # 0.6517 from two readings, 0.6513 true). A skill's figure is taken anew once ``group`` of its
    # students have answered since (``skill_since``), or when it first describes ``group`` of them.
    skills: dict[int, SkillFigure] = field(default_factory=dict)
    skill_since: dict[int, set[str]] = field(default_factory=dict)
    members: dict[int, set[str]] = field(default_factory=dict)  # who has answered on each skill, now
    # Restored from a record saved while the board ran (every 15 s), not at a stop: figures may have been
    # shown after it that it does not hold, so the group counts again from the restart, with no figure
    # taken early (a review: a power cut 1 s after a publish, and one student's answer after the restart
    # moved the figures shown before the cut alone). For the rest of the lesson, across clean restarts
    # too (round 2: a stop in between forgot it, and the next answer gave one student's 28 skills).
    after_cut: bool = False
    # The class figures as published when students in ``probs`` were erased since it was taken: shown as
    # they are until ``probs`` is taken anew (a group has answered since). Dropping the students at once
    # gave their figure on every skill by difference (a round-2 review: 0.4790 from two readings, 0.4793
    # true). Class means and counts only: nothing of the erased students is kept apart. Never saved: beside
    # the others' ``probs`` in the lesson record the mean gave the erased student's 30 skills (a review:
    # N x mean - the others' sum, to 2e-06) from the database file. While figures over an erased student
    # stand (``holds_erased``), the record is saved without them, to be taken anew after a restart.
    frozen: Frozen | None = None
    # The skills whose figure in ``skills`` was taken over students since erased: beside the others'
    # ``probs`` it gave the erased one's figure on it by difference, as ``frozen``
    erased_in: set[int] = field(default_factory=set)

    @property
    def holds_erased(self) -> bool:
        """Whether a figure shown was taken over a student since erased: then none is saved."""
        return self.frozen is not None or bool(self.erased_in)

    def note(self, student: str, current: dict[str, np.ndarray], known: dict[str, frozenset[int]],
             now: float) -> None:
        self.since.add(student)
        group = self.group
        if group is None:
            return
        # Early only while nothing of the figures was shown: figures frozen at an erase were (a review: a
        # new student's first answer after one of 5 was erased gave the erased one's figures, to 0.0004).
        early = not self.after_cut and (self.frozen is None or self.frozen.students < group)
        if len(self.since) >= group or (early and len(self.probs) < group <= len(current)):
            self.probs, self.since, self.at, self.frozen = dict(current), set(), now, None
        due = []
        for k in known.get(student, ()):
            self.members.setdefault(k, set()).add(student)
            since = self.skill_since.setdefault(k, set())
            since.add(student)
            figure = self.skills.get(k)
            hidden = figure is None or figure.students < group
            if len(since) >= group or (hidden and not self.after_cut and len(self.members[k]) >= group):
                due.append(k)
        if due:
            skills = dict(self.skills)  # replaced, never changed: summaries read it without the lock
            for k in due:
                skills[k] = skill_figure(current, known, k, self.threshold)
                self.skill_since[k] = set()
                self.erased_in.discard(k)
            self.skills = skills

    def figures(self, current: dict[str, np.ndarray], known: dict[str, frozenset[int]], group: int,
                threshold: float, now: float) -> dict[str, np.ndarray]:
        """What the view shows from; ``current`` and ``known``: the window's now."""
        if self.group is None:  # nothing of this window shown yet
            self.group, self.threshold = group, threshold
            if self.after_cut:  # or nothing known of what was: none until a group has answered since
                self.retake_skills(current, known, figures=False)
                return self.probs
            self.probs, self.since, self.at, self.frozen = dict(current), set(), now, None
            self.retake_skills(current, known)
        return self.probs

    def forget(self, students: set[str]) -> None:
        """Under the service's lock: an erased student's entries go. The skill figures already taken stay:
        they are class-level, as the windows already sent are; so are the class figures published from
        ``probs`` (``frozen``, which :meth:`LessonWindow.forget` takes) until they are taken anew."""
        self.erased_in.update(k for k, who in self.members.items() if k in self.skills and who & students)
        self.probs = {s: p for s, p in self.probs.items() if s not in students}
        self.since -= students
        for who in (*self.skill_since.values(), *self.members.values()):
            who.difference_update(students)

    def count_afresh(self) -> None:
        """After a restart that may have lost figures shown: see ``after_cut``."""
        self.since, self.skill_since, self.after_cut = set(), {}, True

    def retake_skills(self, current: dict[str, np.ndarray], known: dict[str, frozenset[int]], *,
                      figures: bool = True) -> None:
        """Every skill's figure from ``current`` (the first summary, a restored record without them, a
        model swap: every student changes at once); without ``figures``, only who answered on each."""
        members: dict[int, set[str]] = {}
        for student, skills in known.items():
            if student in current:
                for k in skills:
                    members.setdefault(k, set()).add(student)
        self.members, self.skill_since = members, {}
        if figures:
            self.skills = {k: skill_figure(current, known, k, self.threshold) for k in members}
            self.erased_in = set()


@dataclass(frozen=True)
class Frozen:
    """Class figures over ``students`` students: per skill the mean, how many under the threshold and
    the histogram, as :func:`summarize` computes them; and the counts shown beside them: the lesson's
    students (``lesson``), who practised each skill in it (``practised``) and who has answered on it
    (``members``; None: not known, those now). Dropping an erased student from the counts at once told
    which skills they had practised."""

    students: int
    mean: np.ndarray
    below: list[int]
    histograms: list[list[int]]
    lesson: int
    practised: dict[int, int]
    members: dict[int, int] | None

    @classmethod
    def of(cls, probs: dict[str, np.ndarray], threshold: float, lesson: int, practised: dict[int, int],
           members: dict[int, int] | None) -> Frozen:
        if not probs:
            return cls(0, np.zeros(0), [], [], lesson, practised, members)
        matrix = np.stack(list(probs.values()))
        return cls(len(probs), matrix.mean(axis=0), (matrix < threshold).sum(axis=0).tolist(),
                   skill_histograms(matrix).tolist(), lesson, practised, members)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Frozen:
        """As a release before 2026-12-06 saved it (none is saved now: ``Published.frozen``); raises
        KeyError, TypeError or ValueError on a damaged record."""
        mean = np.asarray(data["mean"], dtype=np.float64)
        below = [int(n) for n in data["below"]]
        histograms = [[int(n) for n in h] for h in data["histograms"]]
        bins = len(HISTOGRAM_BINS) - 1
        if (mean.ndim != 1 or not mean.size == len(below) == len(histograms) or not np.all(np.isfinite(mean))
                or any(len(h) != bins for h in histograms)):
            raise ValueError("damaged published figures")
        members = data.get("members")
        return cls(int(data["students"]), mean, below, histograms, int(data["lesson"]),
                   {int(k): int(n) for k, n in data["practised"].items()},
                   None if members is None else {int(k): int(n) for k, n in members.items()})


@dataclass(frozen=True)
class SkillFigure:
    students: int  # who have answered on the skill
    mean: float  # their mean success probability on it
    below: int  # how many of them under kt.mastery_threshold


def skill_figure(current: dict[str, np.ndarray], known: dict[str, frozenset[int]], k: int,
                 threshold: float) -> SkillFigure:
    values = [float(probs[k]) for student, probs in current.items()
              if k in known.get(student, ()) and 0 <= k < probs.size]
    return SkillFigure(len(values), sum(values) / len(values) if values else 0.0,
                       sum(v < threshold for v in values))


@dataclass
class LessonWindow:
    started: float
    answers: int = 0
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # pseudonym -> latest per-skill success
    practised: dict[int, set[str]] = field(default_factory=dict)  # skill -> pseudonyms who answered on it
    activity: dict[int, int] = field(default_factory=dict)  # minute start (epoch) -> answers
    last: float = 0.0  # when the latest answer came
    published: Published = field(default_factory=Published)  # for the teacher's view
    # The same two on the monotonic clock, which decide (None: restored after a restart, the wall clock
    # does): on the wall clock NTP stepping it forward mid-lesson read as a break
    started_mono: float | None = None
    last_mono: float | None = None
    # pseudonym -> the skills the student has answered, in any lesson (their kept answers)
    known: dict[str, frozenset[int]] = field(default_factory=dict)
    seq: int = 0  # the number of the latest answer in it (the service's journal of answers)

    def record(self, student: str, skills: list[int], probs: np.ndarray, now: float,
               mono: float | None = None, *, known: Iterable[int] | None = None,
               publish: bool = True) -> None:
        """``known``: the skills the student has answered so far, this answer's included (None: those
        recorded here). Without ``publish`` (an answer from before a restart, added again) it counts toward
        no figure: one shown before the restart may hold it."""
        if mono is not None and self.last_mono is not None:
            step = (now - self.last) - (mono - self.last_mono)
            if abs(step) > CLOCK_STEP_S:  # the wall clock was stepped since the last answer (NTP)
                self._follow_step(step)
        self.answers += 1
        self.last, self.last_mono = now, mono
        self.probs[student] = probs
        for k in skills:
            self.practised.setdefault(k, set()).add(student)
        self.known[student] = frozenset(skills).union(
            self.known.get(student, ()) if known is None else known)
        minute = int(now // 60 * 60)
        self.activity[minute] = self.activity.get(minute, 0) + 1
        if len(self.activity) > 2 * ACTIVITY_MINUTES:
            # Only the chart's minutes are read: a lesson never ended by a break (a practice kiosk
            # answering every few minutes) kept every minute, and its record, saved every 15 s, grew 80 KB
            # a month (a review).
            oldest = max(self.activity) - 60 * ACTIVITY_MINUTES
            self.activity = {m: n for m, n in self.activity.items() if m > oldest}
        if publish:
            self.published.note(student, self.probs, self.known, now)

    def forget(self, students: set[str]) -> None:
        """Under the service's lock: the erased ``students``' entries go; the window's counts (answers,
        activity) stay, holding no student. Once the view has shown the lesson, its figures and counts stay
        as published until taken anew (``Published.frozen``)."""
        shown = self.published
        held = set(self.probs).union(shown.probs, *self.practised.values(), *shown.members.values())
        if shown.frozen is None and shown.group is not None and students & held:
            shown.frozen = Frozen.of(shown.probs, shown.threshold, len(self.probs), _counts(self.practised),
                                     _counts(shown.members))
        for student in students:
            self.probs.pop(student, None)
            self.known.pop(student, None)
        for who in self.practised.values():
            who.difference_update(students)
        self.published.forget(students)

    def _follow_step(self, step: float) -> None:
        """The lesson's minutes, start and figures' time moved onto the stepped clock: on the old one, after a
        +3-day step the chart's last ACTIVITY_MINUTES held none of the 83 answers before it ("peak 7" of 90
        answers, a review). Only the teacher's lesson sees it: a synced window the clock was stepped in closes
        first (:meth:`due`), so its minutes and times stay those of one clock."""
        moved: dict[int, int] = {}
        for minute, answers in self.activity.items():
            key = int((minute + step) // 60 * 60)
            moved[key] = moved.get(key, 0) + answers
        self.activity = moved
        self.started += step
        if self.published.at is not None:  # else figures taken 21 s ago read "as of" 3 h back (a review)
            self.published.at += step

    def due(self, now: float, window_s: float, mono: float | None = None) -> bool:
        if mono is not None and self.started_mono is not None:
            # A window the clock was stepped in closes at the step: its start and end are wall times, and
            # across a step it claimed 300 s and held 3 h of answers (or ended before it started)
            stepped = abs((now - self.started) - (mono - self.started_mono)) > CLOCK_STEP_S
            return stepped or mono >= self.started_mono + window_s
        # A clock stepped back by more than a window (an RTC that ran ahead, then NTP) would otherwise
        # keep this window open, unsent, until the clock caught up with it: hours or days.
        return now >= self.started + window_s or now < self.started - window_s

    def idle(self, now: float, gap_s: float, mono: float | None = None) -> bool:
        if mono is not None and self.last_mono is not None:
            return mono >= self.last_mono + gap_s
        return now >= self.last + gap_s or now < self.last - gap_s

    def to_json(self, *, clean: bool = False) -> dict[str, Any]:
        """Who answered, on what and when (their current probabilities are kept per student in the store),
        and the figures the view shows with who answered since: without them a reading before a restart
        and one after it gave away one student's answers (a review: 30 skills to 0.0005). ``clean``: saved
        at a stop, after the last answer (else while answers still came: see ``Published.after_cut``).
        While a figure shown holds an erased student (``Published.holds_erased``) the figures are left out,
        and after a restart they are taken anew once a group has answered (as ``after_cut``)."""
        return self.record_copy(clean=clean)()

    def record_copy(self, *, clean: bool = False) -> Callable[[], dict[str, Any]]:
        """:meth:`to_json` in two steps: what it reads is copied now, under the caller's lock (a few ms at
        10,000 students), and the record is made when the result is called, outside it: its sorting and
        rounding took 125 ms under the service's lock at 10,000 students, which the 15-s save held the
        event loop for (a review: the whole HTTP server stalled 0.2 s every 15 s, 2.7 s at 100,000)."""
        scalars = {"clean": clean, "seq": self.seq, "started": self.started, "answers": self.answers,
                   "last": self.last}
        students = list(self.probs)
        practised = [(k, list(who)) for k, who in self.practised.items()]
        activity = list(self.activity.items())
        shown = self.published
        after_cut = shown.after_cut or shown.holds_erased
        published: dict[str, Any] | None = None
        if shown.group is not None and not shown.holds_erased:
            # ``probs`` and ``skills`` are replaced, never changed; the sets are changed by the next answer
            published = {
                "group": shown.group, "at": shown.at, "since": list(shown.since), "probs": shown.probs,
                "threshold": shown.threshold, "skills": shown.skills,
                "skill_since": [(k, list(who)) for k, who in shown.skill_since.items()],
                "members": _counts(shown.members),
            }

        def make() -> dict[str, Any]:
            data: dict[str, Any] = scalars | {
                "students": sorted(students),
                "practised": {str(k): sorted(who) for k, who in practised},
                "activity": {str(m): n for m, n in activity},
            }
            if after_cut:
                data["after_cut"] = True
            if published is not None:
                data["published"] = {
                    "group": published["group"], "at": published["at"], "since": sorted(published["since"]),
                    # tolist: Python floats equal to float(p), made at C speed
                    "probs": {s: [round(p, 6) for p in v.tolist()] for s, v in published["probs"].items()},
                    "threshold": published["threshold"],
                    "skills": {str(k): [f.students, round(f.mean, 6), f.below]
                               for k, f in published["skills"].items()},
                    "skill_since": {str(k): sorted(who) for k, who in published["skill_since"]},
                    "members": {str(k): n for k, n in published["members"].items()},  # who answered on each
                }
            return data

        return make

    @classmethod
    def from_json(cls, data: dict[str, Any], probs: dict[str, np.ndarray], group: int,
                  known: dict[str, frozenset[int]]) -> LessonWindow:
        """Rebuilt with each student's current probabilities and answered skills (``known``, from their
        kept answers) and the figures shown before the stop; raises KeyError, TypeError or ValueError on a
        damaged record. Saved by a release that kept no figures (or for a model of another size), its
        first summary shows the figures as they are. ``group``: kt.min_group_size now, which the figures
        go on with (a larger one set at the restart was ignored until the lesson ended)."""
        cut = data.get("clean") is False  # saved while the board ran: no stop came after it (releases
        # before 2026-12-04 said neither, and are taken as they are)
        students = [s for s in data["students"] if s in probs]
        window = cls(
            float(data["started"]),
            int(data["answers"]),
            {s: probs[s] for s in students},
            {int(k): set(who) for k, who in data["practised"].items()},
            {int(m): int(n) for m, n in data["activity"].items()},
            float(data["last"]),
            known={s: known.get(s, frozenset()) for s in students},
        )
        if isinstance(data.get("seq"), int):
            window.seq = data["seq"]
        shown = data.get("published")
        size = {v.size for v in probs.values()}
        if shown is not None:
            figures = {str(s): np.asarray(v, dtype=np.float32) for s, v in shown["probs"].items()}
            # as published before an erase (a release before 2026-12-05 kept none)
            frozen = None if shown.get("frozen") is None else Frozen.from_json(shown["frozen"])
            if (all(v.ndim == 1 and {v.size} == size and np.all(np.isfinite(v)) for v in figures.values())
                    and (frozen is None or not frozen.students or {frozen.mean.size} == size)):
                at = shown["at"]
                published = Published(group, figures, {str(s) for s in shown["since"]},
                                      None if at is None else float(at), float(shown.get("threshold", 0.6)))
                published.frozen = frozen
                published.retake_skills(window.probs, window.known)  # the members; and for a record of
                if "skills" in shown:  # a release before 2026-12-04, the figures as they are
                    published.skills = {int(k): SkillFigure(int(n), float(m), int(b))
                                        for k, (n, m, b) in shown["skills"].items()}
                    published.skill_since = {int(k): {str(s) for s in who}
                                             for k, who in shown["skill_since"].items()}
                window.published = published
        if cut:
            window.published.count_afresh()
        elif data.get("after_cut") is True:
            window.published.after_cut = True
        return window

    def copy(self) -> LessonWindow:
        """A snapshot to summarise outside the caller's lock (the probability arrays are never mutated)."""
        return LessonWindow(
            self.started,
            self.answers,
            dict(self.probs),
            {k: set(who) for k, who in self.practised.items()},
            dict(self.activity),
            self.last,
            self.published,  # shared: the copy's summary tells the window the group size
            self.started_mono,
            self.last_mono,
            dict(self.known),
            self.seq,
        )


def record_without(data: dict[str, Any], students: set[str]) -> dict[str, Any]:
    """A stored lesson record (:meth:`LessonWindow.to_json`) with the erased ``students`` left out. Figures
    published over them go with them (``Published.holds_erased``): the record then says to take them
    anew after a restart (``after_cut``)."""
    out = dict(data)
    if isinstance(data.get("students"), list):
        out["students"] = [s for s in data["students"] if s not in students]
    if isinstance(data.get("practised"), dict):
        out["practised"] = {k: [s for s in who if s not in students] if isinstance(who, list) else who
                            for k, who in data["practised"].items()}
    shown = data.get("published")
    if shown is not None:
        try:
            held = set(shown["probs"]).union(shown["since"], data["students"], *data["practised"].values(),
                                             *shown.get("skill_since", {}).values())
        except (KeyError, TypeError, ValueError, AttributeError):  # damaged: not restored either
            held = set(students)
        # "frozen": saved by a release before 2026-12-06 (class figures over students erased before)
        if students & held or (isinstance(shown, dict) and "frozen" in shown):
            del out["published"]
            out["after_cut"] = True
    return out


def _counts(who: dict[int, set[str]]) -> dict[int, int]:
    return {k: len(students) for k, students in who.items() if students}


def leaving_the_board(summary: dict[str, Any]) -> dict[str, Any]:
    """What of a window's summary may be synced. A suppressed window (fewer than ``min_group_size``
    students) keeps only its times and the flag: even its answer counts and minute-by-minute activity
    would describe one or two students. The teacher in the room still sees them on the board."""
    if not summary.get("suppressed"):
        return summary
    kept = ("lesson_started", "window_end", "suppressed", "partial")
    return {key: summary[key] for key in kept if key in summary}


def skill_histograms(matrix: np.ndarray) -> np.ndarray:
    """Per skill (column of [students, skills]), the students in each HISTOGRAM_BINS bin: [skills, bins].

    The counts ``np.histogram`` gives column by column for probabilities, in one pass for all skills.
    """
    edges = np.asarray(HISTOGRAM_BINS)
    bin_of = np.searchsorted(edges, matrix, side="right") - 1  # -1 or len(edges) - 1: outside every bin
    return np.stack([(bin_of == b).sum(axis=0) for b in range(edges.size - 1)], axis=1)


def items_by_skill(package: KTPackage) -> dict[int, list[ItemInfo]]:
    index = package.skill_index
    grouped: dict[int, list[ItemInfo]] = {}
    for item in package.items:
        grouped.setdefault(index[item.skill_id], []).append(item)
    return grouped


def _activity(window: LessonWindow, end: float) -> list[dict[str, int]]:
    """Answers in each minute from the window's first to ``end``'s, quiet minutes as 0: with only the
    minutes that had answers, the page drew 20:17, 20:18 and 20:21 as 3 adjacent bars and "3 minutes" of
    a 5-minute lesson. The last ACTIVITY_MINUTES only, however long the lesson."""
    minutes = [int(window.started // 60 * 60), int(end // 60 * 60), *window.activity]
    last = max(minutes)
    first = max(min(minutes), last - 60 * (ACTIVITY_MINUTES - 1))  # min: an answer before a clock step
    return [{"minute": m, "answers": window.activity.get(m, 0)} for m in range(first, last + 60, 60)]


def _assessed(window: LessonWindow, view: bool, n_skills: int, settings: KTSettings
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per skill: the students who have answered on it, their mean and how many are under the threshold
    (-1 for a skill with fewer than ``min_group_size`` of them). The synced window's from now; the
    teacher's view's as :class:`Published` last took each."""
    assessed, mean, below = np.zeros(n_skills, int), np.full(n_skills, -1.0), np.zeros(n_skills, int)
    group = settings.min_group_size
    published = window.published
    members = None if published.frozen is None else published.frozen.members  # as published before an erase
    for k in range(n_skills):
        if view:
            figure = published.skills.get(k)
            live = len(published.members.get(k, ())) if members is None else members.get(k, 0)
        else:
            figure = skill_figure(window.probs, window.known, k, settings.mastery_threshold)
            live = figure.students
        if figure is not None and figure.students >= group:
            assessed[k], mean[k], below[k] = figure.students, figure.mean, figure.below
        else:
            assessed[k] = live  # who answered, not how well: as the skill's "students"
    return assessed, mean, below


def summarize(
    window: LessonWindow | None,
    package: KTPackage,
    settings: KTSettings,
    now: float,
    window_s: float | None = None,
    *,
    bank: ItemBank | None = None,
) -> dict[str, Any]:
    """The "kt_class" outbox payload of a ``window_s`` window (default ``lesson_window_s``); with
    ``window_s`` infinite, the LiveBoard "learning" section of the lesson so far, whose skill figures are
    those :class:`Published` holds (``figures_students`` says how many students they describe)."""
    length = settings.lesson_window_s if window_s is None else window_s
    view = math.isinf(length)
    if window is None:
        return {
            "lesson_started": None,
            "answers": 0,
            "students": 0,
            "suppressed": False,
            "skills": [],
            "weakest": [],
            "recommended": [],
            "activity": [],
        }
    # not before its last answer: closed by a clock stepped back, it "ended" before it started
    end = max(window.last, min(now, window.started + length))
    group = settings.min_group_size
    figures = (window.published.figures(window.probs, window.known, group, settings.mastery_threshold, now)
               if view else window.probs)
    frozen = window.published.frozen if view else None  # as published before an erase
    described = len(figures) if frozen is None else frozen.students
    students = len(window.probs) if frozen is None else frozen.lesson
    practised_by = _counts(window.practised) if frozen is None else frozen.practised
    summary: dict[str, Any] = {
        "lesson_started": window.started,
        "window_end": end,
        "answers": window.answers,
        "students": students,
        # figures_at only while students have answered since: a pause in the lesson is no stale figure
        **({"figures_students": described,
            "figures_at": window.published.at if window.published.since else None,
            "mastery_threshold": settings.mastery_threshold} if view else {}),
        "suppressed": described < group,
        "activity": _activity(window, end),
        "skills": [],
        "weakest": [],
        "recommended": [],
    }
    if summary["suppressed"] or not described:
        return summary
    if frozen is None:
        matrix = np.stack(list(figures.values()))  # [students, skills]
        mean = matrix.mean(axis=0)
        below = (matrix < settings.mastery_threshold).sum(axis=0).tolist()
        histograms = skill_histograms(matrix).tolist()
    else:  # as published before an erase (Published.frozen)
        mean, below, histograms = frozen.mean, frozen.below, frozen.histograms
    assessed, assessed_mean, assessed_below = _assessed(window, view, len(package.skills), settings)
    shown = assessed_mean >= 0.0  # -1: too few to show
    # All but a few of the lesson's students have answered on a skill: its figures over them beside the
    # whole lesson's gave those few by difference (round 3: one absent student's mastery, 0.7625 against
    # 0.763, from one reading, and in the synced window). Then the whole lesson's figures stand for them.
    # So too when all have: the view takes a skill's figure at another answer than the class's, and over
    # the same students the two differed by the change of whoever answered in between, one student's (a
    # review: -0.094 read, -0.0937 true); taken at one moment over the same students they are equal.
    few = shown & (np.abs(described - assessed) < group)
    assessed = np.where(few, described, assessed)
    assessed_mean = np.where(few, mean, assessed_mean)
    assessed_below = np.where(few, np.asarray(below), assessed_below)
    for k, skill in enumerate(package.skills):
        summary["skills"].append(
            {
                "id": skill.id,
                "name_zh": skill.name_zh,
                "name_en": skill.name_en,
                "mastery_mean": round(float(mean[k]), 4),
                "students": practised_by.get(k, 0),
                "below_threshold": below[k],
                "histogram": histograms[k],
                "assessed": int(assessed[k]),
                "assessed_mean": round(float(assessed_mean[k]), 4) if shown[k] else None,
                "assessed_below_threshold": int(assessed_below[k]) if shown[k] else None,
            }
        )
    # The weakest of the skills practised in this window whose figure is shown: a mean over students
    # most of whom never answered a skill is the model's guess, not the class's mastery.
    practised = [k for k, n in practised_by.items() if n and shown[k]]
    weak = weakest_skills(assessed_mean, settings.weak_skills, practised)
    # Only skills the class has not mastered are called weak; practice is still recommended on the lowest.
    summary["weakest"] = [package.skills[k].id for k in weak if assessed_mean[k] < settings.mastery_threshold]
    bank = bank or ItemBank(items_by_skill(package), len(package.skills))  # the service passes its own
    practise = bank.practice_skills(assessed_mean, weak, practised)
    recs = bank.recommend(assessed_mean, practise, target=settings.target_success,
                          count=settings.recommendations)
    summary["recommended"] = [r.as_dict() for r in recs]
    return summary
