"""YuNet decode: parity with cv2.FaceDetectorYN, recall on labelled faces, and malformed outputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.vision.yunet import YuNetDetector, decode, fit_size, iou, nms, to_blob


def _images(faces_dir: Path) -> list[Path]:
    return sorted(faces_dir.glob("*/*.jpg"))


def _labelled(faces_dir: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(faces_dir / "voc_dlib" / name).getroot().iter("image"):
            boxes.setdefault(image.get("file", ""), []).extend(
                tuple(float(b.get(k, 0)) for k in ("left", "top", "width", "height"))  # type: ignore[misc]
                for b in image.iter("box")
            )
    return boxes


def test_size_policy_scales_longer_side_to_640_and_keeps_camera_frames_unscaled():
    assert fit_size(640, 480) == (640, 480)
    assert fit_size(1024, 1024) == (640, 640)
    assert fit_size(500, 375) == (640, 480)
    assert fit_size(360, 480) == (480, 640)
    assert fit_size(4000, 100) == (640, 96)  # never below the engine profile's minimum side
    with pytest.raises(ValueError):
        fit_size(0, 480)


def test_blob_is_padded_to_multiple_of_32_with_raw_bgr_values():
    image = np.full((100, 70, 3), (1, 2, 3), np.uint8)
    blob = to_blob(image)
    assert blob.shape == (1, 3, 128, 96)
    assert blob[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]
    assert blob[0, :, 100:, :].max() == 0 and blob[0, :, :, 70:].max() == 0


def test_decoder_matches_opencv_face_detector_on_every_shared_photo(faces_dir, model_mirror, detector):
    reference = cv2.FaceDetectorYN.create(
        str(model_mirror / "yunet" / "face_detection_yunet_2023mar.onnx"), "", (320, 320), 0.6, 0.3, 5000
    )
    images = _images(faces_dir)
    assert len(images) == 13
    for path in images:
        image = cv2.imread(str(path))
        width, height = fit_size(image.shape[1], image.shape[0])
        # One resized input for both sides (prepare leaves a frame of fit_size alone): the comparison is of
        # the decoder, not of the resize.
        resized = cv2.resize(image, (width, height))
        ours = detector.detect(resized)
        reference.setInputSize((width, height))
        _, theirs = reference.detect(resized)
        theirs = np.zeros((0, 15)) if theirs is None else theirs
        assert len(ours) == len(theirs), path.name
        for face, row in zip(ours, theirs, strict=True):
            mine = np.array([*face.box, *(c for point in face.landmarks for c in point), face.score])
            assert np.abs(mine[:14] - row[:14]).max() < 0.5, path.name
            assert abs(mine[14] - row[14]) < 1e-3


def test_finds_all_43_labelled_faces_in_voc_photos(faces_dir, detector):
    labelled = _labelled(faces_dir)
    assert sum(len(v) for v in labelled.values()) == 43
    missed = []
    for name, boxes in labelled.items():
        faces = detector.detect(cv2.imread(str(faces_dir / "voc_dlib" / name)))
        missed += [(name, box) for box in boxes if not any(iou(box, f.box) >= 0.5 for f in faces)]
    assert missed == []


def test_crowd_frame_keeps_most_spectators_at_camera_resolution(faces_dir, detector):
    image = cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg"))
    assert len(detector.detect(image)) == 27  # 1024x624 runs at 640x390
    stretched = cv2.resize(image, (640, 480))  # a 4:3 camera frame: one small face drops below 0.6
    assert len(detector.detect(stretched)) >= 25


def test_full_hd_frame_is_shrunk_by_averaging_so_thin_lines_are_not_skipped(detector):
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, 2::3] = 255  # a bright line 1 px wide every 3 columns: the detail of a distant face
    blob, width, height, _, _ = detector.prepare(frame)
    assert (width, height) == (640, 360)
    # INTER_LINEAR reads only the middle column of each 3 and gives 0; averaging gives 255 / 3.
    assert np.abs(blob[0, :, :360, :640] - 85).max() <= 1


def test_full_hd_frame_keeps_the_distant_faces_of_the_crowd(faces_dir, detector):
    image = cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg"))
    frame = np.full((1080, 1920, 3), 127, np.uint8)  # the crowd at 1:1 in a grey 1080p scene
    frame[228:228 + image.shape[0], 448:448 + image.shape[1]] = image
    # cv2.FaceDetectorYN finds 26 at 1920x1080; shrunk with INTER_LINEAR 23 were left (one placement: over
    # 24 the gain is 516 against 511 of 640, yunet.py's docstring).
    assert len(detector.detect(frame)) >= 25


def test_grey_and_float_frames_are_refused_instead_of_read_with_unset_channels(faces_dir, detector):
    image = cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg"))
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for frame in (grey, grey[:, :, None], image.astype(np.float32)):
        with pytest.raises(ValueError, match="8-bit BGR"):
            detector.prepare(frame)
        with pytest.raises(ValueError, match="COLOR_GRAY2BGR"):
            to_blob(frame)
    with pytest.raises(ValueError, match="COLOR_BGRA2BGR"):  # an IndexError before
        detector.prepare(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))


def test_blank_frame_gives_no_faces(detector):
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_decode_rejects_outputs_of_the_wrong_grid_size():
    outputs = {f"{k}_{s}": np.zeros((1, 10, 4 if k == "bbox" else 10 if k == "kps" else 1), np.float32)
               for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)}
    with pytest.raises(ValueError, match="cells"):
        decode(outputs, 640, 480, 0.6)


def test_nms_keeps_the_better_of_two_overlapping_boxes_and_handles_none():
    rows = np.zeros((2, 15), np.float32)
    rows[0, :4], rows[0, 14] = (10, 10, 50, 50), 0.8
    rows[1, :4], rows[1, 14] = (12, 11, 50, 50), 0.95
    kept = nms(rows, 0.6, 0.3)
    assert len(kept) == 1 and kept[0, 14] == pytest.approx(0.95)
    assert len(nms(np.zeros((0, 15), np.float32), 0.6, 0.3)) == 0


def test_detector_reports_faces_in_original_frame_coordinates(faces_dir, detector: YuNetDetector):
    image = cv2.imread(str(faces_dir / "pexels" / "Test1.jpg"))  # 1024x1024, run at 640x640
    (face,) = detector.detect(image)
    x, y, w, h = face.box
    assert 300 < x < 450 and 200 < y < 330 and w > 200 and h > 300
