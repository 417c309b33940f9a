"""INT8 Q/DQ models: static quantization with ONNX Runtime, calibrated on real images.

The output is an ONNX with QuantizeLinear/DequantizeLinear pairs (``QuantFormat.QDQ``): ONNX Runtime runs it
on the CPU, and TensorRT builds an INT8 engine from it as a strongly typed network (the INT8 path TensorRT
11 keeps). Weights per channel, weights and activations symmetric signed INT8 (what TensorRT expects),
biases left in float. The accuracy change against FP32 is measured on held-out inputs, never on the
calibration set.

Calibration data comes from a folder of photos: whole frames for the face detector, face crops for head
pose (boxes from dlib "imglab" XML files where the folder has them, else centre crops).
"""

from __future__ import annotations

import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.errors import ModelError
from edge_agent.image_files import read_image
from edge_agent.inference.conv_fold import STACKED
from edge_agent.inference.fetch import folder_owner, give_file, make_folder
from edge_agent.inference.manifest import InputProfile, Manifest
from edge_agent.vision import yunet  # the daemon's own decode: the gate counts the faces the board would see

log = logging.getLogger(__name__)

QDQ_MIN_OPSET = 13
# The accuracy an INT8 model must keep on held-out inputs to be put where the loader finds it: FSA-Net
# 1x1 quantized symmetric was off by 28 degrees on average and flipped the attentive flag of 21 of the 84
# shared faces (fsanet-var: 0.72 degrees calibrated on 32 of them, 2.4 on 16).
MAX_MEAN_ABS_DIFF = {"pose": (3.0, " degrees"), "kt": (0.01, "")}  # role -> (limit, unit)
# Faces, not grid cells: with ~6,300 mostly background cells a frame, a detector that found no face at all
# kept 99.5 % of cells on the right side of the threshold on 6 of the 13 shared photos. YuNet INT8
# (calibrated on 5 of them) finds 81 of FP32's 82 faces on all 13 plus 1 other (F1 0.988), and the same 37
# faces on the 8 held out.
MIN_FACE_F1 = 0.95
FACE_SCORE, FACE_NMS, FACE_IOU = 0.6, 0.3, 0.5  # the detector's defaults; a face matched at IoU 0.5
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class AccuracyReport:
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    per_output: dict[str, tuple[float, float]]  # output -> (max, mean) abs diff
    faces: tuple[int, int, int] | None = None  # detectors: faces found by FP32, by INT8, by both

    @property
    def face_f1(self) -> float | None:
        """2 * both / (FP32's + INT8's): 1 when INT8 finds exactly FP32's faces, 0 when none of them."""
        if self.faces is None or not (self.faces[0] + self.faces[1]):
            return None
        return 2 * self.faces[2] / (self.faces[0] + self.faces[1])

    def problem(self, role: str) -> str | None:
        """What makes the INT8 model unfit for ``role`` (MIN_FACE_F1, MAX_MEAN_ABS_DIFF), or None when it
        is fit."""
        if role == "face":
            if self.faces is None or self.face_f1 is None:
                return ("neither model finds a face in the held-out photos, so nothing is measured; give "
                        "--data photos with faces (the last --held-out photos are the ones measured)")
            if self.face_f1 < MIN_FACE_F1:
                fp32, int8, both = self.faces
                return (f"of the {fp32} faces FP32 finds in the held-out photos INT8 finds {both}, and "
                        f"{int8 - both} others (F1 {self.face_f1:.3f}, at least {MIN_FACE_F1} wanted)")
            return None
        limit, unit = MAX_MEAN_ABS_DIFF.get(role, (0.0, ""))
        if self.mean_abs_diff > limit:
            return (f"its outputs are off by {self.mean_abs_diff:.3g}{unit} on average against FP32 "
                    f"(at most {limit:g}{unit} wanted for a {role} model)")
        return None

    def lines(self) -> list[str]:
        out = [
            f"held-out samples: {self.samples}",
            f"max |int8 - fp32|: {self.max_abs_diff:.4g}, mean: {self.mean_abs_diff:.4g}",
        ]
        if self.faces is not None:
            out.append(f"faces found by fp32: {self.faces[0]}, int8: {self.faces[1]}, both: {self.faces[2]}"
                       + (f" (F1 {self.face_f1:.3f})" if self.face_f1 is not None else ""))
        return out


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ModelError(f"calibration folder {folder} does not exist")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ModelError(f"calibration folder {folder} holds no .jpg/.png images")
    return found


