"""The camera thread: keeps only the newest frame, reconnects with backoff, notices stalls.

The grabber thread reads as fast as the source delivers and overwrites a one-frame slot, so analysis always
sees the latest picture and never a backlog (superseded frames are counted as dropped, reason "busy").
A source that cannot be opened, ends, or delivers no usable frame for ``stall_timeout_s`` (counted as a
stall) is reopened with exponential backoff (a video file does not end: it plays again from its start, as
a folder loops); the backoff starts again from ``reconnect_min_s`` only after a session that delivered
frames for ``stall_timeout_s``, so a camera that drops every stream at once is not reopened every second
for ever, and one that glitches after hours of frames is reopened soon. A read that
blocks for ``stall_timeout_s`` (a hung GStreamer pipeline or V4L2 driver; read timeouts are set only for
network streams) is left to finish on its own thread while a new grabber thread reopens the source; one
such thread at a time. So is an open that blocks for ``stall_timeout_s`` (V4L2 and GStreamer opens have no
timeout: a wedged nvargus-daemon), which makes the camera an error; and a grabber that ``stop`` left inside
a blocking read or open is the one such thread when ``start`` comes: with one already left behind, no
reader starts until one of them returns.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.config import CameraSettings, without_credentials
from edge_agent.errors import CameraError
from edge_agent.telemetry import metrics
from edge_agent.vision.sources import FrameSource, classify, open_source

log = logging.getLogger(__name__)


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own messages off stderr, i.e. the journal: FFmpeg wrote a line for each
    damaged frame of a camera sending corrupt ones ("[mjpeg @ 0x...] overread 8", 1,800 a minute at 30 fps,
    a review) and OpenCV two "[ WARN ]" lines at each reopen of a missing camera. The camera's own state
    and log lines say what is wrong. An administrator's values in the environment are kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at the first FFmpeg capture
    if "OPENCV_LOG_LEVEL" not in os.environ:
        os.environ["OPENCV_LOG_LEVEL"] = "ERROR"
        # the variable is read when cv2 is imported, which another module of the daemon does first
        # (edge_agent.vision.cli_attention, as the command line is built)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# At import, before any thread: the daemon's captures all open through this module's Camera
quiet_opencv()

MIN_FRAME_SIDE = 32  # smaller frames cannot hold a detectable face: treated as corrupt

Opener = Callable[[threading.Event], FrameSource]


@dataclass(frozen=True)
class Frame:
    seq: int
    captured_at: float  # time.time() when grabbed
    image: np.ndarray


def frame_problem(image: np.ndarray | None) -> str | None:
    """Why a grabbed frame is unusable ("empty", "tiny", "format"), or None when it is fine."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        return "empty"
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return "format"
    if min(image.shape[:2]) < MIN_FRAME_SIDE:
        return "tiny"
    return None


# What a dropped frame's reason means to the person fixing the camera
_DROP_WHY = {"empty": "cannot be decoded (corrupt)",
             "format": "are not 8-bit BGR colour images (end a GStreamer pipeline with videoconvert ! "
                       "video/x-raw,format=BGR ! appsink)",
             "tiny": f"are under {MIN_FRAME_SIDE} px"}


# A URL's open and reads time out at this share of the stall timeout: FFmpeg gives up first, and the
# failure is retried with the camera's backoff, not taken for a blocked open or read
OPEN_TIMEOUT_SHARE = 0.8

# Why an open blocks, by source kind: a network camera is no driver to restart (a review: IT read "a wedged
# nvargus-daemon" for an RTSP camera)
_BLOCKED_WHY = {
    "url": "the network camera (or the lookup of its name) does not answer: check that it is on and "
           "reachable from the board (ping it), or restart it",
    "v4l2": "the driver does not answer (a wedged V4L2 driver: unplug the camera, or restart the board)",
    "gstreamer": "the driver does not answer (a wedged nvargus-daemon or V4L2 driver: restart it, or the "
                 "board)",
    "file": "the disk or network share holding it does not answer",
}
_BLOCKED_WHY["folder"] = _BLOCKED_WHY["file"]

