"""`edge-agent attention analyze|calibrate IMAGE_OR_VIDEO... [--json]`, for installers.

``analyze`` prints, per image (or per sampled video frame), each face's box, score, yaw, pitch and
attentive flag with the configured thresholds. Nothing is written unless ``--annotate`` asks for a picture.
``calibrate`` takes photos of the class looking at the board and prints the ``[attention]`` calibration
lines for this camera position (vision/calibration.py), with how many faces count as attentive before and
after. Neither writes the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.config import Config, find_config_path, load_config
from edge_agent.errors import CameraError, EdgeAgentError
from edge_agent.vision.attention import is_attentive
from edge_agent.vision.calibration import CalibrationError, fit_calibration
from edge_agent.vision.camera import frame_problem
from edge_agent.vision.component import make_pose, rules_from
from edge_agent.vision.pipeline import FaceResult, FrameAnalyser
from edge_agent.vision.sources import IMAGE_SUFFIXES, open_source
from edge_agent.vision.yunet import YuNetDetector

log = logging.getLogger(__name__)


def add_attention_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "attention", help="class attention from the camera: try the detector and pose on files")
    commands = parser.add_subparsers(dest="attention_command", required=True)
    analyze = commands.add_parser(
        "analyze", help="faces, head pose and attentive flag per image or video frame")
    calibrate = commands.add_parser(
        "calibrate",
        help="the calibration lines for this camera, from photos of the class looking at the board",
        description="Take a few photos (or a short video) from the board's camera while the class looks "
                    "at the board, and pass them here. Prints the [attention] lines to put in the config. "
                    "Exit 0: done; 1: done, but the faces pointed in different directions or an input "
                    "was unreadable (check the photos); 2: too few faces, or the models did not load.")
    analyze.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO")
    calibrate.add_argument("inputs", nargs="*", metavar="IMAGE_OR_VIDEO")
    calibrate.add_argument(
        "--camera", action="store_true",
        help="also analyse frames from the configured camera (camera.source), one a second, kept in memory "
             "only; stop the agent first if it holds the camera (systemctl stop edge-agent)")
    calibrate.add_argument("--seconds", type=float, default=5.0, help="--camera: how long to look")
    for sub in (analyze, calibrate):
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout")
        sub.add_argument("--every-s", type=float, default=1.0,
                         help="video: analyse one frame per this many seconds")
        sub.add_argument("--max-frames", type=int, default=120,
                         help="video: stop after this many analysed frames")
        sub.add_argument("--model-mirror", type=Path,
                         help="folder mirroring the model files (overrides the config)")
        sub.add_argument("--cache-dir", type=Path,
                         help="where verified models are kept (overrides the config)")
        sub.add_argument("--config", dest="attention_config",
                         help="config file (default: $EDGE_AGENT_CONFIG or /etc/edge-agent/config.toml)")
    analyze.add_argument("--annotate", metavar="OUT.png", type=Path,
                         help="write the picture with boxes (several inputs: OUT-1.png, OUT-2.png, ...)")
    analyze.set_defaults(func=cmd_attention_analyze)
    calibrate.set_defaults(func=cmd_attention_calibrate, annotate=None)
    return parser


def _config(args: argparse.Namespace) -> Config:
    explicit = getattr(args, "attention_config", None) or getattr(args, "config", None)
    path = find_config_path(explicit)
    config = load_config(path, check_files_exist=False) if explicit or path.is_file() else Config()
    updates: dict[str, Any] = {}
    if args.model_mirror is not None:
        updates["model_mirror"] = args.model_mirror.resolve()
    if args.cache_dir is not None:
        updates["cache_dir"] = args.cache_dir.resolve()
    if updates:
        config = config.model_copy(update={"paths": config.paths.model_copy(update=updates)})
    return config


def _frames(path: Path, every_s: float, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(label, BGR image) for an image, or sampled frames of a video; raises EdgeAgentError if unreadable."""
    if not path.is_file():
        raise EdgeAgentError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 32:
            raise EdgeAgentError(f"{path}: not a readable image (corrupt, empty or smaller than 32 px)")
        yield str(path), image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise EdgeAgentError(f"{path}: neither an image nor a video OpenCV can read")
        fps = capture.get(cv2.CAP_PROP_FPS)
        step = max(1, round(every_s * (fps if 0 < fps <= 240 else 30.0)))
        index = analysed = 0
        while analysed < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                analysed += 1
                yield f"{path}#frame{index}", frame
            index += 1
        if analysed == 0:
            raise EdgeAgentError(f"{path}: the video holds no readable frame")
    finally:
        capture.release()