def _read(path: Path) -> np.ndarray | None:
    image = read_image(path)  # by its bytes: OpenCV's imread crashes on a name that is not UTF-8
    if image is None:
        log.warning("calibration image %s cannot be decoded; skipped", path.name)
    return image


def letterbox_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR 0-255 NCHW float32 of ``height`` x ``width``: scaled to fit, padded bottom/right (YuNet input)."""
    scale = min(height / image.shape[0], width / image.shape[1])
    resized = cv2.resize(
        image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    )
    canvas = np.zeros((height, width, 3), np.float32)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas.transpose(2, 0, 1)[None]


def fsanet_crop(face: np.ndarray, size: int = 64) -> np.ndarray:
    """FSA-Net input: BGR crop resized to ``size``, CHW, (x - 127.5) / 128."""
    resized = cv2.resize(face, (size, size)).astype(np.float32)
    return ((resized - 127.5) / 128.0).transpose(2, 0, 1)[None]


def _imglab_boxes(folder: Path) -> dict[Path, list[tuple[int, int, int, int]]]:
    """Face boxes (top, left, width, height) by resolved image path, from dlib imglab XML files: an
    ``<image file=...>`` names its photo relative to the XML's folder, as dlib's load_image_dataset reads
    it. By bare name, day1/labels.xml's boxes were cut out of day2/IMG_0001.jpg too (background crops)."""
    boxes: dict[Path, list[tuple[int, int, int, int]]] = {}
    for xml in sorted(folder.rglob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            log.warning("%s is not valid XML (%s); ignored", xml.name, exc)
            continue
        for image in root.iter("image"):
            for box in image.iter("box"):
                try:
                    entry = tuple(int(box.attrib[k]) for k in ("top", "left", "width", "height"))
                except (KeyError, ValueError):
                    continue
                where = (xml.parent / image.attrib.get("file", "")).resolve()
                boxes.setdefault(where, []).append(entry)  # type: ignore[arg-type]
    return boxes


def _face_crops(folder: Path) -> Iterator[np.ndarray]:
    boxes = _imglab_boxes(folder)
    for path in _images(folder):
        image = _read(path)
        if image is None:
            continue
        rows = boxes.get(path.resolve())
        if not rows:  # no labels: one centre square, roughly a portrait's face
            side = min(image.shape[:2]) // 2
            rows = [((image.shape[0] - side) // 2, (image.shape[1] - side) // 2, side, side)]
        for top, left, width, height in rows:
            pad = int(0.2 * max(width, height))  # FSA-Net was trained on loosely cropped faces
            y0, x0 = max(0, top - pad), max(0, left - pad)
            crop = image[y0 : top + height + pad, x0 : left + width + pad]
            if crop.size:
                yield fsanet_crop(crop)


def calibration_inputs(
    manifest: Manifest, profiles: Sequence[InputProfile], folder: Path, limit: int
) -> list[Feeds]:
    """Up to ``limit`` input dicts for ``manifest`` built from the photos in ``folder``."""
    if manifest.calibration is None:
        raise ModelError(f"{manifest.name}: the manifest names no INT8 calibration data ([int8] table)")
    if len(profiles) != 1:
        raise ModelError(f"{manifest.name}: calibration from photos needs a model with one image input")
    profile = profiles[0]
    kind = manifest.calibration.kind
    arrays: Iterator[np.ndarray]
    if kind == "frames":
        height, width = profile.opt[2], profile.opt[3]
        arrays = (
            letterbox_frame(img, height, width) for p in _images(folder) if (img := _read(p)) is not None
        )
    elif kind == "face_crops":
        arrays = _face_crops(folder)
    else:
        raise ModelError(f"{manifest.name}: calibration kind {kind!r} cannot be built from a photo folder")
    feeds = [{profile.name: a} for _, a in zip(range(limit), arrays, strict=False)]
    if not feeds:
        raise ModelError(f"no usable calibration samples for {manifest.name} in {folder}")
    return feeds


def _reader(feeds: Sequence[Feeds]) -> object:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(feeds)

        def get_next(self) -> Feeds | None:
            return next(self._items, None)

        def rewind(self) -> None:
            self._items = iter(feeds)

    return _Reader()


def quantize_qdq(
    source: Path, dest: Path, calibration: Sequence[Feeds], *, activation_symmetric: bool = True
) -> None:
    """Write a Q/DQ INT8 model of ``source`` to ``dest`` (atomically), MinMax-calibrated on ``calibration``.

    ``activation_symmetric=False`` gives activations a zero point: far more accurate for FSA-Net on ONNX
    Runtime, but TensorRT accepts only zero-point-0 INT8, so such a model is for ONNX Runtime only.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    owner = folder_owner(dest.parent)  # run as root: the daemon's cache stays the daemon's (fetch.py)
    make_folder(dest.parent, owner)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part.onnx", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    prepared = tmp.with_suffix(".prep.onnx")
    try:
        _prepare(source, prepared)
        import onnx

        # MatMul stays float: ONNX Runtime 1.23 (the last release for Python 3.10, i.e. JetPack 6's
        # fallback) cannot run per-channel MatMul weights once it fuses them to QLinearMatMul.
        nodes = onnx.load(str(prepared)).graph.node
        op_types = sorted({n.op_type for n in nodes} - {"MatMul"})
        # YuNet's stacked heads stay float too: one activation scale for their 16 channels (logits, box
        # and landmark offsets) took the mean |int8 - fp32| from 0.073 (heads apart) to 0.111; 0.073 in float.
        stacked = [n.name for n in nodes if STACKED in n.name]
        quantize_static(
            str(prepared),
            str(tmp),
            _reader(calibration),  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=op_types,
            nodes_to_exclude=stacked,
            # Names checked against onnxruntime 1.32's quantize.py: symmetric ranges (zero point 0) are what
            # TensorRT's explicit quantization needs; biases stay float so TensorRT fuses them itself.
            extra_options={
                "ActivationSymmetric": activation_symmetric,
                "WeightSymmetric": True,
                "QuantizeBias": False,
            },
        )
        if owner is not None:  # written by quantize_static by name
            give_file(tmp, owner)
        os.replace(tmp, dest)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises untyped errors
        raise ModelError(f"quantization of {source.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)


def _prepare(source: Path, dest: Path) -> None:
    """Opset 13 or newer (per-channel DequantizeLinear needs its ``axis``), then ORT's pre-processing
    (shape inference, BatchNorm folded into Conv so its weights quantize per channel)."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < QDQ_MIN_OPSET:
        model = version_converter.convert_version(model, QDQ_MIN_OPSET)
    upgraded = dest.with_suffix(".opset.onnx")
    try:
        onnx.save(model, str(upgraded))
        quant_pre_process(str(upgraded), str(dest), skip_symbolic_shape=True)
    finally:
        upgraded.unlink(missing_ok=True)


def compare_outputs(
    fp32: Sequence[Feeds], int8: Sequence[Feeds], detector_size: tuple[int, int] | None = None
) -> AccuracyReport:
    """Accuracy change of ``int8`` outputs against ``fp32`` outputs of the same held-out inputs;
    ``detector_size``: the (width, height) of YuNet's input, whose outputs are decoded into faces."""
    per: dict[str, list[np.ndarray]] = {}
    faces = np.zeros(3, np.int64)
    for ref, got in zip(fp32, int8, strict=True):
        for name, value in ref.items():
            per.setdefault(name, []).append(np.abs(got[name].astype(np.float64) - value).ravel())
        if detector_size is not None:
            faces += _faces_found(ref, got, *detector_size)
    if not per:
        raise ModelError("no held-out samples to compare")
    per_output = {
        k: (float(np.max(np.concatenate(v))), float(np.mean(np.concatenate(v)))) for k, v in per.items()
    }
    every = np.concatenate([np.concatenate(v) for v in per.values()])
    found = None if detector_size is None else (int(faces[0]), int(faces[1]), int(faces[2]))
    return AccuracyReport(len(fp32), float(every.max()), float(every.mean()), per_output, found)


def _faces_found(ref: Feeds, got: Feeds, width: int, height: int) -> tuple[int, int, int]:
    """Faces (after NMS) in ``ref``'s and ``got``'s YuNet outputs, and how many of them match one to one."""
    a, b = (
        yunet.nms(yunet.decode(o, width, height, FACE_SCORE), FACE_SCORE, FACE_NMS)[:, :4].astype(np.float64)
        for o in (ref, got)
    )
    if not len(a) or not len(b):
        return len(a), len(b), 0
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iou = inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)
    both = 0
    while iou.size and iou.max() >= FACE_IOU:  # greedy, best overlap first: each face matched once
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        iou[i, :], iou[:, j] = -1.0, -1.0
        both += 1
    return len(a), len(b), both
