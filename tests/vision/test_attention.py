"""Attention rules as tables: attentive flags, track smoothing, windows, suppression, low signal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError
from edge_agent.vision.attention import (
    AttentionRules,
    FaceTracker,
    LiveShare,
    WindowAggregator,
    is_attentive,
    percentile,
)
from edge_agent.vision.pose import Pose


@pytest.mark.parametrize(
    ("yaw", "pitch", "expected"),
    [(0, 0, True), (29.9, 0, True), (30.1, 0, False), (-31, 0, False), (0, 24, True), (0, -26, False)],
)
def test_attentive_within_yaw_and_pitch_limits(yaw, pitch, expected):
    assert is_attentive(Pose(yaw, pitch), AttentionRules(30.0, 25.0)) is expected


def test_one_bad_frame_does_not_flip_a_smoothed_face():
    tracker = FaceTracker(smoothing_frames=5)
    box = (100.0, 100.0, 50.0, 50.0)
    for _ in range(4):
        assert tracker.update([box], [True]) == [True]
    assert tracker.update([(102.0, 101.0, 50.0, 50.0)], [False]) == [True]
    assert len(tracker) == 1


def test_faces_far_apart_get_separate_tracks_and_lost_tracks_expire():
    tracker = FaceTracker(smoothing_frames=3, max_missed=1)
    tracker.update([(0.0, 0.0, 10.0, 10.0), (100.0, 0.0, 10.0, 10.0)], [True, False])
    assert len(tracker) == 2
    tracker.update([(0.0, 0.0, 10.0, 10.0)], [True])
    tracker.update([(0.0, 0.0, 10.0, 10.0)], [True])
    assert len(tracker) == 1


def test_window_aggregates_share_statistics_and_closes_on_boundary():
    agg = WindowAggregator(window_s=60.0, min_faces=2, low_share=0.5, low_windows=2)
    shares = [(4, 4), (4, 2), (4, 3), (4, 1)]
    for i, (faces, attentive) in enumerate(shares):
        assert agg.add(600.0 + i, faces, attentive) == []
    (closed,) = agg.add(661.0, 4, 4)
    values = [a / f for f, a in shares]
    assert closed["start"] == 600.0 and closed["end"] == 660.0
    assert closed["frames"] == 4 and closed["faces_max"] == 4 and closed["faces_mean"] == 4.0
    assert closed["attentive_mean"] == pytest.approx(np.mean(values), abs=1e-4)
    assert closed["attentive_p10"] == pytest.approx(np.percentile(values, 10), abs=1e-4)
    assert closed["attentive_median"] == pytest.approx(np.median(values), abs=1e-4)
    assert not closed["suppressed"] and not closed["low"]


def test_window_with_too_few_faces_is_suppressed_and_withholds_shares():
    agg = WindowAggregator(window_s=10.0, min_faces=3)
    agg.add(0.0, 1, 1)
    agg.add(1.0, 2, 0)
    closed = agg.flush()
    assert closed is not None and closed["suppressed"]
    assert closed["attentive_mean"] is None and closed["attentive_median"] is None
    assert closed["faces_max"] == 2


def test_frames_with_too_few_faces_stay_out_of_the_shares_of_a_window_that_is_shown():
    # The sync audit: one frame of 30 faces and nine of one person gave a mean of 3.9 faces, so the
    # window was shown, and its median share (0.0) described that one person.
    agg = WindowAggregator(window_s=10.0, min_faces=3)
    agg.add(0.0, 30, 27)
    for i in range(9):
        agg.add(1.0 + i * 0.1, 1, 0)
    closed = agg.flush()
    assert closed is not None and not closed["suppressed"] and closed["frames"] == 10
    assert closed["attentive_mean"] == closed["attentive_median"] == 0.9


def test_low_attention_after_n_weak_windows_in_a_row_and_clears_on_a_good_one():
    agg = WindowAggregator(window_s=10.0, min_faces=1, low_share=0.5, low_windows=2)
    lows = []
    for start, attentive in [(0, 1), (10, 1), (20, 1), (30, 4), (40, 0)]:
        lows += [w["low"] for w in agg.add(float(start), 4, attentive)]
    assert lows == [False, True, True, False]


def _minutes(agg: WindowAggregator, start: float, minutes: int, faces: int, attentive: int) -> list[dict]:
    """``minutes`` one-minute windows of frames at 5 per second from ``start``; the windows they closed."""
    closed = []
    for k in range(minutes * 300):
        closed += agg.add(start + k * 0.2, faces, attentive)
    return closed


MON_1657 = 1_772_470_620.0  # Mon 2026-03-02 16:57 UTC, three minutes before the end of the school day
TUE_0701 = MON_1657 + 14 * 3600 + 4 * 60


def test_an_empty_room_ends_the_weak_run_and_its_windows_are_not_low():
    # The camera runs all night (no camera.active_hours): the room empties after a weak end of lesson.
    agg = WindowAggregator(window_s=60.0, min_faces=3, low_share=0.5, low_windows=3)
    closed = _minutes(agg, MON_1657, 4, 30, 9)  # 30 % attentive, 16:57-17:01
    assert [w["low"] for w in closed] == [False, False, True]
    night = _minutes(agg, MON_1657 + 4 * 60, 14 * 60, 0, 0)  # 17:01 to 07:01, nobody there
    assert len(night) == 14 * 60 and all(w["suppressed"] for w in night[1:])
    # before: every one of them low, and so was the live view all night
    assert [w for w in night[1:] if w["low"]] == [] and not agg.low_attention
    # the first weak window of the morning is one weak window, not the fourth of yesterday's row
    *_, morning = _minutes(agg, TUE_0701, 2, 30, 12)
    assert morning["start"] == TUE_0701 and morning["attentive_mean"] == 0.4 and not morning["low"]


def test_a_gap_between_windows_ends_the_weak_run():
    agg = WindowAggregator(window_s=10.0, min_faces=1, low_share=0.5, low_windows=2)
    lows = [w["low"] for t in (0.0, 10.0, 20.0) for w in agg.add(t, 4, 1)]
    assert lows == [False, True]
    (closed,) = agg.expire(35.0)  # then no frame for a while: the camera was down
    assert closed["start"] == 20.0 and closed["low"]
    agg.add(50.0, 4, 1)
    (after_gap,) = agg.expire(60.0)
    assert after_gap["start"] == 50.0 and not after_gap["low"]


def test_closing_the_camera_ends_the_weak_run():
    agg = WindowAggregator(window_s=60.0, min_faces=3, low_share=0.5, low_windows=3)
    _minutes(agg, MON_1657, 2, 30, 9)
    agg.add(MON_1657 + 150.0, 30, 9)
    last = agg.flush()  # closed at 17:00 by camera.active_hours, or by a teacher's pause
    assert last is not None and last["partial"] and last["low"]  # the third weak window in a row
    assert not agg.low_attention  # the live view is not left saying low attention overnight
    *_, morning = _minutes(agg, TUE_0701, 2, 30, 12)
    assert morning["start"] == TUE_0701 and not morning["low"]
    assert agg.flush() is not None and agg.flush() is None


def test_frames_without_faces_count_as_frames_but_not_as_shares():
    agg = WindowAggregator(window_s=10.0, min_faces=0)
    agg.add(0.0, 0, 0)
    agg.add(1.0, 2, 1)
    closed = agg.flush()
    assert closed is not None and closed["frames"] == 2 and closed["attentive_mean"] == 0.5
    assert closed["partial"]  # cut short by the stop, which a consumer must know
    assert agg.flush() is None


@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_matches_numpy(q):
    values = [0.1, 0.9, 0.4, 0.5, 0.3]
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_window_closes_on_time_even_without_frames():
    agg = WindowAggregator(window_s=10.0, min_faces=1)
    agg.add(3.0, 4, 4)
    assert agg.expire(9.9) == []
    (closed,) = agg.expire(12.0)
    assert closed["start"] == 0.0 and closed["frames"] == 1
    assert agg.expire(30.0) == []


def test_a_clock_stepped_far_back_closes_the_open_window_and_a_small_step_does_not():
    agg = WindowAggregator(window_s=60.0, min_faces=1)
    agg.add(1_800_000_010.0, 4, 4)
    assert agg.add(1_800_000_005.0, 4, 2) == []  # NTP slews a few seconds back: same window
    assert agg.expire(1_799_999_990.0) == []  # stepped back less than a window: still open
    (closed,) = agg.expire(1_799_996_400.0)  # an hour back: sent now, not in an hour
    assert closed["start"] == 1_800_000_000.0 and closed["frames"] == 2 and closed["partial"] is True
    assert agg.add(1_799_996_401.0, 3, 3) == []  # the next window is on the corrected clock
    assert agg.snapshot()["start"] == 1_799_996_400.0  # type: ignore[index]


def test_a_clock_stepped_back_by_more_than_a_window_from_the_newest_frame_closes_the_window():
    # A review: 30 s back with 20-s windows kept the window open (window starts were compared, not
    # times): 91 frames in a 20-s window at 2 frames/s, where the docs promise a close
    agg = WindowAggregator(window_s=20.0, min_faces=1)
    for n in range(31):  # 520.0 .. 535.0 at 2 frames/s
        assert agg.add(520.0 + n / 2, 4, 4) == []
    (closed,) = agg.add(505.5, 4, 4)  # 30 s back
    assert closed["start"] == 520.0 and closed["frames"] == 31 and closed["partial"] is True
    assert agg.snapshot()["start"] == 500.0  # type: ignore[index]
    # a window that simply ends is no partial one
    (ended,) = agg.add(521.0, 4, 4)
    assert ended["start"] == 500.0 and "partial" not in ended


@pytest.mark.parametrize("window_s", ["inf", "1e300", "86400000", "3601"])
def test_a_window_longer_than_an_hour_is_refused_with_the_key(window_s: str):
    # With inf no window ever closed: a day at 5 frames/s held 432,000 frames in the open window.
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[attention]\nwindow_s = {window_s}\n")
    assert [path for path, _ in caught.value.problems] == ["attention.window_s (line 2)"]
    assert parse_config("[attention]\nwindow_s = 3600\n").attention.window_s == 3600.0


# -- found by a mutation review (2026-12-04) ------------------------------------------------------------


def test_a_window_with_too_few_faces_on_average_withholds_its_shares() -> None:
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    windows.add(0.0, 3, 0)  # one frame of three faces, then the room empties
    for t in range(1, 10):
        windows.add(float(t), 0, 0)
    (closed,) = windows.add(61.0, 0, 0)
    assert closed["suppressed"] and closed["attentive_mean"] is None and closed["attentive_p10"] is None


def test_a_window_just_under_min_faces_on_average_is_suppressed() -> None:
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    for t in range(10):
        windows.add(float(t), 3 if t % 2 else 2, 1)  # 2.5 faces on average
    (closed,) = windows.add(61.0, 0, 0)
    assert closed["faces_mean"] == 2.5 and closed["suppressed"] and closed["attentive_mean"] is None


def test_a_face_split_evenly_between_attentive_and_not_counts_as_attentive() -> None:
    # ties go to the student: one look away after one look at the board is no inattention
    tracker = FaceTracker(smoothing_frames=4)
    box = (100.0, 100.0, 50.0, 50.0)
    assert tracker.update([box], [True]) == [True]
    assert tracker.update([box], [False]) == [True]


def test_skipping_exactly_one_window_ends_the_weak_run() -> None:
    windows = WindowAggregator(window_s=10.0, min_faces=1, low_share=0.5, low_windows=2)
    lows = [w["low"] for t in (0.0, 10.0) for w in windows.add(t, 4, 1)]  # one weak window closed
    assert lows == [False]
    windows.add(30.0, 4, 1)  # no frame from 20 to 30: the window between is missing
    (after_gap,) = windows.expire(45.0)
    assert after_gap["start"] == 30.0 and not after_gap["low"]



def _saved_after(frames: list[tuple[float, int, int]], window_s: float = 60.0) -> dict:
    windows = WindowAggregator(window_s=window_s, min_faces=3)
    for t, faces, attentive in frames:
        assert windows.add(t, faces, attentive) == []
    saved = windows.snapshot()
    assert saved is not None
    return saved


def test_a_window_stored_before_a_crash_goes_on_after_the_restart_with_its_frames():
    # A power cut lost up to a whole window (60 s) of the class's attention: the open one is stored every
    # 15 s and, back within it, the window goes on from there
    saved = _saved_after([(1000.0, 4, 4), (1010.0, 4, 2)])
    assert saved["faces"] == [[4, 2]] and saved["shares"] == [[0.5, 1], [1.0, 1]]  # [value, frames]
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    assert windows.restore(json.loads(json.dumps(saved)), 1015.0) == []  # as stored
    assert windows.add(1018.0, 4, 0) == []
    (closed,) = windows.add(1021.0, 4, 4)
    assert closed["frames"] == 3 and closed["attentive_mean"] == 0.5 and "partial" not in closed


def test_a_window_stored_before_a_power_cut_that_ended_meanwhile_is_closed_as_partial():
    saved = _saved_after([(1000.0, 4, 4), (1010.0, 4, 2)])
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    (closed,) = windows.restore(saved, 5000.0)  # back an hour later: its last frames and the outage missing
    assert closed | {"partial": True} == closed and closed["frames"] == 2 and closed["attentive_mean"] == 0.75
    assert (closed["start"], closed["end"]) == (960.0, 1020.0) and windows.snapshot() is None
    (stepped,) = WindowAggregator(window_s=60.0, min_faces=3).restore(saved, 900.0)  # the clock stepped back
    assert stepped["partial"] and stepped["frames"] == 2
    # attention.window_s changed meanwhile: the stored one closes as the window it was
    (other,) = WindowAggregator(window_s=30.0, min_faces=3).restore(saved, 1011.0)
    assert (other["start"], other["end"], other["frames"], other["partial"]) == (960.0, 1020.0, 2, True)


@pytest.mark.parametrize(("change", "says"), [
    ({"faces": [[4, 1], [-1, 1]]}, "faces"), ({"faces": [[4, 1], ["4", 1]]}, "faces"),
    ({"faces": [[True, 2]]}, "faces"), ({"faces": "44"}, "faces"), ({"faces": [[10**6, 2]]}, "faces"),
    ({"faces": [[4, 0]]}, "faces"), ({"faces": [[4, 2.0]]}, "faces"), ({"faces": [[4, 10**9]]}, "faces"),
    ({"faces": [[4]]}, "faces"), ({"faces": [], "shares": []}, "window of"),
    ({"shares": [[1.5, 1]]}, "shares"), ({"shares": [[0.5, 3]]}, "window of"),
    ({"shares": [[1, 1]]}, "shares"), ({"shares": None}, "shares"), ({"faces": [[4, 3601]]}, "window of"),
    ({"start": 961.0}, "window of"), ({"start": 10**400}, "start"),
    ({"start": float("nan")}, "start"), ({"start": "960"}, "start"), ({"last_t": None}, "last_t"),
    ({"window_s": 0}, "window of"), ({"last_t": 890.0}, "window of"), ({"last_t": 1100.0}, "window of"),
])
def test_a_stored_window_that_does_not_read_is_refused_and_nothing_is_opened(change, says):
    saved = _saved_after([(1000.0, 4, 4), (1010.0, 4, 2)]) | change
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    with pytest.raises(ValueError, match=says):
        windows.restore(saved, 1015.0)
    assert windows.snapshot() is None


def test_a_window_whose_clock_stepped_back_a_little_is_stored_and_goes_on():
    # add() takes a frame up to a window back in time, so the newest frame may come before the start: such
    # a window was refused as damaged after a cut and all its frames lost (a round-2 review)
    saved = _saved_after([(1000.0, 4, 4), (1010.0, 4, 2), (955.0, 4, 0)])
    assert saved["last_t"] == 955.0 < saved["start"]
    windows = WindowAggregator(window_s=60.0, min_faces=3)
    assert windows.restore(json.loads(json.dumps(saved)), 956.0) == []
    assert sum(frames for _faces, frames in windows.snapshot()["faces"]) == 3  # type: ignore[index]


# -- the teacher view's share "now" ---------------------------------------------------------------------


def test_the_share_shown_now_is_the_last_ten_seconds_not_the_newest_frame() -> None:
    live = LiveShare(span_s=10.0, min_faces=3)
    for t in range(50):  # 5 frames a second: 30 faces, 24 or 21 attentive in turn (80 % and 70 %)
        live.add(t / 5, 30, 24 if t % 2 else 21)
    share, faces = live.figures(49 / 5)
    assert share == pytest.approx(0.75) and faces == 30


def test_one_frame_of_two_faces_in_a_full_room_does_not_hide_the_share() -> None:
    # the demo: its pictures of one or two faces put "too few faces" on the page 23 times in 150 s
    live = LiveShare(span_s=10.0, min_faces=3)
    for t in range(20):
        live.add(float(t) / 5, 2 if t == 19 else 20, 1 if t == 19 else 15)
    share, faces = live.figures(19 / 5)
    assert share == pytest.approx(0.75)  # the frame of two faces gives no share of its own
    assert faces == 19  # (19 * 20 + 2) / 20 = 19.1, rounded down


def test_a_room_of_too_few_faces_over_the_span_shows_no_share_and_no_count_of_enough() -> None:
    live = LiveShare(span_s=10.0, min_faces=3)
    for t in range(10):
        live.add(float(t), 3 if t % 2 else 2, 3 if t % 2 else 2)  # 2.5 faces on average
    assert live.figures(9.0) == (None, 2)


def test_frames_older_than_the_span_are_forgotten_and_no_frame_shows_nothing() -> None:
    live = LiveShare(span_s=10.0, min_faces=3)
    live.add(0.0, 30, 0)
    live.add(5.0, 30, 30)
    assert live.figures(5.0) == (pytest.approx(0.5), 30)
    assert live.figures(12.0) == (1.0, 30)  # the frame at 0 s is past the span
    assert live.figures(16.0) == (None, 0)  # the camera sent nothing for ten seconds
    live.add(20.0, 30, 30)
    live.clear()  # the camera closed for a pause: the class after it is a new measurement
    assert live.figures(20.0) == (None, 0)
