"""Class attention rules (pure): attentive faces, short in-memory tracks, and per-window aggregates.

Nothing here identifies anyone: track ids are small integers that live only in this process's memory and
never appear in an aggregate. A window reports counts and shares for the whole class; a window with too
few faces on average is suppressed (its shares are withheld), because a share over one or two faces
would describe individuals.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.vision.pose import Pose
from edge_agent.vision.yunet import iou

Box = tuple[float, float, float, float]
MAX_FACES = 1000  # more than any classroom camera sees at once: a saved window with more is damaged
MAX_FPS = 60  # camera.analysis_fps at most
MAX_WINDOW_FRAMES = 3600 * MAX_FPS  # and attention.window_s at most 3600


@dataclass(frozen=True)
class AttentionRules:
    yaw_limit_deg: float = 30.0
    pitch_limit_deg: float = 25.0
    calibration_yaw_deg: float = 0.0  # the pose of a face looking at the board, as the camera sees it
    calibration_pitch_deg: float = 0.0


def is_attentive(pose: Pose, rules: AttentionRules) -> bool:
    """Yaw and pitch both within the limits around the calibrated board direction (unknown pose: no)."""
    if not (math.isfinite(pose.yaw) and math.isfinite(pose.pitch)):
        return False
    return (
        abs(pose.yaw - rules.calibration_yaw_deg) <= rules.yaw_limit_deg
        and abs(pose.pitch - rules.calibration_pitch_deg) <= rules.pitch_limit_deg
    )


@dataclass
class Track:
    """One face followed across analysed frames; lives only in memory and carries no identity."""

    box: Box
    history: deque[bool]
    missed: int = 0
    pose: Pose | None = None
    pose_age: int = 0  # analysed frames since ``pose`` was estimated

    def needs_pose(self, refresh_frames: int) -> bool:
        return self.pose is None or self.pose_age + 1 >= refresh_frames

    def set_pose(self, pose: Pose | None) -> None:
        if pose is None:
            self.pose_age += 1
        else:
            self.pose, self.pose_age = pose, 0


class FaceTracker:
    """Greedy IoU matching of faces between analysed frames; smooths each face's attentive flag.

    A face's smoothed flag is the majority of its last ``smoothing_frames`` raw flags (ties count as
    attentive), so one bad pose estimate does not flip the class share. Tracks also keep their last pose
    so the pipeline may refresh poses every few frames instead of every frame.
    """

    def __init__(self, smoothing_frames: int = 5, min_iou: float = 0.3, max_missed: int = 2) -> None:
        self.smoothing_frames = smoothing_frames
        self.min_iou = min_iou
        self.max_missed = max_missed
        self._tracks: list[Track] = []

    def __len__(self) -> int:
        return len(self._tracks)

    def assign(self, boxes: Sequence[Box]) -> list[Track]:
        """The track of each box (new tracks for unmatched boxes); unmatched tracks age and expire."""
        pairs = sorted(
            ((iou(t.box, b), ti, bi) for ti, t in enumerate(self._tracks) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        matched: dict[int, int] = {}
        used_tracks: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used_tracks or bi in matched:
                continue
            matched[bi] = ti
            used_tracks.add(ti)
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
        assigned = []
        for bi, box in enumerate(boxes):
            if bi in matched:
                track = self._tracks[matched[bi]]
                track.box, track.missed = box, 0
            else:
                track = Track(box, deque(maxlen=self.smoothing_frames))
            assigned.append(track)
        kept = [t for t in self._tracks if t.missed <= self.max_missed]
        self._tracks = kept + [t for bi, t in enumerate(assigned) if bi not in matched]
        return assigned

    @staticmethod
    def record(tracks: Sequence[Track], attentive: Sequence[bool]) -> list[bool]:
        """Add this frame's raw flags; returns the smoothed flag of each track.

        A flag from a pose reused between refreshes (``pose_age`` > 0) is not a new vote: at the default
        refresh of every 3 frames one estimate was 3 of the 5 votes, and a single bad one flipped the face
        for three frames."""
        smoothed = []
        for track, flag in zip(tracks, attentive, strict=True):
            if track.pose_age == 0 or not track.history:
                track.history.append(bool(flag))
            smoothed.append(2 * sum(track.history) >= len(track.history))
        return smoothed

    def update(self, boxes: Sequence[Box], attentive: Sequence[bool]) -> list[bool]:
        return self.record(self.assign(boxes), attentive)

    def clear(self) -> None:
        self._tracks = []


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; values must be non-empty."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class _Window:
    start: float
    last_t: float = 0.0  # the newest frame's time (a clock stepped back is measured from it)
    faces: list[int] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)


class WindowAggregator:
    """Collects per-frame (faces, attentive faces) into fixed windows aligned to multiples of ``window_s``.

    :meth:`add` returns the summaries of windows that the new frame closed. Weak windows (attentive mean
    below ``low_share``) in a row raise the low-attention signal after ``low_windows`` of them. Only
    back-to-back windows make a row: a window that is not weak ends it, and so do a suppressed window (an
    empty room: the class is not there to be inattentive), a gap between two windows (no frame came: the
    camera was down) and :meth:`flush` (the camera closed for its hours or a pause, or a stop), or the
    last lesson's signal would carry over the night into the first minute of the next one.
    """

    def __init__(
        self, window_s: float = 60.0, min_faces: int = 3, low_share: float = 0.5, low_windows: int = 3
    ) -> None:
        self.window_s = window_s
        self.min_faces = min_faces
        self.low_share = low_share
        self.low_windows = low_windows
        self._current: _Window | None = None
        self._weak_run = 0
        self._last_end: float | None = None  # the end of the last closed window

    @property
    def low_attention(self) -> bool:
        return self._weak_run >= self.low_windows

    def _window_start(self, t: float) -> float:
        return math.floor(t / self.window_s) * self.window_s

    def _stepped_back(self, t: float) -> bool:
        """The clock went back by more than a window since the open window's newest frame (an RTC that
        ran ahead, then NTP): the open one closes, or it would stay open until the clock caught up,
        collecting frames of another time (a review: 91 frames in a 20-s window at 2 frames/s). Measured
        from its newest frame, as the docs say; window starts undercounted it by up to a window."""
        assert self._current is not None
        return t < self._current.last_t - self.window_s

    def _ended(self, start: float, t: float) -> bool:
        """Whether a frame at ``t`` (of the window at ``start``) ends the open one: a later window, or the
        clock stepped back by more than a window."""
        assert self._current is not None
        return start > self._current.start or self._stepped_back(t)

    def add(self, t: float, faces: int, attentive: int) -> list[dict[str, Any]]:
        closed = []
        start = self._window_start(t)
        if self._current is not None and self._ended(start, t):
            closed.append(self._close_at(t))
        if self._current is None:
            self._current = _Window(start, last_t=t)
        self._current.last_t = t
        self._current.faces.append(faces)
        share = frame_share(faces, attentive, self.min_faces)
        if share is not None:
            self._current.shares.append(share)
        return closed

    def expire(self, t: float) -> list[dict[str, Any]]:
        """Close the open window once ``t`` is past its end, even when no frame came (camera down)."""
        if self._current is not None and self._ended(self._window_start(t), t):
            return [self._close_at(t)]
        return []

    def _close_at(self, t: float) -> dict[str, Any]:
        """Close the open window as a frame (or the time) ``t`` ends it: ``partial`` when the clock was
        stepped back, as it was cut short."""
        cut = self._stepped_back(t)
        summary = self._close()
        return summary | {"partial": True} if cut else summary

    def flush(self) -> dict[str, Any] | None:
        """Close the open window early (the camera closes, or a stop); returns its summary, marked
        ``partial``, or None when none is open, and ends the weak run. Its ``end`` stays the nominal one,
        so a restart in the same window gives a second record with the same ``start``: a consumer adds
        their frames."""
        summary = None if self._current is None else self._close() | {"partial": True}
        self._weak_run = 0
        return summary

    def _close(self) -> dict[str, Any]:
        window = self._current
        assert window is not None
        self._current = None
        summary = summarise(window.start, window.start + self.window_s, window.faces, window.shares,
                            self.min_faces)
        # Half a window of slack: a window's start and the previous one's end are floats computed apart.
        follows = self._last_end is not None and abs(window.start - self._last_end) < self.window_s / 2
        self._last_end = summary["end"]
        mean = summary["attentive_mean"]  # None when suppressed
        weak = mean is not None and mean < self.low_share
        self._weak_run = self._weak_run + 1 if weak and follows else int(weak)
        summary["low"] = self.low_attention
        return summary

    def snapshot(self) -> dict[str, Any] | None:
        """The open window's frames so far, for the store (a crash or a power cut would lose up to a whole
        window of them); None when none is open. Counts and shares only, as [value, frames] pairs: the
        summary does not depend on their order, and the record stays small whatever the window's length
        (20-35 faces a frame at 5 frames/s: 4.3 KB at the end of a 60-s window, 8.1 KB of an hour's,
        against 5.5 and 330 KB as lists; stored every 15 s)."""
        w = self._current
        if w is None:
            return None
        return {"window_s": self.window_s, "start": w.start, "last_t": w.last_t,
                "faces": _pairs(w.faces), "shares": _pairs(w.shares)}

    def restore(self, saved: Mapping[str, Any], t: float) -> list[dict[str, Any]]:
        """Before any frame: the open window a :meth:`snapshot` saved before a crash or power cut. Going on
        when ``t`` (now) is still in it; else closed at once, marked ``partial`` (the frames after the save
        and the outage are missing), which is returned. ValueError for a record that does not read."""
        if self._current is not None:
            raise ValueError("a window is open already: restore before the first frame")
        window_s, start, last_t = (_finite(saved.get(key), key) for key in ("window_s", "start", "last_t"))
        faces = _counted(saved.get("faces"), "faces", lambda f: type(f) is int and 0 <= f <= MAX_FACES)
        shares = _counted(saved.get("shares"), "shares", lambda x: type(x) is float and 0.0 <= x <= 1.0)
        # its last frame may be up to a window before its start: add() takes a clock stepped back that far
        if (not 0 < len(faces) <= window_s * MAX_FPS or len(shares) > len(faces) or window_s <= 0
                or start != math.floor(start / window_s) * window_s or abs(last_t - start) > window_s):
            raise ValueError(f"a window of {window_s} s from {start} with its last frame at {last_t}, "
                             f"{len(faces)} frames and {len(shares)} shares")
        if window_s != self.window_s:  # attention.window_s changed meanwhile: closed as the window it was
            return [summarise(start, start + window_s, faces, shares, self.min_faces) | {"partial": True}]
        self._current = _Window(start, last_t, faces, shares)
        if self._ended(self._window_start(t), t):
            return [self._close() | {"partial": True}]
        return []


LIVE_SPAN_S = 10.0  # the teacher view's "now": long enough to be steady, short enough to follow a lesson


class LiveShare:
    """The share the teacher view shows as "now": over the last ``span_s`` seconds of frames, by the
    windows' rules (a frame of fewer than ``min_faces`` faces gives no share; too few faces on average
    and there is none). The newest frame alone moved with every face the detector missed or found: in
    150 s of the demo it changed 115 times between 57 % and 100 %, 23 of them to "too few faces" (over
    10 s: between 89 % and 90 %, never "too few").

    :meth:`add` is called on the analysis thread only; :meth:`figures` from any thread (it reads a copy).
    """

    def __init__(self, span_s: float = LIVE_SPAN_S, min_faces: int = 3) -> None:
        self.span_s = span_s
        self.min_faces = min_faces
        # (time, faces, share or None); bounded by the fastest analysis rate
        self._frames: deque[tuple[float, int, float | None]] = deque(maxlen=math.ceil(span_s * MAX_FPS))

    def add(self, t: float, faces: int, attentive: int) -> None:
        self._frames.append((t, faces, frame_share(faces, attentive, self.min_faces)))
        while self._frames and self._frames[0][0] <= t - self.span_s:
            self._frames.popleft()

    def clear(self) -> None:
        self._frames.clear()

    def figures(self, now: float) -> tuple[float | None, int]:
        """(share of attentive faces or None, faces in view) over the span before ``now``; the faces are
        the mean rounded down, so a count under ``min_faces`` is never shown beside a share."""
        frames = [frame for frame in list(self._frames) if frame[0] > now - self.span_s]
        if not frames:
            return None, 0
        faces_mean = sum(faces for _t, faces, _share in frames) / len(frames)
        shares = [share for _t, _faces, share in frames if share is not None]
        shown = sum(shares) / len(shares) if shares_shown(faces_mean, shares, self.min_faces) else None
        return shown, math.floor(faces_mean)


def _pairs(values: Sequence[float]) -> list[list[float]]:
    return [[value, frames] for value, frames in sorted(Counter(values).items())]


def _counted(pairs: object, key: str, fits: Callable[[object], bool]) -> list[Any]:
    """The values of :meth:`WindowAggregator.snapshot`'s [value, frames] pairs, each as often as it came."""
    values: list[Any] = []
    for pair in pairs if isinstance(pairs, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2 and fits(pair[0]) and type(pair[1]) is int
                and 0 < pair[1] <= MAX_WINDOW_FRAMES - len(values)):
            raise ValueError(f"{key} is not a list of [value, frames] pairs: {pair!r}")
        values += [pair[0]] * pair[1]
    return values


