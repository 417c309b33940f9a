"""The attention daemon component: camera thread + analysis thread, windows to the outbox and live view.

Non-essential: a missing camera or a failing engine degrades health and the analysis keeps retrying; the
daemon keeps serving answers. Only the analysis thread registers a heartbeat, because it never blocks on
the camera (the grabber may sit in a blocking read of a dead stream; that shows as camera state instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from edge_agent.config import AttentionSettings, CameraSettings
from edge_agent.errors import CameraError, EdgeAgentError
from edge_agent.inference.engine import Engine
from edge_agent.lifecycle import Health, HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.provisioning.files import write_private
from edge_agent.store.db import Database, meta_object, set_meta
from edge_agent.store.history import History
from edge_agent.sync.protocol import STREAM_KINDS
from edge_agent.thread_priority import call_at_lower_priority
from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
from edge_agent.vision.camera import UNSTABLE_REOPENS, UNSTABLE_WINDOW_S, Camera, Opener
from edge_agent.vision.camera_hours import opening_text
from edge_agent.vision.pipeline import LESSON_GAP_S, AttentionLoop, FrameAnalyser
from edge_agent.vision.pose import FsaNetPose, LandmarkPose, PoseEstimator
from edge_agent.vision.yunet import YuNetDetector

log = logging.getLogger(__name__)

STREAM = "attention"
PAYLOAD_VERSION = 1
# The longest pause the teacher's API allows (web/camera_pause.py): a school day's afternoon, longer closures
# are camera.closed_dates' job; a saved pause longer than that is capped when it is loaded
MAX_PAUSE_MINUTES = 240
PRUNE_EVERY_S = 3600.0  # history keeps 14 days; a board may run for weeks between restarts


OPEN_WINDOW_KEY = "attention_open_window"  # in the store's meta table: the open window's frames so far


class OutboxLike(Protocol):
    def enqueue(self, stream: str, payload: dict[str, Any], expires_at: float | None = None,
                also: Callable[[sqlite3.Connection], object] | None = None) -> Any: ...


def _forget_open_window(start: float | None) -> Callable[[sqlite3.Connection], None]:
    """For the transaction that queues the window of ``start`` for the cloud: the frames stored of it go (a
    crash right after must not send them again); None: whatever is stored. Not those of the window after
    it, stored while this one waited in memory for a full disk (a round-2 review: cleared when this one was
    written at last, a cut then lost the next window's frames)."""

    def forget(conn: sqlite3.Connection) -> None:
        stored = meta_object(conn, OPEN_WINDOW_KEY)  # None: none, or damaged (nothing to keep)
        if start is None or stored is None or stored.get("start") == start:
            conn.execute("DELETE FROM meta WHERE key = ?", (OPEN_WINDOW_KEY,))

    return forget


def rules_from(settings: AttentionSettings) -> AttentionRules:
    return AttentionRules(
        settings.yaw_limit_deg,
        settings.pitch_limit_deg,
        settings.calibration_yaw_deg,
        settings.calibration_pitch_deg,
    )


def make_pose(settings: AttentionSettings, pose_engines: Sequence[Engine]) -> PoseEstimator:
    if settings.pose_method == "fsanet":
        return FsaNetPose(pose_engines)
    return LandmarkPose()


def window_payload(
    window: dict[str, Any],
    pose_method: str,
    class_id: str = "",
    analysis_fps: float | None = None,
    min_faces: int | None = None,
) -> dict[str, Any]:
    """The outbox row for one window: class-level numbers only."""
    keys = (
        "start",
        "end",
        "frames",
        "faces_mean",
        "faces_max",
        "attentive_mean",
        "attentive_p10",
        "attentive_median",
        "suppressed",
        "low",
    )
    payload = {key: window[key] for key in keys}
    if window.get("partial"):
        payload["partial"] = True  # cut short by a stop: fewer frames than the window's length holds
    if analysis_fps is not None:
        # what a window with the camera working all along holds: a camera out for part of it (a review:
        # 7 frames of 20 sent as a full window) shows in frames / frames_expected
        payload["frames_expected"] = round((window["end"] - window["start"]) * analysis_fps)
    if min_faces is not None:
        # the suppression rule the window was judged by: a cloud cannot know a board's config, and one set
        # lower than its policy must show (a review: a cloud built from the docs alone could not tell)
        payload["min_faces"] = min_faces
    payload.update(
        {"kind": STREAM_KINDS[STREAM], "v": PAYLOAD_VERSION, "pose_method": pose_method, "class_id": class_id}
    )
    return payload


class AttentionComponent:
    name = "attention"
    essential = False

    def __init__(
        self,
        camera_settings: CameraSettings,
        attention_settings: AttentionSettings,
        face_engine: Engine,
        pose_engines: Sequence[Engine],
        *,
        outbox: OutboxLike,
        heartbeats: HeartbeatRegistry,
        live: LiveBoard | None = None,
        opener: Opener | None = None,
        class_id: str = "",
        history: History | None = None,
        local_now: Callable[[], datetime] | None = None,
        pause_file: Path | None = None,
        lesson_gap_s: float = LESSON_GAP_S,
        monotonic: Callable[[], float] = time.monotonic,
        db: Database | None = None,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        self.clock_synced = clock_synced  # the board's clock known to be right (the daemon: the store's flag)
        self.db = db  # the open window's frames are kept there every 15 s (None: not kept)
        self.monotonic = monotonic  # what a teacher's pause lasts by (tests step the wall clock apart)
        self.lesson_gap_s = lesson_gap_s  # the timeline: windows since a break this long (kt.lesson_gap_s)
        self.camera_settings = camera_settings
        self.pause_file = pause_file  # a teacher's pause, kept across a restart (the daemon's state dir)
        self._pause_lock = threading.Lock()  # pause() runs on the web server's worker threads
        self.history = history  # so the teacher's timeline survives a restart (an update mid-lesson)
        self._pruned = time.monotonic()
        self.class_id = class_id
        self.settings = attention_settings
        self.outbox = outbox
        self.heartbeats = heartbeats
        self.live = live
        detector = YuNetDetector(
            face_engine,
            score_threshold=attention_settings.score_threshold,
            nms_threshold=attention_settings.nms_threshold,
        )
        self.analyser = FrameAnalyser(
            detector, make_pose(attention_settings, pose_engines), rules_from(attention_settings)
        )
        self.camera = Camera.from_settings(camera_settings, opener)
        self.local_now = local_now  # None: the OS zone (AttentionLoop's default)
        self.loop: AttentionLoop | None = None

    async def start(self) -> None:
        settings = self.settings
        gap = max(10.0, 5.0 / self.camera_settings.analysis_fps)
        beat = self.heartbeats.register("attention", max_gap_s=gap)
        self.loop = AttentionLoop(
            self.camera,
            self.analyser,
            FaceTracker(settings.smoothing_frames),
            WindowAggregator(
                settings.window_s,
                settings.min_faces,
                settings.low_attention_share,
                settings.low_attention_windows,
            ),
            analysis_fps=self.camera_settings.analysis_fps,
            on_window=self._store_window,
            on_live=self._publish_live if self.live is not None else None,
            beat=beat.beat,
            pose_refresh_frames=settings.pose_refresh_frames,
            hours=self.camera_settings.hours(),
            local_now=self.local_now,
            monotonic=self.monotonic,
            lesson_gap_s=self.lesson_gap_s,
            on_pause_moved=self._keep_pause if self.pause_file is not None else None,
            on_open_window=self._keep_open_window if self.db is not None else None,
            clock_synced=self.clock_synced,
        )
        paused = self._load_pause()
        if paused is not None:
            # on a clock not yet synchronised: judged on it until it is (chronyd may be asked: off the loop)
            await asyncio.to_thread(self.loop.restore_pause, paused)
            log.info("camera paused by the teacher until %s (before the restart)", f"{paused:%H:%M}")
        if self.history is not None:
            since = time.time() - self.loop.timeline.maxlen * settings.window_s  # type: ignore[operator]
            earlier = await asyncio.to_thread(self.history.recent, STREAM, since)
            self.loop.reload_timeline(row["data"] for row in earlier)  # a clock step leaves them
        if self.db is not None:
            await asyncio.to_thread(self._resume_open_window, self.loop, self.db)
        # Threads inherit the nice value of the thread that starts them (the pose pool and the capture
        # backend's threads are started later by these two).
        call_at_lower_priority(settings.nice, self._start_threads)
        log.info(
            "attention analysis started at %.1f frames/s (pose: %s)",
            self.camera_settings.analysis_fps,
            settings.pose_method,
        )

    def _start_threads(self) -> None:
        assert self.loop is not None
        if self.loop.camera_wanted():  # outside its hours the loop opens it when they begin
            self.camera.start()
        self.loop.start()

    async def stop(self) -> None:
        # Joining threads blocks: keep the event loop free while they wind down.
        if self.loop is not None:
            await asyncio.to_thread(self.loop.stop)
        await asyncio.to_thread(self.camera.stop)
        await asyncio.to_thread(self.analyser.pose.close)
        self.heartbeats.unregister("attention")
        if self.live is not None and self.loop is not None:
            section = self.loop.live_section()
            # "stopped", not "disabled": every restart, upgrade and config_reload told the teacher "the
            # camera is switched off", and the board's status took it for a choice, no problem.
            section["camera"] = {"state": "stopped", "fps": 0.0,
                                 "detail": "attention analysis stopped: edge-agent is stopping or restarting"}
            self.live.publish("attention", section)

    def pause(self, minutes: float | None) -> datetime | None:
        """The teacher's pause of the camera for ``minutes`` (None: resume now); returns its end."""
        if self.loop is None:
            raise CameraError("attention analysis is not running")
        until = None if minutes is None else self.loop.local_now() + timedelta(minutes=minutes)
        with self._pause_lock:  # a pause and a resume clicked at once: the file ends as the camera does
            self.loop.pause(until)
            try:
                self._write_pause(until)
            except OSError as exc:  # the camera did what the teacher asked: a full disk made that a 500
                log.warning("the camera pause holds, but could not be kept in %s for a restart: %s",
                            self.pause_file, exc)
        if self.live is not None:  # the page hears "starting" or "paused" now, not a turn later (round 2)
            self._publish_live(self.loop.live_section())
        log.info("camera %s by the teacher", "resumed" if until is None else f"paused until {until:%H:%M}")
        return until

    def _write_pause(self, until: datetime | None) -> None:
        if self.pause_file is not None:
            write_private(self.pause_file, b"" if until is None else until.isoformat().encode())

    def _keep_pause(self, until: datetime | None, ends: float) -> None:
        """The loop's pause (ending at ``ends``) ended, or its end moved with a stepped clock: the file
        follows, else a restart after the step read the old wall time (a pause of 45 min kept the camera
        closed 45 h). Unless the teacher set or ended a pause meanwhile: the file is theirs then."""
        try:
            with self._pause_lock:
                current = None if self.loop is None else self.loop.pause_ends()
                if current == (None if until is None else ends):
                    self._write_pause(until)
        except OSError as exc:
            log.warning("could not keep the camera pause in %s: %s", self.pause_file, exc)

    def _load_pause(self) -> datetime | None:
        """A pause still running from before a restart; a damaged file is ignored (and said so)."""
        if self.pause_file is None or self.loop is None:
            return None
        try:
            text = self.pause_file.read_text(encoding="utf-8").strip()
            until = datetime.fromisoformat(text) if text else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s does not hold a pause (%s): the camera is not paused", self.pause_file, exc)
            return None
        now = self.loop.local_now()
        if until is None or until.tzinfo is None or until <= now:
            return None
        longest = now + timedelta(minutes=MAX_PAUSE_MINUTES)
        if until > longest:
            # longer than a teacher can ask: the clock was wrong when it was saved or is wrong now (a board
            # booted on a clock a day behind stayed paused a day, a review). Still a pause, never opened
            # early, but no longer than the longest one.
            log.warning("the camera pause kept in %s ends %s, more than %d minutes from now by the board's "
                        "clock (%s): paused for %d minutes; check the clock (timedatectl timesync-status)",
                        self.pause_file, f"{until:%a %Y-%m-%d %H:%M}", MAX_PAUSE_MINUTES,
                        f"{now:%a %Y-%m-%d %H:%M}", MAX_PAUSE_MINUTES)
            return longest
        return until

    def health(self) -> Health:
        if self.loop is None:
            return Health(False, "attention not started")
        if self.loop.error is not None:
            return Health(False, self.loop.error)
        closed_until = self.loop.closed()
        if closed_until is not None and self.loop.paused_until is None and self.loop.hours_on_unsynced_clock:
            # degraded, not OK: the hours may keep the camera closed through a lesson (IT can act on it)
            now = self.loop.local_now()
            return Health(False, "camera closed by camera.active_hours judged on a clock not yet "
                                 f"synchronised (board says {now:%a %H:%M}, {now:%Y-%m-%d}; it opens "
                                 f"{opening_text(closed_until, now)} by that clock); check NTP: timedatectl "
                                 "timesync-status")
        if closed_until is not None:
            return Health(True, f"camera closed: {self.loop.closed_text(closed_until)}")
        state, detail = self.loop.camera_state()
        if state == "starting":  # opening (at the start, after a pause or its hours): no fault of its own
            return Health(True, "camera starting")
        if state != "running":
            return Health(False, f"camera {state}: {detail}" if detail else f"camera {state}")
        reopens = self.camera.reopens()
        if reopens >= UNSTABLE_REOPENS:
            return Health(False, f"camera unstable: reopened {reopens} times in the last "
                                 f"{UNSTABLE_WINDOW_S / 60:.0f} minutes (lost, stalled or failing); the "
                                 "journal says why each time")
        return Health(True, f"camera running, {self.loop.fps():.1f} frames/s analysed")

    def _keep_open_window(self, saved: dict[str, Any]) -> None:
        """On the analysis thread, every 15 s: a crash or a power cut lost up to a window (60 s) of frames.
        Not waited for; a refused write is the store's to report, and the next one tries again."""
        assert self.db is not None
        text = json.dumps(saved, separators=(",", ":"))
        self.db.write(lambda conn: set_meta(conn, OPEN_WINDOW_KEY, text))

    @staticmethod
    def _resume_open_window(loop: AttentionLoop, db: Database) -> None:
        """Before the threads start: the window open at a crash or a power cut goes on, or is queued now."""
        try:
            row = db.read(lambda conn: conn.execute("SELECT value FROM meta WHERE key = ?",
                                                    (OPEN_WINDOW_KEY,)).fetchone())
        except EdgeAgentError as exc:  # the store's health says what is wrong with it
            log.warning("could not read the attention window open at the last stop: %s", exc)
            return
        if row is None:
            return
        try:
            saved = json.loads(row[0])
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            goes_on = loop.resume(saved)
        # a damaged record costs its frames, never the analysis: a deep nesting (RecursionError) or a huge
        # number (OverflowError) stopped every start (a round-2 review)
        except Exception as exc:
            log.warning("the attention window open at the last stop does not read (%s): its frames are "
                        "left out", f"{exc!r:.200}")
            db.write(_forget_open_window(None))
            return
        log.info("the attention window open at a crash or a power cut (%d frames) %s",
                 sum(frames for _, frames in saved["faces"]),
                 "goes on" if goes_on else "had ended: queued for the cloud, marked partial")

    def _store_window(self, window: dict[str, Any]) -> None:
        self.outbox.enqueue(STREAM, window_payload(window, self.analyser.pose.method, self.class_id,
                                                   self.camera_settings.analysis_fps,
                                                   self.settings.min_faces),
                            also=None if self.db is None else _forget_open_window(window["start"]))
        if self.history is not None:
            self.history.record(STREAM, window)
            if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
                self._pruned = time.monotonic()
                self.history.prune()

    def _publish_live(self, section: dict[str, Any]) -> None:
        assert self.live is not None
        self.live.publish("attention", section)
