"""Head pose on real photos: who looks toward the camera and who does not."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_agent.vision.attention import AttentionRules, is_attentive
from edge_agent.vision.pose import (
    FsaNetPose,
    LandmarkPose,
    crop_box,
    faces_per_call,
    fsanet_batch,
)
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
    blob = fsanet_batch(image, [(0, 0, 50, 50)])
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert blob.max() == pytest.approx((255 - 127.5) / 128)


def test_fsanet_needs_an_engine():
    with pytest.raises(ValueError):
        FsaNetPose([])


@pytest.fixture(scope="module")
def product_engines(tmp_path_factory, model_mirror):
    """FSA-Net x2 as the daemon loads them: manifests, dynamic-batch copies, guarded engines."""
    from edge_agent.config import InferenceSettings, PathSettings
    from edge_agent.inference.manifest import POSE_MODELS, load_manifests
    from edge_agent.inference.select import load_engine

    cache = tmp_path_factory.mktemp("pose-engines")
    paths = PathSettings(state_dir=cache / "state", cache_dir=cache, model_mirror=model_mirror)
    manifests = load_manifests()
    settings = InferenceSettings(backend="onnxruntime")
    loaded = [load_engine(manifests[name], settings, paths) for name in POSE_MODELS]
    yield [item.engine for item in loaded]
    for item in loaded:
        item.engine.close()


def _photos(faces_dir):
    crowd = cv2.resize(cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg")), (640, 480))
    yield "crowd 640x480", crowd
    for path in sorted(faces_dir.glob("*/*.jpg")):
        yield path.name, cv2.imread(str(path))


def _assert_same_poses(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.yaw == pytest.approx(b.yaw, abs=1e-3) and a.pitch == pytest.approx(b.pitch, abs=1e-3)


def test_product_pose_runs_faces_in_chunks_of_the_profile_maximum(product_engines, pose_engines):
    assert [faces_per_call(e) for e in product_engines] == [8, 8]
    assert [faces_per_call(e) for e in pose_engines] == [1, 1]  # the published exports


def test_batched_concurrent_poses_equal_the_one_face_at_a_time_poses_on_real_photos(
    faces_dir, detector, product_engines, pose_engines
):
    product = FsaNetPose(product_engines)
    one_at_a_time = FsaNetPose(pose_engines, parallel=False)
    try:
        counts = {}
        for name, image in _photos(faces_dir):
            faces = detector.detect(image)
            counts[name] = len(faces)
            _assert_same_poses(product.estimate(image, faces), one_at_a_time.estimate(image, faces))
        assert counts["crowd 640x480"] >= 20 and counts["Test7.jpg"] == 7
    finally:
        product.close()


def test_more_faces_than_the_largest_batch_run_in_chunks(faces_dir, detector, product_engines, pose_engines):
    crowd = cv2.resize(cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg")), (640, 480))
    faces = detector.detect(crowd)
    many = (faces * 3)[:70]
    product = FsaNetPose(product_engines)
    sizes: list[int] = []
    infer = product_engines[0].infer

    def recording(feeds):
        sizes.append(len(feeds["input"]))
        return infer(feeds)

    product_engines[0].infer = recording  # on this instance only, removed again below (module fixture)
    try:
        _assert_same_poses(
            product.estimate(crowd, many), FsaNetPose(pose_engines, parallel=False).estimate(crowd, many)
        )
    finally:
        product.close()
        del product_engines[0].infer
    assert sizes == [8] * 7 + [7] * 2  # equal chunks of at most 8, not 8 x 8 and a lone 6


def test_concurrent_and_sequential_engines_give_identical_poses(faces_dir, detector, product_engines):
    image = cv2.imread(str(faces_dir / "pexels" / "Test7.jpg"))
    faces = detector.detect(image)
    outside = Face((5000, 5000, 20, 20), 0.9, ((0, 0),) * 5)
    parallel = FsaNetPose(product_engines)
    got = parallel.estimate(image, [outside, *faces])
    assert math.isnan(got[0].yaw)
    assert got[1:] == FsaNetPose(product_engines, parallel=False).estimate(image, faces)
    parallel.close()  # later calls still work, one engine after the other
    assert parallel.estimate(image, faces) == got[1:]


def test_fsanet_batch_equals_the_single_crop_input_bit_for_bit(faces_dir):
    image = cv2.imread(str(faces_dir / "pexels" / "Test3.jpg"))
    boxes = [(10, 20, 90, 130), (0, 0, 5, 7), (300, 200, 501, 350)]
    batch = fsanet_batch(image, boxes)
    assert batch.flags.c_contiguous
    for row, box in zip(batch, boxes, strict=True):
        x1, y1, x2, y2 = box
        crop = cv2.resize(image[y1:y2, x1:x2], (64, 64))
        want = ((crop.transpose(2, 0, 1).astype(np.float32)) - 127.5) / 128.0
        assert np.array_equal(row, want)


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


def test_landmark_pose_of_one_face_is_the_same_wherever_it_sits_in_the_frame(faces_dir, detector):
    # Review: solvePnP's angles are in camera axes, so a face looking into the lens from the frame's edge
    # read as turned by its viewing angle: the same pixels gave yaw -22 at the left edge and +31 at the
    # right (FSA-Net, which measures on its crop: 0 to 4). One calibration offset cannot fix every seat.
    image = cv2.imread(str(faces_dir / "pexels" / "Test3.jpg"))
    x, y, w, h = (int(v) for v in detector.detect(image)[2].box)
    pad = int(0.3 * max(w, h))
    patch = cv2.resize(image[y - pad : y + h + pad, x - pad : x + w + pad], None, fx=60 / w, fy=60 / w)
    ph, pw = patch.shape[:2]
    poses = {}
    places = ((pw // 2 + 2, 240), (320, 240), (638 - pw // 2, 240), (320, ph // 2 + 2), (320, 478 - ph // 2))
    for cx, cy in places:
        frame = np.full((480, 640, 3), 127, np.uint8)
        frame[cy - ph // 2 : cy - ph // 2 + ph, cx - pw // 2 : cx - pw // 2 + pw] = patch
        face = max(detector.detect(frame), key=lambda f: f.score)
        poses[(cx, cy)] = LandmarkPose().estimate(frame, [face])[0]
    yaws, pitches = [p.yaw for p in poses.values()], [p.pitch for p in poses.values()]
    assert max(yaws) - min(yaws) < 15.0 and max(pitches) - min(pitches) < 20.0, poses


def test_one_pose_estimate_is_one_vote_however_many_frames_reuse_it():
    # Review: with poses refreshed every 3 frames (the default), a reused pose was appended to the 5-frame
    # history on each frame: one bad estimate made 3 of 5 votes and flipped the face for three frames.
    from edge_agent.vision.attention import FaceTracker
    from edge_agent.vision.pose import Pose

    tracker = FaceTracker(smoothing_frames=5)
    box = (100.0, 100.0, 60.0, 60.0)
    flags = []
    for frame in range(12):
        (track,) = tracker.assign([box])
        if frame % 3 == 0:  # refreshed: a glance away at frame 6 only
            track.set_pose(Pose(0.0 if frame != 6 else 40.0, 0.0))
        else:
            track.set_pose(None)
        attentive = is_attentive(track.pose, DEFAULT)  # type: ignore[arg-type]
        flags += tracker.record([track], [attentive])
    assert flags == [True] * 12


def test_a_crop_reaching_past_the_frame_repeats_the_edge_pixels():
    image = np.arange(20 * 30 * 3, dtype=np.uint32).reshape(20, 30, 3).astype(np.uint8)
    face = Face((2, 5, 10, 10), 0.9, ((0, 0),) * 5)
    x1, y1, x2, y2 = crop_box(face, 30, 20)
    assert (x1, y1, x2, y2) == (-4, -1, 19, 22)  # the enlarged box, not cut at the frame
    blob = fsanet_batch(image, [(x1, y1, x2, y2)])
    expected = cv2.copyMakeBorder(image[0:20, 0:19], 1, 2, 4, 0, cv2.BORDER_REPLICATE)
    assert expected.shape == (23, 23, 3)
    want = (cv2.resize(expected, (64, 64)).transpose(2, 0, 1).astype(np.float32) - 127.5) / 128.0
    assert np.array_equal(blob[0], want)


def test_a_face_at_the_frame_edge_keeps_the_pose_of_its_whole_crop(faces_dir, detector, fsanet):
    """The frame cuts away one side's whole margin (a student at the edge of the camera's view): the pose
    must stay near the one from the face's whole crop. On the crowd photo's 22 faces whose whole crop is in
    the photo, cut once on each side: with the crop cut at the frame and stretched to 64x64, as the FSA-Net
    authors' demo does, yaw moved by 12.5 and pitch by 5.5 degrees on average; with the edge repeated
    7.0 and 2.9 (2026-12-02)."""
    image = cv2.imread(str(faces_dir / "crowd" / "crowd_spectators.jpg"))
    height, width = image.shape[:2]
    yaw, pitch = [], []
    for face in detector.detect(image):
        x, y, w, h = face.box
        if x - 0.6 * w < 0 or x + 1.6 * w >= width - 1 or y - 0.6 * h < 0 or y + 1.6 * h >= height - 1:
            continue  # only faces whose whole crop is in the photo have a reference
        (whole,) = fsanet.estimate(image, [face])
        left = int(x)  # the frame starts at the face box
        shifted = Face((x - left, y, w, h), face.score, face.landmarks)
        (left_cut,) = fsanet.estimate(image[:, left:], [shifted])
        (right_cut,) = fsanet.estimate(image[:, : int(x + w) + 1], [face])  # the frame ends at the box
        yaw += [abs(cut.yaw - whole.yaw) for cut in (left_cut, right_cut)]
        pitch += [abs(cut.pitch - whole.pitch) for cut in (left_cut, right_cut)]
    assert len(yaw) == 44
    assert float(np.mean(yaw)) < 9.5 and float(np.mean(pitch)) < 4.2, (np.mean(yaw), np.mean(pitch))


def test_a_crop_keeps_its_place_and_size_wherever_the_frame_starts():
    face = Face((40.5, 30.25, 10.0, 10.0), 0.9, ((0, 0),) * 5)
    whole = crop_box(face, 200, 200)
    assert whole is not None
    for offset in range(0, 41):  # frames starting further and further right, cutting the crop's left side
        shifted = Face((40.5 - offset, 30.25, 10.0, 10.0), 0.9, ((0, 0),) * 5)
        box = crop_box(shifted, 200 - offset, 200)
        assert box is not None
        assert (box[0] + offset, box[1], box[2] + offset, box[3]) == whole, offset


def test_a_box_far_larger_than_the_frame_gets_no_pose_instead_of_a_huge_crop(fsanet):
    image = np.zeros((480, 640, 3), np.uint8)
    huge = Face((-20000.0, -20000.0, 40000.0, 40000.0), 0.9, ((0, 0),) * 5)
    assert crop_box(huge, 640, 480) is None
    (pose,) = fsanet.estimate(image, [huge])
    assert math.isnan(pose.yaw)
    close = Face((-100.0, -50.0, 800.0, 600.0), 0.9, ((0, 0),) * 5)  # a face right in front of the lens
    assert crop_box(close, 640, 480) is not None
