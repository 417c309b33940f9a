"""Where a face looking at the board points, as the camera sees it: the attentive rule's calibration (pure).

The camera sits above or beside the board, so a student looking at the board does not look into the lens:
seen from the camera, the head is turned by an angle that depends on where the camera is mounted. The
installer takes a few photos while the class looks at the board; the median yaw and pitch of those faces
is that angle (``attention.calibration_yaw_deg`` / ``calibration_pitch_deg``). Medians, because a few
students always look elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edge_agent.errors import InputRejected
from edge_agent.vision.pose import Pose

MIN_FACES = 3
LIMIT_DEG = 90.0  # the config's bounds for both angles


class CalibrationError(InputRejected):
    """The photos cannot calibrate the camera (too few faces with a head pose)."""


@dataclass(frozen=True)
class Calibration:
    yaw_deg: float
    pitch_deg: float
    faces: int
    yaw_quartiles: tuple[float, float]  # the middle half of the faces lies between these
    pitch_quartiles: tuple[float, float]

    def config_lines(self) -> str:
        return (
            "[attention]\n"
            f"calibration_yaw_deg = {self.yaw_deg:.1f}\n"
            f"calibration_pitch_deg = {self.pitch_deg:.1f}\n"
        )

    def spread_problem(self, yaw_limit_deg: float, pitch_limit_deg: float) -> str | None:
        """Why the photos look unfit (the middle half of the faces spread wider than the limits), or None."""
        yaw_lo, yaw_hi = self.yaw_quartiles
        pitch_lo, pitch_hi = self.pitch_quartiles
        if yaw_hi - yaw_lo > yaw_limit_deg or pitch_hi - pitch_lo > pitch_limit_deg:
            return (
                "the faces point in different directions (the middle half: yaw "
                f"{yaw_lo:+.0f} to {yaw_hi:+.0f}, pitch {pitch_lo:+.0f} to {pitch_hi:+.0f} degrees): "
                "were they all looking at the board? "
                "Take the photos again while the class looks at the board"
            )
        return None


def fit_calibration(poses: Iterable[Pose], min_faces: int = MIN_FACES) -> Calibration:
    """The median pose of faces that look at the board; CalibrationError with fewer than ``min_faces``."""
    known = [p for p in poses if math.isfinite(p.yaw) and math.isfinite(p.pitch)]
    if len(known) < min_faces:
        raise CalibrationError(
            f"{len(known)} faces with a head pose in the photos; calibrating needs at least {min_faces}: "
            "take photos with more of the class in view, looking at the board"
        )
    yaw = np.array([p.yaw for p in known])
    pitch = np.array([p.pitch for p in known])

    def quartiles(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(values, [25, 75])
        return float(lo), float(hi)

    return Calibration(
        yaw_deg=float(np.clip(np.median(yaw), -LIMIT_DEG, LIMIT_DEG)),
        pitch_deg=float(np.clip(np.median(pitch), -LIMIT_DEG, LIMIT_DEG)),
        faces=len(known),
        yaw_quartiles=quartiles(yaw),
        pitch_quartiles=quartiles(pitch),
    )
