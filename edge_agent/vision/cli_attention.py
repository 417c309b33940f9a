"""`edge-agent attention analyze IMAGE_OR_VIDEO... [--json] [--annotate OUT.png]`.

Prints, per image (or per sampled video frame), each face's box, score, yaw, pitch and attentive flag
with the configured thresholds. Nothing is written unless ``--annotate`` asks for a picture.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.config import Config, find_config_path, load_config
from edge_agent.errors import EdgeAgentError
from edge_agent.vision.component import make_pose, rules_from
from edge_agent.vision.pipeline import FaceResult, FrameAnalyser
from edge_agent.vision.sources import IMAGE_SUFFIXES
from edge_agent.vision.yunet import YuNetDetector

log = logging.getLogger(__name__)


def add_attention_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "attention", help="class attention from the camera: try the detector and pose on files")
    commands = parser.add_subparsers(dest="attention_command", required=True)
    analyze = commands.add_parser(
        "analyze", help="faces, head pose and attentive flag per image or video frame")
    analyze.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO")
    analyze.add_argument("--json", action="store_true", help="one JSON document on stdout")
    analyze.add_argument("--annotate", metavar="OUT.png", type=Path,
                         help="write the picture with boxes (several inputs: OUT-1.png, OUT-2.png, ...)")
    analyze.add_argument("--every-s", type=float, default=1.0,
                         help="video: analyse one frame per this many seconds")
    analyze.add_argument("--max-frames", type=int, default=120,
                         help="video: stop after this many analysed frames")
    analyze.add_argument("--model-mirror", type=Path,
                         help="folder mirroring the model files (overrides the config)")
    analyze.add_argument("--cache-dir", type=Path,
                         help="where verified models are kept (overrides the config)")
    analyze.add_argument("--config", dest="attention_config",
                         help="config file (default: $EDGE_AGENT_CONFIG or /etc/edge-agent/config.toml)")
    analyze.set_defaults(func=cmd_attention_analyze)
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


def cmd_attention_analyze(args: argparse.Namespace) -> int:
    from edge_agent.vision.engines import load_vision_engines  # the engine stack is heavy: load on use

    try:
        config = _config(args)
        engines = load_vision_engines(config)
    except EdgeAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = config.attention
    detector = YuNetDetector(engines.face, score_threshold=settings.score_threshold,
                             nms_threshold=settings.nms_threshold)
    analyser = FrameAnalyser(detector, make_pose(settings, engines.pose), rules_from(settings))
    report: list[dict[str, Any]] = []
    failed = 0
    try:
        for path in args.inputs:
            try:
                for label, image in _frames(Path(path), args.every_s, args.max_frames):
                    results = analyser.analyse(image)
                    report.append({"input": label, "faces": [face_record(r) for r in results],
                                   "_image": image if args.annotate else None, "_results": results})
            except EdgeAgentError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
        for number, entry in enumerate(report, start=1):
            if args.annotate:
                out = _annotate_path(args.annotate, number, len(report))
                annotate(entry["_image"], entry["_results"], out)
            del entry["_image"], entry["_results"]
    except EdgeAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        engines.close()
    _print(report, settings.pose_method, args.json)
    return 1 if failed else 0


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
