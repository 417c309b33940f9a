"""The lesson's error counters read against what the daemon's own code counts (real camera, real engines,
the real metrics registry)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import lesson_figures as figures
import numpy as np
from prometheus_client import generate_latest

from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.telemetry import metrics
from edge_agent.vision.attention import AttentionRules, FaceTracker, WindowAggregator
from edge_agent.vision.camera import Camera, frame_problem
from edge_agent.vision.pipeline import AttentionLoop, FrameAnalyser
from edge_agent.vision.pose import LandmarkPose
from edge_agent.vision.sources import open_source
from edge_agent.vision.yunet import YuNetDetector

DROPPED = "edge_camera_frames_dropped_total"


def _scrape() -> list[tuple[str, dict[str, str], float]]:
    return figures.parse_metrics(generate_latest(metrics.REGISTRY).decode())


def _dropped(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    return {labels["reason"]: v for name, labels, v in samples if name == DROPPED}


def test_broken_camera_frames_move_the_error_counter_and_superseded_frames_do_not(
    tmp_path: Path, faces_dir: Path, model_mirror: Path
) -> None:
    # A camera folder with a truncated JPEG, an 8x8 PNG and a good photo, read at 50 frames/s and
    # never taken: the daemon's own grabber counts them as "empty", "tiny" and "busy".
    folder = tmp_path / "camera"
    folder.mkdir()
    shutil.copy(faces_dir / "crowd" / "crowd_spectators.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    cv2.imwrite(str(folder / "c.png"), np.zeros((8, 8, 3), np.uint8))
    before = _scrape()
    camera = Camera(str(folder), opener=lambda stop: open_source(str(folder), stop=stop, folder_fps=50.0))
    camera.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            moved = {k: v - _dropped(before).get(k, 0.0) for k, v in _dropped(_scrape()).items()}
            if all(moved.get(r, 0) >= 2 for r in ("empty", "tiny", "busy")):
                break
            time.sleep(0.05)
    finally:
        camera.stop()
    # The pipeline's own failure: the fixed 640x640 YuNet export refuses a 640x480 frame.
    fixed = OnnxRuntimeEngine(model_mirror / "yunet" / "face_detection_yunet_2023mar.onnx")
    loop = AttentionLoop(
        camera,
        FrameAnalyser(YuNetDetector(fixed), LandmarkPose(), AttentionRules()),
        FaceTracker(),
        WindowAggregator(),
        on_window=lambda _w: None,
    )
    loop.step(cv2.resize(cv2.imread(str(folder / "a.jpg")), (640, 480)), time.time())
    fixed.close()
    after = _scrape()

    moved = {k: v - _dropped(before).get(k, 0.0) for k, v in _dropped(after).items()}
    broken = moved["empty"] + moved["tiny"] + moved["analysis_error"]
    assert moved["empty"] >= 2 and moved["tiny"] >= 2 and moved["busy"] >= 2 and moved["analysis_error"] == 1
    errors = {k: figures.error_counts(after)[k] - v for k, v in figures.error_counts(before).items()}
    assert errors[DROPPED] == broken  # every broken frame, no superseded one
    # every reason the daemon's frame check gives is watched
    for image in (None, np.zeros((0, 0, 3), np.uint8), np.zeros((480, 640), np.uint8),
                  np.zeros((8, 8, 3), np.uint8)):
        assert frame_problem(image) in figures.BROKEN_FRAME_REASONS


def _post(port: int, body: object) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/answers",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_answers_the_daemon_could_not_take_move_the_error_counter_and_applied_ones_do_not() -> None:
    import bench_kt
    from aiohttp import web

    from edge_agent.config import KTSettings
    from edge_agent.kt.package import load_package
    from edge_agent.kt.pseudonym import Pseudonymizer
    from edge_agent.kt.service import KTService
    from edge_agent.web.answers import answer_routes

    package = load_package()
    settings = KTSettings(queue_max=1)
    svc = KTService(package, OnnxRuntimeEngine(package.step_model), settings, Pseudonymizer(os.urandom(32)))
    svc.start()
    app = web.Application()
    app.add_routes(answer_routes(svc, settings))
    server = bench_kt._ServerThread(app)
    item = package.items[0].id
    answer = {"student_id": "s1", "item_id": item, "correct": True, "answered_at": time.time()}
    try:
        before = figures.error_counts(_scrape())
        assert _post(server.port, answer | {"client_event_id": "e1"}) == 200
        applied = figures.error_counts(_scrape())
        # two answers in one request against a queue of 1: the daemon can never take it, 413, outcome
        # "rejected" (counted once a request; a full queue's 503 "overloaded" is tests/kt/test_service.py's)
        two = {"answers": [answer | {"client_event_id": f"e{n}"} for n in (2, 3)]}
        assert _post(server.port, two) == 413
        after = figures.error_counts(_scrape())
    finally:
        server.close()
        svc.stop()
    assert applied["edge_answers_total"] == before["edge_answers_total"]
    assert after["edge_answers_total"] - before["edge_answers_total"] == 1