def _finite(value: object, key: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int of 400 digits
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{key} is not a number: {value!r:.40}")
    return number


def frame_share(faces: int, attentive: int, min_faces: int) -> float | None:
    """A frame's share of attentive faces; None for a frame of fewer than ``min_faces`` faces: it
    describes one or two people, so its share stays out (it still counts towards the mean face count,
    which alone would let it in)."""
    return attentive / faces if faces >= max(min_faces, 1) else None


def shares_shown(faces_mean: float, shares: Sequence[float], min_faces: int) -> bool:
    """Whether frames' shares may be shown: not when too few faces were there on average (a window, or
    the teacher view's last seconds, of one or two people), nor when no frame gave a share."""
    return bool(shares) and faces_mean >= min_faces


def summarise(
    start: float, end: float, faces: Sequence[int], shares: Sequence[float], min_faces: int
) -> dict[str, Any]:
    frames = len(faces)
    faces_mean = sum(faces) / frames if frames else 0.0
    suppressed = faces_mean < min_faces
    keep = shares_shown(faces_mean, shares, min_faces)
    return {
        "start": start,
        "end": end,
        "frames": frames,
        "faces_mean": round(faces_mean, 3),
        "faces_max": max(faces, default=0),
        "attentive_mean": round(sum(shares) / len(shares), 4) if keep else None,
        "attentive_p10": round(percentile(shares, 10), 4) if keep else None,
        "attentive_median": round(percentile(shares, 50), 4) if keep else None,
        "suppressed": suppressed,
        "low": False,
    }
