"""Head pose (yaw, pitch in degrees) per detected face: FSA-Net networks, or YuNet's five landmarks + PnP.

Sign convention (FSA-Net's): +yaw = the face turns toward the image left, +pitch = the face tilts up. The
landmark estimator is mapped onto the same convention so the attention rules do not care which ran.
Crops and arrays stay inside this module's call; nothing here is stored or logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from edge_agent.inference.engine import Engine
from edge_agent.vision.yunet import Face

FSANET_SIZE = 64
# The FSA-Net authors' demos enlarge the detector box by 60% of its size on each side before resizing.
FSANET_MARGIN = 0.6


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float


class PoseEstimator(Protocol):
    method: str

    def estimate(self, image: np.ndarray, faces: Sequence[Face]) -> list[Pose]: ...


def crop_box(
    face: Face, width: int, height: int, margin: float = FSANET_MARGIN
) -> tuple[int, int, int, int] | None:
    """The enlarged crop (x1, y1, x2, y2 exclusive) clipped to the frame, or None when it is empty."""
    x, y, w, h = face.box
    x1 = max(int(x - margin * w), 0)
    y1 = max(int(y - margin * h), 0)
    x2 = min(int(x + w + margin * w), width - 1) + 1
    y2 = min(int(y + h + margin * h), height - 1) + 1
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def fsanet_input(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """BGR crop -> float32 1x3x64x64, (x - 127.5) / 128, as the model was trained."""
    x1, y1, x2, y2 = box
    crop = cv2.resize(image[y1:y2, x1:x2], (FSANET_SIZE, FSANET_SIZE))
    return ((crop.transpose(2, 0, 1)[None].astype(np.float32)) - 127.5) / 128.0


MAX_BATCH = 32


class FsaNetPose:
    """Averages the outputs of the FSA-Net engines given (the authors average the 1x1 and var models).

    The published exports fix the batch at one, so faces then run one call each; an engine whose input
    batch is dynamic (-1) gets all faces of a frame in one call (chunks of ``MAX_BATCH``). On one CPU
    thread that saves little (benchmarks/bench_vision.py); it pays off where per-call overhead dominates
    (TensorRT on the GPU) or with several ONNX Runtime threads.
    """

    method = "fsanet"

    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("FsaNetPose needs at least one engine")
        self.engines = list(engines)
        self._inputs = [e.inputs[0].name for e in self.engines]
        self._batched = [e.inputs[0].shape[:1] == (-1,) for e in self.engines]

    def estimate(self, image: np.ndarray, faces: Sequence[Face]) -> list[Pose]:
        height, width = image.shape[:2]
        boxes = [crop_box(face, width, height) for face in faces]
        valid = [i for i, box in enumerate(boxes) if box is not None]
        poses = [Pose(math.nan, math.nan)] * len(faces)
        if not valid:
            return poses
        blob = np.concatenate([fsanet_input(image, boxes[i]) for i in valid])  # type: ignore[arg-type]
        total = np.zeros((len(valid), 3), dtype=np.float64)
        for engine, name, batched in zip(self.engines, self._inputs, self._batched, strict=True):
            step = MAX_BATCH if batched else 1
            for start in range(0, len(valid), step):
                out = next(iter(engine.infer({name: blob[start:start + step]}).values()))
                total[start:start + step] += np.asarray(out, dtype=np.float64).reshape(-1, 3)
        mean = total / len(self.engines)
        for row, index in enumerate(valid):
            poses[index] = Pose(float(mean[row, 0]), float(mean[row, 1]))
        return poses


# A generic adult face (mm) in YuNet's landmark order, posed frontal in camera axes (x right, y down,
# z away from the camera): the subject's right eye is on the image left and behind the nose tip.
GENERIC_FACE = np.array(
    [
        [-32.0, -33.0, 28.0],  # right eye
        [32.0, -33.0, 28.0],  # left eye
        [0.0, 0.0, 0.0],  # nose tip
        [-25.0, 32.0, 24.0],  # right mouth corner
        [25.0, 32.0, 24.0],  # left mouth corner
    ],
    dtype=np.float64,
)


class LandmarkPose:
    """Pose from the five YuNet landmarks with cv2.solvePnP (EPnP, then iterative refinement).

    Needs no second network. Yaw is usable; pitch carries a camera-dependent bias that the calibration
    (AttentionSettings.calibration_pitch_deg) absorbs.
    """

    method = "landmarks"

    def estimate(self, image: np.ndarray, faces: Sequence[Face]) -> list[Pose]:
        height, width = image.shape[:2]
        focal = float(max(width, height))
        camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
        return [self._one(face, camera) for face in faces]

    @staticmethod
    def _one(face: Face, camera: np.ndarray) -> Pose:
        model = GENERIC_FACE
        points = np.array(face.landmarks, dtype=np.float64)
        ok, rvec, tvec = cv2.solvePnP(model, points, camera, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            return Pose(math.nan, math.nan)
        ok, rvec, tvec = cv2.solvePnP(model, points, camera, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return Pose(math.nan, math.nan)
        rotation, _ = cv2.Rodrigues(rvec)
        # The face's forward axis in camera coordinates; pointing at the camera is (0, 0, -1).
        forward = rotation @ np.array([0.0, 0.0, -1.0])
        yaw = math.degrees(math.atan2(-forward[0], -forward[2]))
        pitch = math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2])))
        return Pose(yaw, pitch)
