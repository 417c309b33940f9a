"""Where a face looking at the board points, as the camera sees it: the attentive rule's calibration (pure).

The camera sits above or beside the board, so a student looking at the board does not look into the lens:
seen from the camera, the head is turned by an angle that depends on where the camera is mounted. The
installer takes a few photos while the class looks at the board; the median yaw and pitch of those faces
is that angle (``attention.calibration_yaw_deg`` / ``calibration_pitch_deg``). Medians, because a few
students always look elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.errors import InputRejected
from edge_agent.vision.attention import AttentionRules, is_attentive
from edge_agent.vision.pose import Pose

MIN_FACES = 3  # in one photo: the same student photographed three times is not a class
MIN_AGREEING = 2 / 3  # of the faces must count as attentive around the new direction
LIMIT_DEG = 90.0  # the config's bounds for both angles


class CalibrationError(InputRejected):
    """The photos cannot calibrate the camera (no photo with enough faces with a head pose)."""


@dataclass(frozen=True)
class Calibration:
    yaw_deg: float
    pitch_deg: float
    faces: int  # with a head pose, over all photos
    yaw_quartiles: tuple[float, float]  # the middle half of the faces lies between these
    pitch_quartiles: tuple[float, float]
    agreeing: int  # faces that count as attentive with this calibration
    pose_method: str

    def problem(self) -> str | None:
        """Why these photos look unfit to calibrate from, or None."""
        if self.agreeing < MIN_AGREEING * self.faces:
            return (
                f"only {self.agreeing} of {self.faces} faces would count as attentive around this direction: "
                "were they all looking at the board? Take the photos again while the class looks at the board"
            )
        return None

    def config_lines(self) -> str:
        return (
            "[attention]\n"
            f"calibration_yaw_deg = {self.yaw_deg:.1f}\n"
            f"calibration_pitch_deg = {self.pitch_deg:.1f}\n"
            f'# measured with pose_method = "{self.pose_method}": calibrate again if that changes\n'
        )


def fit_calibration(
    photos: Iterable[Sequence[Pose]], rules: AttentionRules, pose_method: str, min_faces: int = MIN_FACES
) -> Calibration:
    """The median pose of the faces in ``photos`` (each a photo's poses); CalibrationError unless one
    photo holds at least ``min_faces`` faces with a head pose."""
    per_photo = [[p for p in poses if math.isfinite(p.yaw) and math.isfinite(p.pitch)] for poses in photos]
    most = max((len(known) for known in per_photo), default=0)
    if most < min_faces:
        raise CalibrationError(
            f"no photo shows at least {min_faces} faces with a head pose (the most in one: {most}): "
            "take photos with more of the class in view, looking at the board"
        )
    known = [p for photo in per_photo for p in photo]
    yaw = np.array([p.yaw for p in known])
    pitch = np.array([p.pitch for p in known])
    yaw_deg = float(np.clip(np.median(yaw), -LIMIT_DEG, LIMIT_DEG))
    pitch_deg = float(np.clip(np.median(pitch), -LIMIT_DEG, LIMIT_DEG))
    around = dataclasses.replace(rules, calibration_yaw_deg=yaw_deg, calibration_pitch_deg=pitch_deg)
    return Calibration(
        yaw_deg=yaw_deg,
        pitch_deg=pitch_deg,
        faces=len(known),
        yaw_quartiles=_quartiles(yaw),
        pitch_quartiles=_quartiles(pitch),
        agreeing=sum(is_attentive(p, around) for p in known),
        pose_method=pose_method,
    )


def _quartiles(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [25, 75])
    return float(lo), float(hi)
