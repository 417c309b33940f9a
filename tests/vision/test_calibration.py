"""The calibration rule on its own: median pose of the faces, robust to a few looking elsewhere."""

from __future__ import annotations

import math

import pytest

from edge_agent.vision.attention import AttentionRules, is_attentive
from edge_agent.vision.calibration import CalibrationError, fit_calibration
from edge_agent.vision.pose import Pose

RULES = AttentionRules(yaw_limit_deg=30.0, pitch_limit_deg=25.0)


def test_median_pose_ignores_the_few_who_look_elsewhere_and_faces_without_pose() -> None:
    class_at_board = [Pose(35.0 + d, -30.0 - d) for d in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    elsewhere = [Pose(-70.0, -60.0), Pose(80.0, 30.0)]
    unknown = [Pose(math.nan, math.nan)]
    cal = fit_calibration([class_at_board + elsewhere + unknown], RULES, "fsanet")
    assert (cal.yaw_deg, cal.pitch_deg, cal.faces, cal.agreeing) == (35.0, -30.0, 7, 5)
    rules = AttentionRules(calibration_yaw_deg=cal.yaw_deg, calibration_pitch_deg=cal.pitch_deg)
    assert all(is_attentive(p, rules) for p in class_at_board)
    assert not any(is_attentive(p, RULES) for p in class_at_board)  # uncalibrated: all off
    assert cal.problem() is None
    assert cal.config_lines() == (
        "[attention]\ncalibration_yaw_deg = 35.0\ncalibration_pitch_deg = -30.0\n"
        '# measured with pose_method = "fsanet": calibrate again if that changes\n'
    )


def test_faces_looking_every_which_way_are_flagged() -> None:
    cal = fit_calibration([[Pose(yaw, 0.0) for yaw in (-60.0, -30.0, 0.0, 30.0, 60.0)]], RULES, "fsanet")
    problem = cal.problem()
    assert cal.agreeing == 3 and problem is not None and "only 3 of 5 faces" in problem


def test_one_student_photographed_many_times_is_not_a_class() -> None:
    same_student = [[Pose(32.7, 1.0)]] * 4
    with pytest.raises(CalibrationError, match=r"no photo shows at least 3 faces.*the most in one: 1"):
        fit_calibration(same_student, RULES, "fsanet")
    with pytest.raises(CalibrationError, match=r"the most in one: 2"):
        fit_calibration([[Pose(1.0, 1.0), Pose(2.0, 2.0), Pose(math.nan, 0.0)]], RULES, "fsanet")
    with pytest.raises(CalibrationError, match=r"the most in one: 0"):
        fit_calibration([], RULES, "fsanet")
