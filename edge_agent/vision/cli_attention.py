"""`edge-agent attention analyze|calibrate IMAGE_OR_VIDEO... [--json]`, for installers.

``analyze`` prints, per image (or per sampled video frame), each face's box, score, yaw, pitch and
attentive flag with the configured thresholds. Nothing is written unless ``--annotate`` asks for a picture.
``calibrate`` takes photos of the class looking at the board and prints the ``[attention]`` calibration
lines for this camera position (vision/calibration.py), with how many faces count as attentive before and
after. Neither writes the config.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.argument_types import at_least
from edge_agent.config import Config, find_config_path, load_config_for_command
from edge_agent.errors import CameraError, EdgeAgentError
from edge_agent.image_files import opencv_file_name, read_image, write_image
from edge_agent.vision.attention import is_attentive
from edge_agent.vision.calibration import CalibrationError, fit_calibration
from edge_agent.vision.camera import Camera
from edge_agent.vision.component import make_pose, rules_from
from edge_agent.vision.pipeline import FaceResult, FrameAnalyser
from edge_agent.vision.sources import IMAGE_SUFFIXES, folder_images
from edge_agent.vision.yunet import YuNetDetector

log = logging.getLogger(__name__)

MIN_SIDE = 32  # px: a smaller picture or frame holds no face YuNet can find


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
                    "at the board, and pass them here, or use --camera. Prints the [attention] lines to "
                    "put in the config. Exit 0: done; 1: done, but the faces pointed in different "
                    "directions or an input was unreadable (check the photos); 2: nothing to calibrate "
                    "from (no photo with 3 faces, no readable input, a camera that gives no frame) or "
                    "the models did not load.")
    analyze.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO_OR_FOLDER")
    calibrate.add_argument("inputs", nargs="*", metavar="IMAGE_OR_VIDEO_OR_FOLDER")
    calibrate.add_argument(
        "--camera", action="store_true",
        help="also analyse frames from the configured camera (camera.source), one a second, kept in memory "
             "only and analysed once --seconds are over; stop the agent first if it holds the camera "
             "(systemctl stop edge-agent)")
    calibrate.add_argument("--seconds", type=_positive, default=5.0,
                           help="--camera: how long the class is looked at (one frame a second)")
    # analyze has no --camera: its help named one (a review)
    for sub, frames_from in ((analyze, "video"), (calibrate, "video or --camera")):
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout")
        sub.add_argument("--every-s", type=_positive, default=1.0,
                         help="video: analyse one frame per this many seconds")
        sub.add_argument("--max-frames", type=at_least(1), default=120,
                         help=f"{frames_from}: stop after this many frames")
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


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _explicit_config(args: argparse.Namespace) -> str | None:
    return getattr(args, "attention_config", None) or getattr(args, "config", None)  # type: ignore[no-any-return]


def _config(args: argparse.Namespace) -> Config:
    explicit = _explicit_config(args)
    path = find_config_path(explicit)
    config = load_config_for_command(path) if explicit or path.is_file() else Config()
    updates: dict[str, Any] = {}
    if args.model_mirror is not None:
        updates["model_mirror"] = args.model_mirror.resolve()
    if args.cache_dir is not None:
        updates["cache_dir"] = args.cache_dir.resolve()
    if updates:
        config = config.model_copy(update={"paths": config.paths.model_copy(update=updates)})
    return config


def _each_file(path: Path) -> list[Path]:
    """A folder's photos one by one (an unreadable one is counted, the rest still analysed; the whole
    folder was given up at the first, a review), as the daemon's folder source reads them (subfolders
    included); any other path as it is."""
    photos = [p for p in folder_images(path) if p.is_file()] if path.is_dir() else []
    return photos or [path]


def _frames(path: Path, every_s: float, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """(label, BGR image) for an image, or sampled frames of a video; raises EdgeAgentError if unreadable."""
    if path.is_dir():
        raise EdgeAgentError(f"{path}: a folder with no {'/'.join(sorted(IMAGE_SUFFIXES))} image in it")
    if not path.is_file():
        raise EdgeAgentError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = read_image(path)
        if image is None or min(image.shape[:2]) < MIN_SIDE:
            raise EdgeAgentError(
                f"{path}: not a readable image (corrupt, empty or smaller than {MIN_SIDE} px)")
        yield str(path), image
        return
    capture = cv2.VideoCapture(opencv_file_name(path))
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
            if index % step == 0 and min(frame.shape[:2]) >= MIN_SIDE:
                analysed += 1
                yield f"{path}#frame{index}", frame
            index += 1
        if analysed == 0:
            raise EdgeAgentError(f"{path}: the video holds no readable frame of at least {MIN_SIDE} px")
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
    cant = f"could not write {out} (check the folder and that the name ends in .png)"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_image(out, canvas)
    except (OSError, cv2.error) as exc:  # OpenCV raises for a name without a known image extension
        raise EdgeAgentError(cant) from exc


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
    sources = [partial(_frames, file, args.every_s, args.max_frames)
               for path in args.inputs for file in _each_file(Path(path))]
    if getattr(args, "camera", False):
        sources.append(partial(_camera_frames, config, args.seconds, args.max_frames))
    try:
        for frames in sources:
            try:
                for label, image in frames():
                    results = analyser.analyse(image)
                    analysed.append((label, _held(image) if args.annotate else _NO_IMAGE, results))
            except EdgeAgentError as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
    finally:
        engines.close()
    return config, analysed, failed


def _camera_frames(config: Config, seconds: float, max_frames: int) -> Iterator[tuple[str, np.ndarray]]:
    """The configured camera's newest frame once a second for ``seconds`` (at most ``max_frames``), taken as
    the daemon takes them (its grabber keeps only the latest frame, a video file plays in real time, or at
    2 frames a stall timeout when slower); never
    written anywhere. All are taken before the first is analysed: analysed as taken, each analysis counted
    against the window, and a "10 s" look at 2.5 s an analysis took 4 frames, not 10. They wait as JPEG
    in memory (quality 95): raw, 120 frames of a 4K stream held 3 GB on an 8 GB board (a review measured
    1.18 GB of RSS for 40 against 0.27 GB before)."""
    from edge_agent.core_dumps import forbid_core_dumps

    # The class's faces in memory, as in the daemon: a crash must not write them to a core file (a review
    # rebuilt 13 frames from the core of an aborted calibration)
    forbid_core_dumps()
    camera = Camera.from_settings(config.camera)
    camera.start()
    taken: collections.deque[tuple[str, np.ndarray]] = collections.deque()
    try:
        deadline = time.monotonic() + seconds
        next_take = time.monotonic()
        seq = 0
        while time.monotonic() < deadline and len(taken) < max_frames:
            time.sleep(0.05)
            frame = camera.latest(seq) if time.monotonic() >= next_take else None
            if frame is None:
                continue
            seq, next_take = frame.seq, time.monotonic() + 1.0
            jpeg = _held(frame.image)
            if jpeg.ndim == 1:
                taken.append((f"camera frame {frame.seq}", jpeg))
        if not taken:
            state, detail = camera.state()
            raise CameraError(f"the camera gave no frame in {seconds:g} s ({state}: {detail}); if edge-agent "
                              "is running it may hold the camera: systemctl stop edge-agent, then try again")
    finally:
        camera.stop()
    while taken:
        label, jpeg = taken.popleft()
        image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        if image is not None:  # it encoded, so it decodes
            yield label, image


_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # frames are kept only while --annotate needs them


def _held(image: np.ndarray) -> np.ndarray:
    """``image`` as JPEG bytes (quality 95, a 1-D array) to wait in memory until all are analysed: raw,
    --annotate held every frame until the end (a review: 548 MB of RSS for 60 frames of 1080p against
    191 MB without; 120 of 4K would be 3 GB on an 8 GB board). The image itself where it does not encode."""
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return jpeg if ok else image


def _unheld(image: np.ndarray) -> np.ndarray:
    if image.ndim != 1:
        return image
    decoded = cv2.imdecode(image, cv2.IMREAD_COLOR)
    if decoded is None:  # it encoded, so it decodes
        raise EdgeAgentError("a frame held for --annotate could not be decoded")
    return np.asarray(decoded)


def cmd_attention_analyze(args: argparse.Namespace) -> int:
    outcome = _analyse_inputs(args)
    if outcome is None:
        return 2
    config, analysed, failed = outcome
    report = [{"input": label, "faces": [face_record(r) for r in results]} for label, _, results in analysed]
    if args.annotate:
        # a folder's own photos too: "analyze photos/ --annotate photos/class.jpg" wrote over class-1.jpg
        inputs = {Path(p).resolve() for p in args.inputs}
        inputs |= {f.resolve() for p in args.inputs if Path(p).is_dir() for f in Path(p).rglob("*")}
        try:
            for number, (entry, (_, image, results)) in enumerate(zip(report, analysed, strict=True), 1):
                out = _annotate_path(args.annotate, number, len(analysed))
                if out.resolve() in inputs:
                    raise EdgeAgentError(f"{out} is one of the inputs: give --annotate another name")
                annotate(_unheld(image), results, out)
                entry["annotated"] = str(out)
        except EdgeAgentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    _print(report, config.attention.pose_method, args.json)
    return 1 if failed else 0


def cmd_attention_calibrate(args: argparse.Namespace) -> int:
    if not args.inputs and not args.camera:
        print("error: nothing to calibrate from: give photos, a folder or a video of the class, or --camera",
              file=sys.stderr)
        return 2
    outcome = _analyse_inputs(args)
    if outcome is None:
        return 2
    config, analysed, failed = outcome
    settings = config.attention
    now = rules_from(settings)
    photos = [[r.pose for r in results] for _, _, results in analysed]
    try:
        if not analysed:
            raise CalibrationError("nothing to calibrate from: no photo or frame could be read")
        calibration = fit_calibration(photos, now, settings.pose_method)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    attentive_now = sum(is_attentive(p, now) for poses in photos for p in poses)
    problem = calibration.problem()
    if args.json:
        print(json.dumps({
            "pose_method": settings.pose_method, "images": len(analysed), "faces": calibration.faces,
            "calibration_yaw_deg": round(calibration.yaw_deg, 1),
            "calibration_pitch_deg": round(calibration.pitch_deg, 1),
            "yaw_quartiles": [round(v, 1) for v in calibration.yaw_quartiles],
            "pitch_quartiles": [round(v, 1) for v in calibration.pitch_quartiles],
            "attentive_now": attentive_now, "attentive_after": calibration.agreeing, "problem": problem,
        }, indent=2))
    else:
        yaw_lo, yaw_hi = calibration.yaw_quartiles
        pitch_lo, pitch_hi = calibration.pitch_quartiles
        print(f"{len(analysed)} photos or frames, {calibration.faces} faces with a head pose "
              f"(pose: {settings.pose_method})")
        print(f"a face looking at the board, as this camera sees it: yaw {calibration.yaw_deg:+.1f}, "
              f"pitch {calibration.pitch_deg:+.1f} degrees (the middle half of the faces: yaw "
              f"{yaw_lo:+.0f} to {yaw_hi:+.0f}, pitch {pitch_lo:+.0f} to {pitch_hi:+.0f})")
        print(f"attentive in these photos: {attentive_now} of {calibration.faces} faces with the current "
              f"calibration (yaw {now.calibration_yaw_deg:+.1f}, pitch {now.calibration_pitch_deg:+.1f}), "
              f"{calibration.agreeing} with the new one")
        if problem:
            print("\nThese photos do not look like a class looking at the board (see the warning); take them "
                  "again before using these values:\n")
        else:
            where = find_config_path(_explicit_config(args))  # --config, $EDGE_AGENT_CONFIG or the default
            print(f"\nSet these two keys in the [attention] section of the board's config "
                  f"({where}; add the section if it has none) and restart edge-agent. "
                  "On a provisioned board put them in its inventory row instead (columns "
                  "attention.calibration_yaw_deg and attention.calibration_pitch_deg) and provision again:\n")
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
        noun = "face" if len(faces) == 1 else "faces"
        print(f"{entry['input']}: {len(faces)} {noun}, {attentive} attentive (pose: {pose_method})")
        for f in faces:
            x, y, w, h = f["box"]
            print(f"  box {x:.0f},{y:.0f} {w:.0f}x{h:.0f}  score {f['score']:.2f}  "
                  f"yaw {f['yaw']}  pitch {f['pitch']}  {'attentive' if f['attentive'] else 'not attentive'}")