UNSTABLE_WINDOW_S = 300.0
UNSTABLE_REOPENS = 3  # reopens within the window that make a running camera a problem


def as_bgr(image: np.ndarray) -> np.ndarray:
    """4-channel 8-bit frames (a GStreamer appsink in BGRx or BGRA) as the 3-channel BGR the models take.
    One-channel frames stay "format": OpenCV hands I420/NV12 ones over as one plane 1.5 times the picture's
    height, its colour under it, which read as grey counted faces that were not there (round 2)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def next_backoff(current: float, minimum: float, maximum: float) -> float:
    return min(maximum, max(minimum, current * 2.0))


class Camera:
    """Owns one source and its grabber thread. ``latest()`` is safe to call from any thread."""

    def __init__(
        self,
        source: str,
        *,
        width: int = 640,
        height: int = 480,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        stall_timeout_s: float = 10.0,
        opener: Opener | None = None,
        folder_fps: float = 30.0,
    ) -> None:
        self.source = source
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stall_timeout_s = stall_timeout_s
        self._opener: Opener = opener or (
            # a file slower than 2 frames a stall timeout (a slideshow) stalled and played from its first
            # frame for ever: files and folders play at least that fast. A network camera's open gives up
            # before check_stall takes it for a blocked one (a review: an RTSP camera that accepted and
            # never answered was a "wedged driver", reopened every 10 s for ever with no backoff)
            lambda stop: open_source(source, width, height, stop, folder_fps=folder_fps,
                                     min_fps=2.0 / stall_timeout_s,
                                     open_timeout_s=OPEN_TIMEOUT_SHARE * stall_timeout_s))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a new frame (latest's wait)
        self._frame: Frame | None = None
        self._taken_seq = 0
        self._seq = 0
        self._state = "starting"
        self._detail = ""
        self._description = ""  # the open source's, shown once its first usable frame came
        self._opened = -1  # the grabber generation whose source is open (not opening): no frame is a stall
        self._last_good = time.monotonic()
        # the last read that gave a frame, usable or not: frames that keep coming, all bad, are the
        # grabber's to judge (it says why), not a stall
        self._last_read = 0.0
        self._thread: threading.Thread | None = None
        self._generation = 0  # a grabber thread whose generation is behind has been replaced
        self._reading_since: float | None = None  # monotonic start of the read in progress
        self._opening_since: float | None = None  # monotonic start of the open in progress
        self._open_blocked_since: float | None = None  # the start of the first of the opens now blocked
        self._start_pending = False  # start() found its grabber blocked beside an abandoned one
        self._abandoned: threading.Thread | None = None  # a replaced grabber still inside its read/open
        self._reopens: collections.deque[float] = collections.deque(maxlen=64)  # monotonic times
        self._first_good: float | None = None  # the open session's first usable frame (monotonic)
        self._last_frame = 0.0  # its latest usable frame (monotonic; _last_good is moved by check_stall)
        self._blocked_backoff = 0.0  # the wait before a new reader opens after a read that hung
        self._blocked_why = _BLOCKED_WHY.get(classify(source), _BLOCKED_WHY["file"])
        self.on_beat: Callable[[], None] = lambda: None

    @classmethod
    def from_settings(cls, settings: CameraSettings, opener: Opener | None = None) -> Camera:
        """The camera the ``[camera]`` section describes (the daemon's, and the calibration tool's)."""
        if not settings.source.strip():  # taken while the camera is off; opened, "" is the folder "."
            raise CameraError("camera.source is empty: name the camera (0, /dev/video0, an rtsp:// URL, a "
                              "file or a folder)")
        return cls(
            settings.source,
            width=settings.width,
            height=settings.height,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            stall_timeout_s=settings.stall_timeout_s,
            opener=opener,
            # a folder's pictures at the analysis rate, each analysed in turn (a review: at 30 a second
            # the demo analysed one in six, the same three always, and showed a share of 100%); the opener
            # plays it at two frames a stall timeout at least, as a file (slower, it stalled for ever)
            folder_fps=settings.analysis_fps,
        )

    def start(self) -> None:
        """Open the source on a grabber thread; again after ``stop`` (the camera's hours)."""
        old = self._thread
        if old is not None:
            # A grabber that stop() left inside a blocking read must not come back to life with the
            # cleared stop flag: a new generation replaces it.
            self._generation += 1
        # the stall clocks start again: a read or frame of before the stop is not a stall now
        self._last_good = time.monotonic()
        self._reading_since = self._opening_since = self._open_blocked_since = None
        self._blocked_backoff = 0.0
        self._stop.clear()
        if old is not None and old.is_alive():
            # stop() left it inside a blocking read or open: it is the thread left behind now (each pause or
            # close of the hours while a read hung left one more for good, a review)
            if self._abandoned is not None and self._abandoned.is_alive() and self._abandoned is not old:
                self._start_pending = True  # check_stall starts the grabber once one of them returns
                self._set_state("error", "blocked in a read or open of the camera since before it was "
                                         "closed, beside an earlier one; it opens again when one returns")
                return
            self._abandoned = old
        self._start_pending = False
        # Not the "stopped" the last stop left: opening again as its hours begin or a pause ends (the
        # component's health said "camera stopped" until the grabber had opened)
        self._set_state("starting", "")
        self._start_grabber(0.0)

    @property
    def started(self) -> bool:
        """Between start() and stop()."""
        return self._thread is not None and not self._stop.is_set()

    def _start_grabber(self, wait_s: float) -> None:
        """A new grabber of the current generation, opening after ``wait_s``."""
        self._thread = threading.Thread(
            target=self._run, args=(self._generation, wait_s), name="camera-grabber", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._start_pending:  # no grabber of its own to say so
            self._start_pending = False
            self._set_state("stopped", "")
        with self._lock:
            self._frame = None  # the last image does not stay in memory while the camera is closed
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("camera thread did not stop within %.1f s (a blocking read)", timeout)

    def state(self) -> tuple[str, str]:
        """(state, detail): starting, running, reconnecting, stalled or error."""
        with self._lock:
            return self._state, self._detail

    def latest(self, after_seq: int = 0, wait_s: float = 0.0) -> Frame | None:
        """The newest frame if it is newer than ``after_seq``, waiting up to ``wait_s`` for one."""
        with self._arrived:
            if wait_s > 0:
                self._arrived.wait_for(lambda: (self._frame.seq if self._frame else 0) > after_seq, wait_s)
            frame = self._frame
            if frame is None or frame.seq <= after_seq:
                return None
            self._taken_seq = frame.seq
            return frame

    def _set_state(self, state: str, detail: str) -> None:
        with self._lock:
            changed = state != self._state
            self._state, self._detail = state, detail
        if changed:  # a camera that failed is a warning, so `journalctl -p warning` shows it
            level = logging.INFO if state in ("starting", "running", "stopped") else logging.WARNING
            log.log(level, "camera %s%s", state, f": {detail}" if detail else "")

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _run(self, generation: int, wait_s: float) -> None:
        # A new reader after a hung read waits first if the hung session was short: a camera that hangs
        # after every frame or two was reopened every stall timeout for ever (round 2)
        backoff = wait_s
        if backoff:
            self._set_state("reconnecting", f"{self._description} read blocked soon after it opened; "
                                            f"reopening in {backoff:.1f} s")
            self._stop.wait(backoff)
        while self._current(generation):
            self.on_beat()
            self._opening_since = time.monotonic()  # check_stall's to judge: an open may never return
            try:
                source = self._opener(self._stop)
            except Exception as exc:  # anything else ended this thread for good (a review)
                self._open_returned(generation)
                if not self._current(generation):  # stopping, or replaced while opening: the state and
                    break  # the reopen count are the new grabber's (a review: an error over its "running")
                backoff = next_backoff(backoff, self.reconnect_min_s, self.reconnect_max_s)
                why = str(exc) if isinstance(exc, CameraError) else (
                    f"cannot open the camera: {type(exc).__name__}: {without_credentials(str(exc))}")
                self._set_state("error", f"{why} (retrying in {backoff:.0f} s)")
                self._reopened()
                self._stop.wait(backoff)
                continue
            self._open_returned(generation)
            if not self._current(generation):  # stopping, or replaced while opening
                source.release()
                break
            # "running" at its first usable frame: a camera sending only corrupt ones flapped between
            # running and stalled (and the component between up and down) at every reopen (a review)
            if self.state()[0] not in ("reconnecting", "error"):  # a problem stays one until a frame comes
                self._set_state("starting", f"{source.description} opened; waiting for its first frame")
            self._description = source.description
            self._opened = generation
            try:
                ended, good_s = self._grab_until_lost(source, generation)
            finally:
                if self._opened == generation:  # a replaced grabber leaves the new one's mark alone
                    self._opened = -1
                source.release()
            if not self._current(generation):
                break  # stopping, or replaced after a blocked read: the new grabber owns the state
            self._reopened()
            # After frames for a while the loss was a glitch: reopen soon. A session lost soon after it
            # opened (a camera that accepts the stream and drops it, or sends only bad frames) waits
            # longer each time, however it was lost.
            healthy = good_s >= self.stall_timeout_s
            if healthy:
                self._blocked_backoff = 0.0
            backoff = self.reconnect_min_s if healthy else next_backoff(
                backoff, self.reconnect_min_s, self.reconnect_max_s)
            self._set_state("reconnecting", f"{source.description} {ended}; reopening in {backoff:.1f} s")
            self._stop.wait(backoff)
        if generation == self._generation:  # a replaced grabber leaves the state to the new one
            self._set_state("stopped", "")

    def _open_returned(self, generation: int) -> None:
        with self._lock:  # a replaced grabber leaves the new one's marks alone
            if generation == self._generation:
                self._opening_since = self._open_blocked_since = None

    def _grab_until_lost(self, source: FrameSource, generation: int) -> tuple[str, float]:
        """Read until the source ends ("ended") or stalls ("stalled"), stop is requested, or this grabber
        is replaced; returns how, and the seconds from the first usable frame to the last."""
        self._last_good = time.monotonic()
        self._first_good = None
        dropped: dict[str, int] = {}  # since the last usable frame, by reason
        how = "stopped"
        while self._current(generation):
            self.on_beat()
            self._reading_since = time.monotonic()
            image = source.read()
            if not self._current(generation):
                break  # replaced: the read markers belong to the new grabber now
            self._reading_since = None
            if image is None:
                how = "ended"
                break
            self._last_read = time.monotonic()
            image = as_bgr(image)
            problem = frame_problem(image)
            if problem is not None:
                metrics.CAMERA_FRAMES_DROPPED.labels(problem).inc()
                dropped[problem] = dropped.get(problem, 0) + 1
                if time.monotonic() - self._last_good > self.stall_timeout_s:
                    metrics.CAMERA_STALLS.inc()
                    worst = max(dropped, key=lambda reason: dropped[reason])
                    how = (f"sent only frames that {_DROP_WHY[worst]} for {self.stall_timeout_s:.0f} s "
                           f"({dropped[worst]} dropped)")
                    break
                continue
            dropped.clear()
            metrics.CAMERA_FRAMES.inc()
            self._last_good = self._last_frame = time.monotonic()  # check_stall moves _last_good on
            if self._first_good is None:
                self._first_good = self._last_good
            self._publish(image, generation)
        return how, 0.0 if self._first_good is None else self._last_good - self._first_good

    def _publish(self, image: np.ndarray, generation: int) -> None:
        with self._lock:
            # stop() may have come since the read (the checks of a 1024x1024 frame take milliseconds): it
            # cleared the frame under this lock after setting its flag, so a frame kept now would stay in
            # memory while the camera is closed (a CI run kept one through a teacher's pause)
            if not self._current(generation):
                return
            if self._frame is not None and self._frame.seq > self._taken_seq:
                metrics.CAMERA_FRAMES_DROPPED.labels("busy").inc()
            self._seq += 1
            self._frame = Frame(self._seq, time.time(), image)
            self._arrived.notify_all()
            state = self._state
        if state == "stalled":
            self._set_state("running", "frames arriving again")
        elif state != "running":
            self._set_state("running", self._description)

    def _reopened(self) -> None:
        metrics.CAMERA_RECONNECTS.inc()
        with self._lock:
            self._reopens.append(time.monotonic())

    def reopens(self, within_s: float = UNSTABLE_WINDOW_S) -> int:
        """How many times the source was reopened (lost, failed, stalled) in the last ``within_s``: a
        camera that comes back every time still is a problem when it does so often (round 2: one that sent
        a frame or two per connection, then hung, read "running" for good)."""
        since = time.monotonic() - within_s
        with self._lock:
            return sum(1 for at in self._reopens if at >= since)

    def check_stall(self) -> bool:
        """Called by the analysis loop: a source with no frame for too long is marked stalled (True), and
        a grabber stuck inside one read for that long is replaced by a new one that reopens the source."""
        now = time.monotonic()
        if self._start_pending and not self._stop.is_set():
            left = [t for t in (self._abandoned, self._thread) if t is not None and t.is_alive()]
            if len(left) < 2:  # one of the blocked threads returned: the other is the one left behind
                self._abandoned = left[0] if left else None
                self._start_pending = False
                self._set_state("starting", "")
                self._start_grabber(0.0)
        stalled = self._check_open(now)
        with self._lock:
            # opened and waiting for its first frame counts too (it said "running" then)
            opened = self._opened == self._generation
            running = self._state == "running" or (opened and self._state != "stalled")
        if running and now - max(self._last_good, self._last_read) > self.stall_timeout_s:
            metrics.CAMERA_STALLS.inc()
            self._last_good = now  # count each stall once per timeout
            self._set_state("stalled", f"no frame for {self.stall_timeout_s:g} s")
            stalled = True
        reading_since = self._reading_since
        if (
            reading_since is not None
            and now - reading_since > self.stall_timeout_s
            and not self._stop.is_set()
            and (self._abandoned is None or not self._abandoned.is_alive())
        ):
            log.warning(  # not the source string: an RTSP URL may hold a password
                "camera read blocked for %.0f s; reopening the camera on a new reader (the blocked one "
                "ends when its read returns)", now - reading_since
            )
            self._reopened()
            first = self._first_good
            good_s = 0.0 if first is None else self._last_frame - first
            self._blocked_backoff = 0.0 if good_s >= self.stall_timeout_s else next_backoff(
                self._blocked_backoff, self.reconnect_min_s, self.reconnect_max_s)
            self._abandoned = self._thread
            self._generation += 1
            self._reading_since = None
            self._start_grabber(self._blocked_backoff)
        return stalled

    def _check_open(self, now: float) -> bool:
        """An open blocked for ``stall_timeout_s`` (V4L2 and GStreamer opens have no timeout) makes the
        camera an error, and is tried again on a new grabber thread, the blocked one left to return on its
        own (one such thread at a time); True when it is first counted as a stall. Before, the camera read
        "starting", and the component was healthy, for as long as the open blocked."""
        with self._lock:
            opening_since, blocked_since = self._opening_since, self._open_blocked_since
            if opening_since is None or self._stop.is_set():
                return False
            since = opening_since if blocked_since is None else blocked_since
            if now - since <= self.stall_timeout_s:
                return False
            first = blocked_since is None
            if first:
                self._open_blocked_since = opening_since
        if first:
            metrics.CAMERA_STALLS.inc()
        self._set_state("error", f"camera open blocked for {now - since:.0f} s: {self._blocked_why}")
        with self._lock:  # still the same open (an open that returns meanwhile clears it under this lock)
            retry = (
                self._opening_since == opening_since
                and now - opening_since > self.stall_timeout_s
                and (self._abandoned is None or not self._abandoned.is_alive())
            )
            if retry:
                self._abandoned = self._thread
                self._generation += 1
                self._opening_since = None
                self._start_grabber(0.0)
        if retry:
            log.warning("camera open blocked for %.0f s; opening it again on a new thread (the blocked one "
                        "ends when its open returns)", now - opening_since)
            self._reopened()
        return first
