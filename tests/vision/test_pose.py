"""Head pose on real photos: who looks toward the camera and who does not."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_agent.vision.attention import AttentionRules, is_attentive
from edge_agent.vision.pose import FsaNetPose, LandmarkPose, crop_box, fsanet_input
from edge_agent.vision.yunet import Face

DEFAULT = AttentionRules(yaw_limit_deg=30.0, pitch_limit_deg=25.0)


def _faces_and_image(faces_dir, detector, name):
    image = cv2.imread(str(faces_dir / "pexels" / name))
    return image, detector.detect(image)


def test_man_with_head_turned_away_is_not_attentive(faces_dir, detector, fsanet):
    image, faces = _faces_and_image(faces_dir, detector, "Test1.jpg")
    (pose,) = fsanet.estimate(image, faces)
    assert pose.yaw > 30.0  # turned toward the image left
    assert not is_attentive(pose, DEFAULT)


def test_near_frontal_faces_are_attentive(faces_dir, detector, fsanet):
    image, faces = _faces_and_image(faces_dir, detector, "Test3.jpg")
    poses = fsanet.estimate(image, faces)
    assert len(poses) == 3
    assert all(is_attentive(p, DEFAULT) for p in poses), poses


def test_landmark_pose_sees_the_turned_head_with_the_same_sign(faces_dir, detector):
    image, faces = _faces_and_image(faces_dir, detector, "Test1.jpg")
    (pose,) = LandmarkPose().estimate(image, faces)
    assert pose.yaw > 25.0


def test_landmark_pose_of_a_synthetic_frontal_face_is_near_zero():
    face = Face((280, 200, 80, 100), 0.9, ((300, 240), (340, 240), (320, 265), (303, 290), (337, 290)))
    (pose,) = LandmarkPose().estimate(np.zeros((480, 640, 3), np.uint8), [face])
    assert abs(pose.yaw) < 5.0


def test_calibration_moves_the_frontal_direction_to_the_board():
    turned = AttentionRules(yaw_limit_deg=30.0, pitch_limit_deg=25.0, calibration_yaw_deg=35.0)
    from edge_agent.vision.pose import Pose

    assert is_attentive(Pose(40.0, 0.0), turned)
    assert not is_attentive(Pose(0.0, 0.0), turned)
    assert not is_attentive(Pose(math.nan, 0.0), DEFAULT)


def test_face_box_outside_the_frame_yields_unknown_pose_not_a_crash(fsanet):
    image = np.zeros((100, 100, 3), np.uint8)
    outside = Face((500, 500, 20, 20), 0.9, ((0, 0),) * 5)
    assert crop_box(outside, 100, 100) is None
    (pose,) = fsanet.estimate(image, [outside])
    assert math.isnan(pose.yaw)


def test_fsanet_input_is_normalised_bgr_chw():
    image = np.full((50, 50, 3), 255, np.uint8)
    blob = fsanet_input(image, (0, 0, 50, 50))
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert blob.max() == pytest.approx((255 - 127.5) / 128)


def test_fsanet_needs_an_engine():
    with pytest.raises(ValueError):
        FsaNetPose([])


def test_batch_dynamic_engines_give_the_same_poses_as_one_face_at_a_time(
    faces_dir, detector, fsanet, tmp_path, model_mirror
):
    onnx = pytest.importorskip("onnx")
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

    engines = []
    for variant in ("1x1", "var"):
        model = onnx.load(str(model_mirror / "headpose" / f"fsanet-{variant}-iter-688590.onnx"))
        for tensor in (model.graph.input[0], model.graph.output[0]):
            tensor.type.tensor_type.shape.dim[0].dim_param = "batch"
        path = tmp_path / f"{variant}.onnx"
        onnx.save(model, str(path))
        engines.append(OnnxRuntimeEngine(path))
    image, faces = _faces_and_image(faces_dir, detector, "Test7.jpg")
    batched = FsaNetPose(engines).estimate(image, faces)
    looped = fsanet.estimate(image, faces)
    assert len(batched) == len(looped) == 7
    for a, b in zip(batched, looped, strict=True):
        assert a.yaw == pytest.approx(b.yaw, abs=1e-3) and a.pitch == pytest.approx(b.pitch, abs=1e-3)


def test_tracked_faces_refresh_their_pose_every_n_frames_with_the_same_verdict(faces_dir, detector, fsanet):
    from edge_agent.vision.attention import FaceTracker
    from edge_agent.vision.pipeline import FrameAnalyser

    class CountingPose:
        method = "fsanet"

        def __init__(self) -> None:
            self.faces = 0

        def estimate(self, image, faces):
            self.faces += len(faces)
            return fsanet.estimate(image, faces)

    counting = CountingPose()
    analyser = FrameAnalyser(detector, counting, DEFAULT)
    image = cv2.imread(str(faces_dir / "pexels" / "Test3.jpg"))
    tracker = FaceTracker()
    per_frame = []
    for _ in range(4):
        before = counting.faces
        flags = analyser.analyse_tracked(image, tracker, refresh_frames=3)
        per_frame.append(counting.faces - before)
        assert flags == [True, True, True]
    assert per_frame == [3, 0, 0, 3]
    assert [r.attentive for r in analyser.analyse(image)] == [True, True, True]
