"""The calibration rule on its own: median pose of the faces, robust to a few looking elsewhere."""

from __future__ import annotations

import math

import pytest

from edge_agent.vision.attention import AttentionRules, is_attentive
from edge_agent.vision.calibration import CalibrationError, fit_calibration
from edge_agent.vision.pose import Pose


def test_median_pose_ignores_the_few_who_look_elsewhere_and_faces_without_pose() -> None:
    class_at_board = [Pose(35.0 + d, -30.0 - d) for d in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    elsewhere = [Pose(-70.0, -60.0), Pose(80.0, 30.0)]
    unknown = [Pose(math.nan, math.nan)]
    cal = fit_calibration(class_at_board + elsewhere + unknown)
    assert (cal.yaw_deg, cal.pitch_deg, cal.faces) == (35.0, -30.0, 7)
    rules = AttentionRules(calibration_yaw_deg=cal.yaw_deg, calibration_pitch_deg=cal.pitch_deg)
    assert all(is_attentive(p, rules) for p in class_at_board)
    assert not any(is_attentive(p, AttentionRules()) for p in class_at_board)  # uncalibrated: all off
    assert cal.spread_problem(30.0, 25.0) is None
    assert cal.config_lines() == "[attention]\ncalibration_yaw_deg = 35.0\ncalibration_pitch_deg = -30.0\n"


def test_faces_looking_every_which_way_are_flagged() -> None:
    cal = fit_calibration([Pose(yaw, 0.0) for yaw in (-60.0, -30.0, 0.0, 30.0, 60.0)])
    problem = cal.spread_problem(30.0, 25.0)
    assert problem is not None and "looking at the board" in problem


def test_too_few_faces_with_a_pose_is_refused_saying_how_many() -> None:
    with pytest.raises(CalibrationError, match=r"2 faces with a head pose.*at least 3"):
        fit_calibration([Pose(1.0, 1.0), Pose(2.0, 2.0), Pose(math.nan, 0.0)])
