"""The analysis side: detect -> pose -> attentive flags per frame, and the loop that paces it.

:class:`FrameAnalyser` is synchronous and thread-agnostic (the CLI uses it directly). :class:`AttentionLoop`
is the analysis thread: it takes the camera's newest frame at ``analysis_fps``, analyses it, feeds the
tracker and window aggregator, and hands closed windows to a sink (the outbox). Frames and crops never
leave this thread's stack: only counts and shares go anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError, EngineError
from edge_agent.inference.guarded import GuardedEngine
from edge_agent.telemetry import metrics
from edge_agent.vision.attention import (
    AttentionRules,
    FaceTracker,
    LiveShare,
    WindowAggregator,
    is_attentive,
)
from edge_agent.vision.camera import Camera
from edge_agent.vision.camera_hours import CameraHours, board_clock, opening_text
from edge_agent.vision.pose import Pose, PoseEstimator
from edge_agent.vision.yunet import Face, YuNetDetector

log = logging.getLogger(__name__)


FPS_WINDOW_S = 10.0  # the recent past the analysis rate is measured over
MAX_FRAME_WAIT_S = 0.25  # a frame due just after the tick, waited for (AttentionLoop._run)
PAUSE_MOVED_S = 60.0  # a pause's end in the board's time moved this far: the clock was stepped
CLOCK_STEP_S = 10.0  # the wall clock this far off the monotonic one between two windows: stepped (NTP)
LESSON_GAP_S = 600.0  # kt.lesson_gap_s's default: a break this long without windows ends the lesson
KEEP_OPEN_WINDOW_EVERY_S = 15.0  # the open window's frames handed to on_open_window (the store) this often


def this_lesson(windows: Sequence[dict[str, Any]], gap_s: float, now: float) -> list[dict[str, Any]]:
    """The windows since the last break longer than ``gap_s``, oldest first; none when the last measured
    window ended longer than that before ``now``. A break is a stretch with no window (the camera closed,
    the daemon down, the night) or only windows with too few faces to measure (``suppressed``: an empty
    room); the lesson starts with its first measured window. A window
    that starts after the one following it (the clock stepped back, by NTP after a boot) ends the lesson
    too: the page places bars by time, and those stamped ahead stood after the newer ones.

    The timeline keeps 120 windows (2 h at 60 s) and a restart reloads them: without this the first lesson
    of a morning showed the evening before, and its summary named a low point from before a closure. With
    the camera on all day, empty-room windows came through every break, and the chart held the last 2 h of
    lessons and breaks (a review: "lowest 86 % at 07:03", a moment of the lesson before)."""
    kept: list[dict[str, Any]] = []
    measured_after = now  # the start of the earliest measured window kept (or now)
    next_start: float | None = None  # the start of the window after: a clock stepped back if it is earlier
    for window in reversed(windows):
        measured = not window.get("suppressed")
        if next_start is not None and window["start"] > next_start:
            break
        if measured and measured_after - window["end"] > gap_s:
            break
        kept.append(window)
        next_start = window["start"]
        if measured:
            measured_after = window["start"]
    while kept and kept[-1].get("suppressed"):  # the lesson starts with its first measured window
        kept.pop()
    kept.reverse()
    return kept


def _moved(window: dict[str, Any], step: float) -> dict[str, Any]:
    return {**window, "start": window["start"] + step, "end": window["end"] + step}


@dataclass(frozen=True)
class FaceResult:
    face: Face
    pose: Pose
    attentive: bool


class FrameAnalyser:
    """One frame -> faces with pose and attentive flag; records stage latencies."""

    def __init__(self, detector: YuNetDetector, pose: PoseEstimator, rules: AttentionRules) -> None:
        self.detector = detector
        self.pose = pose
        self.rules = rules
        self._face_name = detector.engine.model_name
        # Engines from edge_agent.inference come wrapped in GuardedEngine, which observes its own "infer"
        # latency; observing it here too would count each call twice.
        self._face_guarded = isinstance(detector.engine, GuardedEngine)
        engines = getattr(pose, "engines", [])
        self._pose_guarded = bool(engines) and all(isinstance(e, GuardedEngine) for e in engines)

    def detect(self, image: np.ndarray) -> list[Face]:
        t0 = time.perf_counter()
        blob, w, h, sx, sy = self.detector.prepare(image)
        t1 = time.perf_counter()
        outputs = self.detector.run(blob)
        t2 = time.perf_counter()
        faces = self.detector.postprocess(outputs, w, h, sx, sy)
        latency = metrics.INFERENCE_LATENCY
        latency.labels(self._face_name, "pre").observe(t1 - t0)
        latency.labels(self._face_name, "post").observe(time.perf_counter() - t2)
        if not self._face_guarded:
            latency.labels(self._face_name, "infer").observe(t2 - t1)
        return faces

    def estimate(self, image: np.ndarray, faces: list[Face]) -> list[Pose]:
        if not faces:
            return []
        t0 = time.perf_counter()
        poses = self.pose.estimate(image, faces)
        if not self._pose_guarded:
            elapsed = time.perf_counter() - t0
            metrics.INFERENCE_LATENCY.labels(f"pose-{self.pose.method}", "infer").observe(elapsed)
        return poses

    def analyse(self, image: np.ndarray) -> list[FaceResult]:
        """Every face with a fresh pose (the CLI, tests)."""
        faces = self.detect(image)
        poses = self.estimate(image, faces)
        return [FaceResult(f, p, is_attentive(p, self.rules)) for f, p in zip(faces, poses, strict=True)]

    def analyse_tracked(self, image: np.ndarray, tracker: FaceTracker, refresh_frames: int = 1) -> list[bool]:
        """Smoothed attentive flags; a tracked face's pose is re-estimated every ``refresh_frames`` frames.

        Head pose changes slowly against a 60 s window, and pose is the costly stage on a full room
        (one network call per face), so refreshing each face every few frames cuts it proportionally.
        """
        faces = self.detect(image)
        tracks = tracker.assign([f.box for f in faces])
        stale = [i for i, t in enumerate(tracks) if t.needs_pose(refresh_frames)]
        fresh = dict(zip(stale, self.estimate(image, [faces[i] for i in stale]), strict=True))
        for i, track in enumerate(tracks):
            track.set_pose(fresh.get(i))
        flags = [t.pose is not None and is_attentive(t.pose, self.rules) for t in tracks]
        return tracker.record(tracks, flags)


Sink = Callable[[dict[str, Any]], None]


class AttentionLoop:
    """The analysis thread. ``on_window`` gets each closed window; ``on_live`` the live section."""

    def __init__(
        self,
        camera: Camera,
        analyser: FrameAnalyser,
        tracker: FaceTracker,
        windows: WindowAggregator,
        *,
        analysis_fps: float = 5.0,
        on_window: Sink,
        on_live: Sink | None = None,
        beat: Callable[[], None] = lambda: None,
        live_every_s: float = 1.0,
        timeline_max: int = 120,
        lesson_gap_s: float = LESSON_GAP_S,
        pose_refresh_frames: int = 1,
        hours: CameraHours | None = None,
        local_now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_pause_moved: Callable[[datetime | None, float], None] | None = None,
        on_open_window: Sink | None = None,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        self.camera = camera
        # whether the board's clock is known to be right (the daemon: ClockSyncFlag): the hours are judged
        # on it, and a board booted on the time saved at its last shutdown keeps the camera closed all
        # morning; True (set on the analysis thread) while the hours keep it closed on such a clock
        self.clock_synced = clock_synced
        self.hours_on_unsynced_clock = False
        self.on_open_window = on_open_window  # the open window's frames so far, to be stored (a power cut)
        self._kept_open = monotonic()
        self._windows_lock = threading.Lock()  # the analysis thread's adds and stores against stop's flush
        self._flushed = False
        self.monotonic = monotonic
        self.on_pause_moved = on_pause_moved  # the pause ended by itself, or its end moved with the clock
        self.hours = hours  # None: the camera may always run
        self.local_now = local_now or board_clock("")  # the board's time (device.timezone), for the hours
        self.closed_until: datetime | None = None  # set while the camera is closed by its hours or a pause
        self.paused_until: datetime | None = None  # a teacher's pause (pause()), in the board's time
        # ... and its end on the monotonic clock, which decides: on the wall clock a forward NTP step ended
        # a 45-minute pause at once (camera back on mid-lesson) and a step back made it last days
        self._pause_ends: float | None = None
        # the _pause_ends of a pause restored on a clock not yet synchronised (restore_pause): judged on the
        # wall clock until it is, as saved; from-now on that clock is the clock's error (hours to years)
        self._pause_on_wall: float | None = None
        self.analyser = analyser
        self.tracker = tracker
        self.windows = windows
        self.period = 1.0 / analysis_fps
        self.on_window = on_window
        self.on_live = on_live
        self.beat = beat
        self.live_every_s = live_every_s
        self.pose_refresh_frames = pose_refresh_frames
        self.timeline: deque[dict[str, Any]] = deque(maxlen=timeline_max)
        # (wall, monotonic) at the last window into the timeline: a clock stepped since then moves the
        # timeline onto the new clock, and "now" for it runs on the monotonic clock from there
        self._timeline_clock = (time.time(), time.monotonic())
        # the timeline's first windows, stamped before this run (the history, a window open at a power cut):
        # a step this run sees is no step of their clock, and they stay where they are
        self._stamped_before = 0
        # Longer than a window, or the gap between two windows' ends would cut every lesson at each one.
        self.lesson_gap_s = max(lesson_gap_s, 2 * windows.window_s)
        self.error: str | None = None
        self.live = LiveShare(min_faces=windows.min_faces)
        self._analysed_at: deque[float] = deque(maxlen=20)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seq = 0
        self._last_live = 0.0
        self._opened = False  # the camera opened again (hours, a pause): its first frame is shown at once

    def start(self) -> None:
        self._stop.clear()
        self._flushed = False
        self._thread = threading.Thread(target=self._run, name="attention-analysis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._windows_lock:  # a thread that outlived the join adds and stores nothing after this
            self._flushed = True
            closed = self.windows.flush()
        if closed is not None:
            self._emit(closed)

    def fps(self) -> float:
        """Frames analysed per second over the last ``FPS_WINDOW_S``: 0 once frames stop coming (the
        gauge froze at the last rate while a camera was gone)."""
        now = time.monotonic()
        times = [t for t in self._analysed_at if now - t <= FPS_WINDOW_S]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def closed_text(self, until: datetime) -> str:
        """Why the camera is closed and until when, in the board's time."""
        opens = opening_text(until, self.local_now())
        if self.paused_until is not None:
            return f"paused by the teacher; opens {opens}"
        return f"outside camera.active_hours or on camera.closed_dates; opens {opens}"

    def closed(self) -> datetime | None:
        """Until when the camera is closed by its hours or a pause; None while it runs or opens again. A
        resume is the camera opening at once, not "outside camera.active_hours" until the next tick, and a
        pause is the camera closed at once, not "stopped" while it closes (a review: the page said the board
        was restarting and listed a camera fault for IT for a second). (Not through _paused(): this runs on
        the web's threads, and that one may write the pause file.)"""
        until = self.closed_until
        if self.paused_until is not None:
            return until or self._opens_after(self.local_now(), self.paused_until)
        if until is None:
            return until
        return until if self.hours is not None and not self.hours.is_open(self.local_now()) else None

    def camera_wanted(self) -> bool:
        """Whether the camera's hours (and no pause) allow it to run now."""
        return self._paused() is None and (self.hours is None or self.hours.is_open(self.local_now()))

    def pause(self, until: datetime | None) -> None:
        """A teacher's pause until ``until`` (aware), or None to resume: the camera closes as outside its
        hours, from the loop's next tick. It lasts as long as ``until`` is from now, whatever the wall clock
        does meanwhile."""
        ends = None if until is None else self.monotonic() + (until - self.local_now()).total_seconds()
        self.paused_until, self._pause_ends = until, ends

    def restore_pause(self, until: datetime) -> None:
        """A teacher's pause kept across a restart (its end in wall time, as saved). On a clock known to be
        right it lasts as long as ``until`` is from now, as :meth:`pause`. On one not yet synchronised (no RTC
        battery: booted on the time saved at a power cut, or the build date) that is the clock's error too (a
        review: a 45-minute pause kept the camera closed 4 h past its end once NTP stepped the clock), so the
        pause holds while the wall clock is before ``until``, and once the clock is synchronised it ends if
        that is past, or lasts the rest on the monotonic clock from then."""
        self.pause(until)
        self._pause_on_wall = None if self.clock_synced() else self._pause_ends

    def pause_ends(self) -> float | None:
        """The running pause's end on the monotonic clock (None: none runs): which pause a change is of."""
        return self._pause_ends

    def _paused(self) -> datetime | None:
        """The pause's end in the board's time now (it follows a stepped clock), or None when none runs."""
        ends, until = self._pause_ends, self.paused_until
        if ends is None or until is None:
            return None
        if ends is self._pause_on_wall:
            wall_left = (until - self.local_now()).total_seconds()
            if wall_left > 0 and not self.clock_synced():
                return until  # on the wall clock: it follows a step, never opening before ``until``
            if self._pause_ends is not ends:  # a pause or a resume set meanwhile: the next tick judges it
                return self.paused_until
            self._pause_on_wall = None
            self._pause_ends = ends = self.monotonic() + max(wall_left, 0.0)
        left = ends - self.monotonic()
        if left <= 0:
            if self._pause_ends is ends:  # not a new pause set meanwhile
                self.paused_until = self._pause_ends = None
                if self.on_pause_moved is not None:
                    self.on_pause_moved(None, ends)
            return None
        moved = self.local_now() + timedelta(seconds=left)
        if self._pause_ends is ends:
            self.paused_until = moved
            if self.on_pause_moved is not None and abs((moved - until).total_seconds()) > PAUSE_MOVED_S:
                self.on_pause_moved(moved, ends)
        return moved

    def _follow_hours(self) -> bool:
        """Open or close the camera at the edges of its hours and of a pause; True while it is closed."""
        if self.hours is None and self.paused_until is None and self.closed_until is None:
            return False
        now = self.local_now()
        paused = self._paused()
        hours_open = self.hours is None or self.hours.is_open(now)
        if hours_open and paused is None:
            self.hours_on_unsynced_clock = False
            if self.closed_until is not None or (self.hours is not None and not self.camera.started):
                self.closed_until = None
                log.info("camera hours begin, or the pause ended: opening the camera")
                self.camera.start()
                self._opened = True
            return False
        if self.closed_until is None:
            why = "paused by the teacher" if paused else "outside camera.active_hours or camera.closed_dates"
            log.info("%s: closing the camera", why)
            self.camera.stop()
            with self._windows_lock:
                closed = self.windows.flush()
            if closed is not None:
                self._emit(closed)
            self.tracker.clear()  # tomorrow's faces are not today's tracks
            self.live.clear()
            metrics.CAMERA_FPS.set(0.0)
        # Every tick, not only at the close: when NTP steps the clock meanwhile, the time shown follows it.
        self.closed_until = self._opens_after(now, paused)
        self._note_clock(by_hours=paused is None, now=now)
        return True

    def _note_clock(self, *, by_hours: bool, now: datetime) -> None:
        """While the hours keep the camera closed on a clock not known to be right, said once a period (a
        review: a board booted at Monday 07:50 on Friday 17:45's saved time, NTP blocked, kept the camera
        closed all day with health OK). The camera stays closed: closing it at night is a promise, and an
        unknown clock does not say it is day."""
        unsure = by_hours and not self.clock_synced()
        if unsure and not self.hours_on_unsynced_clock:
            log.warning("camera closed by camera.active_hours judged on a clock not yet synchronised (the "
                        "board says %s); it stays closed until the clock is synchronised or says the hours "
                        "begin: check NTP (timedatectl timesync-status)", f"{now:%a %Y-%m-%d %H:%M}")
        elif by_hours and self.hours_on_unsynced_clock:  # not a pause's start: the clock is synchronised
            log.info("the clock is synchronised now: the camera stays closed by camera.active_hours (the "
                     "board says %s)", f"{now:%a %Y-%m-%d %H:%M}")
        self.hours_on_unsynced_clock = unsure

    def _opens_after(self, now: datetime, paused: datetime | None) -> datetime:
        """When the camera opens again: at the pause's end, or the next of its hours after that."""
        after = now if paused is None else max(now, paused)
        opens = after if self.hours is None or self.hours.is_open(after) else self.hours.next_open(after)
        return opens or after + timedelta(days=7)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.beat()
            if self._follow_hours():
                self._maybe_live()
                self._stop.wait(self.period)
                continue
            self.camera.check_stall()
            # A frame due any moment is waited for: a source at about the analysis rate (a folder, an IP
            # camera set to 5 frames/s) is otherwise missed whenever it comes just after the tick, and the
            # next tick finds two (4.1-4.3 of 5 frames/s analysed in the lesson benchmark). Not for longer
            # than MAX_FRAME_WAIT_S: nothing ends the wait at a stop (5 s at 0.1 frames/s, a review).
            frame = self.camera.latest(self._last_seq, wait_s=min(self.period / 2, MAX_FRAME_WAIT_S))
            got = frame is not None
            if frame is not None:
                self._last_seq = frame.seq
                self.step(frame.image, frame.captured_at)
                # analysed: not kept in this local through the night or a pause that closes the camera
                # now (a review found the last image held while the camera was closed)
                frame = None
            else:
                for closed in self.windows.expire(time.time()):
                    self._emit(closed)
                metrics.CAMERA_FPS.set(self.fps())
            # the page says "running" with the first frame, not up to live_every_s after it
            self._maybe_live(force=self._opened and got)
            self._opened = self._opened and not got
            next_tick = max(next_tick + self.period, time.monotonic())
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def step(self, image: np.ndarray, now: float) -> None:
        """Analyse one frame and update tracks and windows; an engine failure degrades, never raises."""
        if self._dropped_for_pause():  # asked while the frame was read: the pause holds from the ask
            return
        try:
            smoothed = self.analyser.analyse_tracked(image, self.tracker, self.pose_refresh_frames)
        except (EngineError, EdgeAgentError, ValueError) as exc:
            if self.error is None:
                log.error("attention analysis failed, frames are skipped until it works again: %s", exc)
            self.error = f"analysis failed: {exc}"
            metrics.CAMERA_FRAMES_DROPPED.labels("analysis_error").inc()
            return
        if self._dropped_for_pause():
            # The teacher paused during the analysis: the page says paused from the press, so a frame
            # counted after it would be the camera measuring the class after the teacher stopped it (a CI
            # run: 1 frame analysed after the page said paused)
            return
        if self.error is not None:
            log.info("attention analysis works again")
            self.error = None
        faces, attentive = len(smoothed), sum(smoothed)
        self.live.add(self.monotonic(), faces, attentive)
        metrics.CAMERA_FRAMES_ANALYSED.inc()
        self._analysed_at.append(time.monotonic())
        metrics.CAMERA_FPS.set(self.fps())
        with self._windows_lock:
            if self._flushed:  # stopped meanwhile (a stall past stop's join): its window is sent already
                return
            for closed in self.windows.add(now, faces, attentive):
                self._emit(closed)
            # under the lock: a store of the window landing after the stop's flush sent it would bring its
            # frames back after a restart, counted twice (a round-2 review, with a stall forced there)
            keep = self.on_open_window
            if keep is not None and self.monotonic() - self._kept_open >= KEEP_OPEN_WINDOW_EVERY_S:
                self._kept_open = self.monotonic()
                if (saved := self.windows.snapshot()) is not None:
                    keep(saved)

    def resume(self, saved: dict[str, Any]) -> bool:
        """Before :meth:`start`: the open window stored before a crash or a power cut goes on (True), or is
        sent now as a partial window when it is over (WindowAggregator.restore; ValueError when damaged)."""
        closed = self.windows.restore(saved, time.time())
        for window in closed:
            self._emit(window)
        self._stamped_before = len(self.timeline)  # stamped by the run before, as the history
        return not closed

    def reload_timeline(self, windows: Iterable[dict[str, Any]]) -> None:
        """Before :meth:`start`: the windows of the history, oldest first (a restart keeps the teacher's
        chart). A clock step seen later does not move them: stamped by an earlier run, on its clock."""
        self.timeline.extend(windows)
        self._stamped_before = len(self.timeline)

    def _dropped_for_pause(self) -> bool:
        """Whether a teacher's pause was asked (the loop closes the camera at its next tick): the frame in
        hand is dropped, and counted."""
        if self.paused_until is None:
            return False
        metrics.CAMERA_FRAMES_DROPPED.labels("paused").inc()
        return True

    def _emit(self, window: dict[str, Any]) -> None:
        kept = self._on_timeline_clock(window)  # first: it may replace the timeline
        if len(self.timeline) == self.timeline.maxlen and self._stamped_before:
            self._stamped_before -= 1  # the oldest goes with this append
        self.timeline.append(kept)
        try:
            self.on_window(window)
        except EdgeAgentError as exc:  # a full or broken store must not stop the analysis
            log.error("could not store an attention window: %s", exc)
        self._maybe_live(force=True)

    def _on_timeline_clock(self, window: dict[str, Any]) -> dict[str, Any]:
        """After a clock step (NTP) the timeline's windows move onto the new clock: on the old one a +3-day
        step left the teacher's timeline empty (every window "days ago"), and a step back ended the lesson
        at the step. ``window`` comes as the timeline keeps it (a copy when moved: the one sent is as
        measured)."""
        wall, mono = time.time(), time.monotonic()
        before_wall, before_mono = self._timeline_clock
        self._timeline_clock = (wall, mono)
        step = (wall - before_wall) - (mono - before_mono)
        if abs(step) <= CLOCK_STEP_S:
            return window
        log.info("the clock was stepped by %+.0f s: the attention timeline moves with it", step)
        # a new deque, not cleared and refilled: the web's threads read it meanwhile. Only this run's
        # windows: those reloaded were stamped on their run's clock (a review: Friday's, right, moved by
        # Monday morning's NTP step of +62 h and shown as Monday's lesson)
        stay = self._stamped_before
        self.timeline = deque((w if i < stay else _moved(w, step) for i, w in enumerate(self.timeline)),
                              maxlen=self.timeline.maxlen)
        # the window the step closed holds the old clock's times (WindowAggregator): moved too
        old_clock = abs(window["end"] - (wall - step)) < abs(window["end"] - wall)
        return _moved(window, step) if old_clock else window

    def timeline_now(self) -> float:
        """Now on the timeline's clock: the wall clock, unless it was stepped since the last window (then
        the timeline moves at the next one)."""
        wall, mono = self._timeline_clock
        return wall + (time.monotonic() - mono)

    def camera_state(self) -> tuple[str, str]:
        """(state, detail) of the camera as the teacher and IT see it: the grabber's, or closed, or the
        analysis's error."""
        closed_until = self.closed()
        if closed_until is not None:
            return "off_hours" if self.paused_until is None else "paused", self.closed_text(closed_until)
        if self.error is not None:
            return "error", self.error
        if self.closed_until is not None:  # resumed: the loop opens the camera at its next tick
            return "starting", ""
        return self.camera.state()

    def live_section(self) -> dict[str, Any]:
        state, detail = self.camera_state()
        closed_until = self.closed()
        # over the last seconds, by the windows' rules: too few faces give no share (it would describe
        # individuals)
        share, faces = self.live.figures(self.monotonic())
        low = self.windows.low_attention
        if state != "running":
            share, faces, low = None, 0, False  # the last numbers are stale while the camera is away
        return {
            "current_share": None if share is None else round(share, 3),
            "faces": faces,
            "window_s": self.windows.window_s,
            "low_attention": low,
            "timeline": this_lesson(list(self.timeline), self.lesson_gap_s, self.timeline_now()),
            "camera": {"state": state, "fps": round(self.fps(), 2), "detail": detail}
            | ({} if closed_until is None else {"opens_at": closed_until.timestamp()}),
            "pose_method": self.analyser.pose.method,
        }

    def _maybe_live(self, force: bool = False) -> None:
        if self.on_live is None:
            return
        now = time.monotonic()
        if force or now - self._last_live >= self.live_every_s:
            self._last_live = now
            self.on_live(self.live_section())
