"""YuNet face detection: input sizing, pre-processing and the pure decode + NMS of its 12 output heads.

The decode reproduces OpenCV's ``cv2.FaceDetectorYN`` (modules/objdetect/src/face_detect.cpp) so that the
same model gives the same faces whichever runtime (ONNX Runtime, TensorRT) executes it:
score = sqrt(cls * obj); box centre = (cell + d) * stride, size = exp(log size) * stride; NMS on the
integer-truncated boxes, as OpenCV does. Input is raw BGR 0-255, NCHW, padded bottom/right to 32.

Input size policy: the frame is scaled so that its longer side is ``target_size`` (640) pixels, keeping the
aspect ratio; a 640x480 camera frame therefore runs unscaled. Frames shrunk by 2 or more (1280 px wide and
up) use INTER_AREA, which averages every pixel, where INTER_LINEAR's 2x2 taps skip rows and columns: of the
faces OpenCV finds at full size in 1920x1080 frames (the crowd photo placed 24 ways) it kept 516/640 against
511, with 55 boxes OpenCV did not give against 60. Below 2, INTER_LINEAR reads every pixel too, found as many
faces (1024x768: 616 against AREA's 614) and is 3-7 times faster (0.5 against 3.4 ms for 1024x624 on one x86
core); it also enlarges. Faces are reported in the caller's frame coordinates.

Frames must be 8-bit BGR (the camera adapter converts BGRA); other layouts raise ValueError rather than
give a blob with unset or misread channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.inference.engine import Engine

STRIDES = (8, 16, 32)
PAD_DIVISOR = 32
MIN_SIDE = 96


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixels: box (x, y, w, h), score, five landmarks.

    Landmark order (subject's side): right eye, left eye, nose tip, right mouth corner, left mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]


def fit_size(width: int, height: int, target_size: int = 640) -> tuple[int, int]:
    """The network input size for a frame: longer side ``target_size``, aspect kept, sides >= 96 px.

    96 is the smallest side the engine manifests (engines/yunet.toml) admit.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} is empty")
    scale = target_size / max(width, height)
    return max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))


