"""Head pose (yaw, pitch in degrees) per detected face: FSA-Net networks, or YuNet's five landmarks + PnP.

Sign convention (FSA-Net's): +yaw = the face turns toward the image left, +pitch = the face tilts up. The
landmark estimator is mapped onto the same convention so the attention rules do not care which ran.
Crops and arrays stay inside this module's call; nothing here is stored or logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from edge_agent.inference.engine import Engine
from edge_agent.inference.guarded import GuardedEngine
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

    def close(self) -> None: ...


def crop_box(
    face: Face, width: int, height: int, margin: float = FSANET_MARGIN
) -> tuple[int, int, int, int] | None:
    """The enlarged crop (x1, y1, x2, y2 exclusive), which may reach past the frame's edges, or None when
    less than 2x2 pixels of it lie inside the frame or it is over 4 times the frame's size (no real face:
    its padding would take memory by the box's size, 22 GiB for a 40,000-pixel box)."""
    x, y, w, h = face.box
    # floor, not int(): int() rounds a negative edge up, making the crop 1 px narrower at the frame's edge
    x1, y1 = math.floor(x - margin * w), math.floor(y - margin * h)
    x2, y2 = math.floor(x + w + margin * w) + 1, math.floor(y + h + margin * h) + 1
    if min(x2, width) - max(x1, 0) < 2 or min(y2, height) - max(y1, 0) < 2:
        return None
    if x2 - x1 > 4 * width or y2 - y1 > 4 * height:
        return None
    return x1, y1, x2, y2


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box's pixels; where it reaches past the frame, the frame's edge pixels are repeated outwards.

    The authors' demo cuts the crop at the frame instead, which squeezes the face when it is resized to
    64x64: on the shared photos' 71 faces, cut so that half or all of one side's margin lay outside the
    frame, yaw moved by 5.1 and pitch by 3.4 degrees on average against the same face's whole crop; with
    the edge repeated 2.3 and 2.0 (black padding 3.2 and 1.9, mirrored 2.5 and 2.0; 2026-12-02).
    """
    x1, y1, x2, y2 = box
    height, width = image.shape[:2]
    inside = image[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        return inside
    return cv2.copyMakeBorder(
        inside, max(-y1, 0), max(y2 - height, 0), max(-x1, 0), max(x2 - width, 0), cv2.BORDER_REPLICATE
    )


def fsanet_batch(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """BGR crops -> one float32 Nx3x64x64 array, (x - 127.5) / 128: resized into one uint8 array, then
    converted and normalised in a single pass instead of once per face."""
    crops = np.empty((len(boxes), FSANET_SIZE, FSANET_SIZE, 3), dtype=np.uint8)
    for crop, box in zip(crops, boxes, strict=True):
        cv2.resize(_crop(image, box), (FSANET_SIZE, FSANET_SIZE), dst=crop)
    blob = crops.transpose(0, 3, 1, 2).astype(np.float32, order="C")
    blob -= 127.5
    blob /= 128.0
    return blob


MAX_BATCH = 32


def faces_per_call(engine: Engine) -> int:
    """1 for a fixed-batch export; else the engine profile's largest batch (``MAX_BATCH`` without one)."""
    if engine.inputs[0].shape[:1] != (-1,):
        return 1
    if isinstance(engine, GuardedEngine):
        return engine.profiles[0].max[0]
    return MAX_BATCH


class FsaNetPose:
    """Averages the outputs of the FSA-Net engines given (the authors average the 1x1 and var models).

    Each engine gets the faces of a frame in equal chunks of at most its profile's largest batch when
    its batch is dynamic (the product manifests derive such a copy, ``source.dynamic_batch``), else one
    per call.
    The engines run side by side, each further one on its own worker thread: ONNX Runtime and TensorRT
    release the GIL while they run, and the two networks cost the same, so on two cores the pose stage
    takes about half the time (benchmarks/bench_vision.py). ``parallel=False`` runs them one after the other.
    """

    method = "fsanet"

    def __init__(self, engines: Sequence[Engine], *, parallel: bool = True) -> None:
        if not engines:
            raise ValueError("FsaNetPose needs at least one engine")
        self.engines = list(engines)
        self._inputs = [e.inputs[0].name for e in self.engines]
        self._steps = [faces_per_call(e) for e in self.engines]
        self._pool: ThreadPoolExecutor | None = None
        if parallel and len(self.engines) > 1:
            self._pool = ThreadPoolExecutor(len(self.engines) - 1, thread_name_prefix="fsanet")

    def estimate(self, image: np.ndarray, faces: Sequence[Face]) -> list[Pose]:
        height, width = image.shape[:2]
        boxes = [crop_box(face, width, height) for face in faces]
        valid = [i for i, box in enumerate(boxes) if box is not None]
        poses = [Pose(math.nan, math.nan)] * len(faces)
        if not valid:
            return poses
        blob = fsanet_batch(image, [box for box in boxes if box is not None])
        total = np.zeros((len(valid), 3), dtype=np.float64)
        for out in self._run_all(blob):  # summed in engine order: the same result however they ran
            total += out
        mean = total / len(self.engines)
        for row, index in enumerate(valid):
            poses[index] = Pose(float(mean[row, 0]), float(mean[row, 1]))
        return poses

    def _run_all(self, blob: np.ndarray) -> list[np.ndarray]:
        pool = self._pool
        if pool is None:
            return [self._run(k, blob) for k in range(len(self.engines))]
        others = [pool.submit(self._run, k, blob) for k in range(1, len(self.engines))]
        try:
            first = self._run(0, blob)
        finally:
            wait(others)  # never leave an engine running into the next frame
        return [first, *(future.result() for future in others)]

    def _run(self, index: int, blob: np.ndarray) -> np.ndarray:
        engine, name, step = self.engines[index], self._inputs[index], self._steps[index]
        # Equal chunks (26 faces at most 8 a call: 7, 7, 6, 6 rather than 8, 8, 8, 2): the pair of
        # networks took 11.8 instead of 12.4 ms on the crowd photo (ONNX Runtime CPU, side by side).
        outputs = [
            next(iter(engine.infer({name: chunk}).values()))
            for chunk in np.array_split(blob, -(-len(blob) // step))
        ]
        return np.concatenate(outputs).astype(np.float64).reshape(-1, 3)

    def close(self) -> None:
        """Stop the worker threads; later calls run the engines one after the other."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


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

    def close(self) -> None:
        pass

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
        # Relative to the line of sight, as FSA-Net measures on its crop: in camera axes a face looking
        # into the lens from the frame's edge read as turned by its viewing angle (up to 27 degrees here),
        # which one calibration offset cannot take out of every seat in the room.
        x, y, z = tvec.ravel()
        yaw -= math.degrees(math.atan2(x, z))
        pitch -= math.degrees(math.atan2(y, math.hypot(x, z)))
        return Pose(yaw, pitch)