def face_record(result: FaceResult) -> dict[str, Any]:
    x, y, w, h = result.face.box
    return {
        "box": [round(x, 1), round(y, 1), round(w, 1), round(h, 1)],
        "score": round(result.face.score, 3),
        "yaw": None if np.isnan(result.pose.yaw) else round(result.pose.yaw, 1),
        "pitch": None if np.isnan(result.pose.pitch) else round(result.pose.pitch, 1),
        "attentive": result.attentive,
    }


def annotate(image: np.ndarray, results: list[FaceResult], out: Path) -> None:
    canvas = image.copy()
    for r in results:
        x, y, w, h = (round(v) for v in r.face.box)
        colour = (0, 200, 0) if r.attentive else (0, 0, 230)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
        label = f"{r.pose.yaw:+.0f}/{r.pose.pitch:+.0f}"
        cv2.putText(canvas, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        raise EdgeAgentError(f"could not write {out} (check the folder and that the name ends in .png)")


def _annotate_path(base: Path, number: int, total: int) -> Path:
    return base if total == 1 else base.with_name(f"{base.stem}-{number}{base.suffix or '.png'}")


def _analyse_inputs(
    args: argparse.Namespace,
) -> tuple[Config, list[tuple[str, np.ndarray, list[FaceResult]]], int] | None:
    """(config, (label, image, results) per image or frame, unreadable inputs); None when the models
    did not load (said on stderr)."""
    from edge_agent.vision.engines import load_vision_engines  # the engine stack is heavy: load on use

    try:
        config = _config(args)
        engines = load_vision_engines(config)
    except EdgeAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    settings = config.attention
    detector = YuNetDetector(engines.face, score_threshold=settings.score_threshold,
                             nms_threshold=settings.nms_threshold)
    analyser = FrameAnalyser(detector, make_pose(settings, engines.pose), rules_from(settings))
    analysed: list[tuple[str, np.ndarray, list[FaceResult]]] = []
    failed = 0
    sources = [partial(_frames, Path(path), args.every_s, args.max_frames) for path in args.inputs]
    if getattr(args, "camera", False):
        sources.append(partial(_camera_frames, config, args.seconds))
    try:
        for frames in sources:
            try:
                for label, image in frames():
                    analysed.append((label, image if args.annotate else _NO_IMAGE, analyser.analyse(image)))
            except EdgeAgentError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
    finally:
        engines.close()
    return config, analysed, failed


def _camera_frames(config: Config, seconds: float) -> Iterator[tuple[str, np.ndarray]]:
    """One frame a second from the configured camera, for ``seconds``; never written anywhere."""
    camera = config.camera
    source = open_source(camera.source, camera.width, camera.height, folder_fps=1.0)
    try:
        deadline = time.monotonic() + seconds
        taken = 0
        while time.monotonic() < deadline:
            image = source.read()
            if image is None or frame_problem(image) is not None:
                time.sleep(0.05)  # a dropped or broken frame: try again until the deadline
                continue
            taken += 1
            yield f"camera {source.description} #{taken}", image
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        if taken == 0:
            raise CameraError(f"{source.description} gave no usable frame in {seconds:.0f} s")
    finally:
        source.release()


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # frames are kept only while --annotate needs them


def cmd_attention_analyze(args: argparse.Namespace) -> int:
    outcome = _analyse_inputs(args)
    if outcome is None:
        return 2
    config, analysed, failed = outcome
    report = [{"input": label, "faces": [face_record(r) for r in results]} for label, _, results in analysed]
    if args.annotate:
        try:
            for number, (_, image, results) in enumerate(analysed, start=1):
                annotate(image, results, _annotate_path(args.annotate, number, len(analysed)))
        except EdgeAgentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    _print(report, config.attention.pose_method, args.json)
    return 1 if failed else 0


def cmd_attention_calibrate(args: argparse.Namespace) -> int:
    outcome = _analyse_inputs(args)
    if outcome is None:
        return 2
    config, analysed, failed = outcome
    if not analysed:
        print("error: nothing to calibrate from: give photos or a video, or --camera", file=sys.stderr)
        return 2
    settings = config.attention
    poses = [r.pose for _, _, results in analysed for r in results]
    try:
        calibration = fit_calibration(poses)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = rules_from(settings)
    after = dataclasses.replace(
        now, calibration_yaw_deg=calibration.yaw_deg, calibration_pitch_deg=calibration.pitch_deg
    )
    attentive_now = sum(is_attentive(p, now) for p in poses)
    attentive_after = sum(is_attentive(p, after) for p in poses)
    problem = calibration.spread_problem(settings.yaw_limit_deg, settings.pitch_limit_deg)
    if args.json:
        print(json.dumps({
            "pose_method": settings.pose_method, "images": len(analysed), "faces": calibration.faces,
            "calibration_yaw_deg": round(calibration.yaw_deg, 1),
            "calibration_pitch_deg": round(calibration.pitch_deg, 1),
            "yaw_quartiles": [round(v, 1) for v in calibration.yaw_quartiles],
            "pitch_quartiles": [round(v, 1) for v in calibration.pitch_quartiles],
            "attentive_now": attentive_now, "attentive_after": attentive_after, "problem": problem,
        }, indent=2))
    else:
        yaw_lo, yaw_hi = calibration.yaw_quartiles
        pitch_lo, pitch_hi = calibration.pitch_quartiles
        print(f"{len(analysed)} images, {calibration.faces} faces with a head pose "
              f"(pose: {settings.pose_method})")
        print(f"a face looking at the board, as this camera sees it: yaw {calibration.yaw_deg:+.1f}, "
              f"pitch {calibration.pitch_deg:+.1f} degrees (the middle half of the faces: yaw "
              f"{yaw_lo:+.0f} to {yaw_hi:+.0f}, pitch {pitch_lo:+.0f} to {pitch_hi:+.0f})")
        print(f"attentive in these photos: {attentive_now} of {calibration.faces} faces with the current "
              f"calibration (yaw {now.calibration_yaw_deg:+.1f}, pitch {now.calibration_pitch_deg:+.1f}), "
              f"{attentive_after} with the new one")
        print("\nPut these lines in the board's config (/etc/edge-agent/config.toml; or, for provisioning, "
              "the columns attention.calibration_yaw_deg and attention.calibration_pitch_deg of its "
              "inventory row), then restart edge-agent:\n")
        print(calibration.config_lines(), end="")
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if problem or failed else 0


def _print(report: list[dict[str, Any]], pose_method: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"pose_method": pose_method, "images": report}, indent=2))
        return
    for entry in report:
        faces = entry["faces"]
        attentive = sum(f["attentive"] for f in faces)
        print(f"{entry['input']}: {len(faces)} faces, {attentive} attentive (pose: {pose_method})")
        for f in faces:
            x, y, w, h = f["box"]
            print(f"  box {x:.0f},{y:.0f} {w:.0f}x{h:.0f}  score {f['score']:.2f}  "
                  f"yaw {f['yaw']}  pitch {f['pitch']}  {'attentive' if f['attentive'] else 'not attentive'}")