def padded(size: int) -> int:
    return ((size - 1) // PAD_DIVISOR + 1) * PAD_DIVISOR


def check_bgr(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is what the model reads: 8-bit BGR, height x width x 3."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return
    layout = (f"a {type(image).__name__}" if not isinstance(image, np.ndarray)
              else f"a {image.dtype} array of shape {image.shape}")
    raise ValueError(
        f"the face detector takes 8-bit BGR colour frames (height x width x 3, uint8), got {layout}; "
        "convert with cv2.cvtColor (COLOR_GRAY2BGR for grey, COLOR_BGRA2BGR for BGRA)"
    )


def to_blob(image: np.ndarray) -> np.ndarray:
    """BGR uint8 HxWx3 -> float32 1x3xH'xW' padded with zeros to a multiple of 32."""
    check_bgr(image)  # a grey frame would leave channels 1-2 of the np.empty blob unset
    height, width = image.shape[:2]
    blob = np.empty((1, 3, padded(height), padded(width)), dtype=np.float32)
    blob[0, :, height:, :] = 0.0  # only the padding is zeroed: the frame overwrites the rest
    blob[0, :, :height, width:] = 0.0
    # One contiguous plane per channel: 0.35 instead of 0.88 ms for a 640x480 frame with a strided
    # transpose into a zeroed array.
    for channel, plane in enumerate(cv2.split(image)):
        blob[0, channel, :height, :width] = plane
    return blob


def decode(
    outputs: dict[str, np.ndarray], width: int, height: int, score_threshold: float
) -> np.ndarray:
    """Raw head outputs -> candidate rows [x, y, w, h, 10 landmark coords, score] above the threshold.

    ``width``/``height`` are the unpadded input size; the grid follows the padded size as in OpenCV.
    """
    pad_w, pad_h = padded(width), padded(height)
    rows: list[np.ndarray] = []
    for stride in STRIDES:
        cols, grid_rows = pad_w // stride, pad_h // stride
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        if cls.size != cols * grid_rows or obj.size != cls.size:
            raise ValueError(f"YuNet head {stride} has {cls.size} cells, expected {cols * grid_rows}")
        score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
        col = (keep % cols).astype(np.float32)
        row = (keep // cols).astype(np.float32)
        out = np.empty((keep.size, 15), dtype=np.float32)
        w = np.exp(bbox[:, 2]) * stride
        h = np.exp(bbox[:, 3]) * stride
        out[:, 0] = (col + bbox[:, 0]) * stride - w / 2.0
        out[:, 1] = (row + bbox[:, 1]) * stride - h / 2.0
        out[:, 2] = w
        out[:, 3] = h
        out[:, 4:14:2] = (kps[:, 0::2] + col[:, None]) * stride
        out[:, 5:14:2] = (kps[:, 1::2] + row[:, None]) * stride
        out[:, 14] = score[keep]
        rows.append(out)
    if not rows:
        return np.zeros((0, 15), dtype=np.float32)
    return np.concatenate(rows)


def nms(
    candidates: np.ndarray, score_threshold: float, nms_threshold: float, top_k: int = 5000
) -> np.ndarray:
    """Keep the best non-overlapping rows, ordered by score (OpenCV semantics: integer boxes)."""
    if len(candidates) == 0:
        return candidates
    boxes = np.trunc(candidates[:, :4]).astype(np.float64).tolist()
    scores = candidates[:, 14].astype(np.float64).tolist()
    keep = cv2.dnn.NMSBoxes(boxes, scores, score_threshold, nms_threshold, 1.0, top_k)
    return candidates[np.asarray(keep, dtype=np.int64).reshape(-1)]


def to_faces(rows: np.ndarray, scale_x: float = 1.0, scale_y: float = 1.0) -> list[Face]:
    """Rows in network-input pixels -> faces in frame pixels (divide by the resize factors)."""
    frame = rows.astype(np.float64)
    frame[:, 0:14:2] /= scale_x  # x, w and the landmarks' x
    frame[:, 1:14:2] /= scale_y
    # one tolist, then plain floats: 0.03 instead of 0.075 ms for 26 faces with numpy scalars per field
    return [
        Face(
            (r[0], r[1], r[2], r[3]),
            r[14],
            ((r[4], r[5]), (r[6], r[7]), (r[8], r[9]), (r[10], r[11]), (r[12], r[13])),
        )
        for r in frame.tolist()
    ]


class YuNetDetector:
    """Runs a YuNet engine (dynamic-shape model) on BGR frames of any size."""

    def __init__(
        self,
        engine: Engine,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        target_size: int = 640,
    ) -> None:
        self.engine = engine
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.target_size = target_size
        self._input = engine.inputs[0].name

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, int, int, float, float]:
        """Resize per the size policy and build the blob; returns (blob, w, h, scale_x, scale_y).

        Any other layout than 8-bit BGR raises ValueError (the camera adapter converts BGRA: as_bgr)."""
        check_bgr(image)
        height, width = image.shape[:2]
        in_w, in_h = fit_size(width, height, self.target_size)
        if (in_w, in_h) != (width, height):
            # INTER_AREA where INTER_LINEAR would skip pixels (module docstring)
            skips = width >= 2 * in_w and height >= 2 * in_h
            how = cv2.INTER_AREA if skips else cv2.INTER_LINEAR
            image = cv2.resize(image, (in_w, in_h), interpolation=how)
        return to_blob(image), in_w, in_h, in_w / width, in_h / height

    def run(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        return self.engine.infer({self._input: blob})

    def postprocess(
        self, outputs: dict[str, np.ndarray], in_w: int, in_h: int, scale_x: float, scale_y: float
    ) -> list[Face]:
        candidates = decode(outputs, in_w, in_h, self.score_threshold)
        kept = nms(candidates, self.score_threshold, self.nms_threshold, self.top_k)
        return to_faces(kept, scale_x, scale_y)

    def detect(self, image: np.ndarray) -> list[Face]:
        blob, in_w, in_h, sx, sy = self.prepare(image)
        return self.postprocess(self.run(blob), in_w, in_h, sx, sy)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 and math.isfinite(union) else 0.0
