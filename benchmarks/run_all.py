"""Every benchmark in one go: knowledge tracing, vision, engines FP32/INT8, the lesson scenario, a soak.

    edge-agent bench [--quick] [--soak-minutes N] [--out DIR]
    .venv/bin/python benchmarks/run_all.py [--quick] [--soak-minutes N] [--out DIR]

Reuses the per-capability benchmarks (bench_kt.py, bench_vision.py, ``edge-agent engines quantize|bench``)
and lesson.py; prints the side-by-side table and PASS/MISS per target; writes results.json (figures),
raw.json (distributions) and PNG plots into --out (default artifacts/bench/).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
for entry in (str(HERE.parent), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import bench_report as report  # noqa: E402
from lesson_figures import LessonRun, feedback_s  # noqa: E402

from edge_agent.demo import SHARED  # noqa: E402

ENGINE_MODELS = ("yunet", "fsanet-1x1", "fsanet-var", "kt-step")
QUANTIZED = ("yunet", "fsanet-1x1", "fsanet-var")  # the KT step offers fp16, not int8


def section_kt(quick: bool, tmp: Path) -> dict[str, float]:
    """bench_kt's parts, as its main() runs them (PyTorch baselines included when torch is installed)."""
    import bench_kt

    from edge_agent.kt.package import load_package

    return bench_kt.run_parts(load_package(), tmp, 0.2 if quick else 1.0)


def _photo(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read the test photo {path}")
    return cv2.resize(image, (640, 480))


def side_by_side_ms(
    inputs: list[dict[str, Callable[[], object]]], repeat: int, warmup: int
) -> dict[str, list[float]]:
    """Per-call ms of each side, over each input's calls (one per side) taken in alternation, the leader
    swapped every round (bench_vision.interleaved_ms): timed in blocks, ours always first, a burst of load
    from elsewhere fell on one side only."""
    from bench_vision import interleaved_ms

    times: dict[str, list[float]] = {}
    for calls in inputs:
        for side, ms in interleaved_ms(calls, repeat, warmup).items():
            times.setdefault(side, []).extend(ms)
    return times


def section_vision(quick: bool, raw: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """bench_vision's comparison with raw per-call times: ORT YuNet pipeline vs cv2.FaceDetectorYN. The
    engines' derived copies go under ``tmp`` (the run's, removed at its end)."""
    import cv2
    from bench_vision import CvYuNet, at_cadence_ms, cadence_calls, cpu_share, product_engines

    from edge_agent.config import AttentionSettings, InferenceSettings
    from edge_agent.vision.attention import AttentionRules
    from edge_agent.vision.pipeline import FrameAnalyser
    from edge_agent.vision.pose import FsaNetPose
    from edge_agent.vision.yunet import YuNetDetector

    # The engines as the daemon loads them (manifests, mirror, the derived FSA-Net copies, its
    # thread budget: face_threads for the detector and cv2 alike, 1 per pose engine, run side by side).
    face_threads = InferenceSettings().face_threads
    cv2.setNumThreads(face_threads)
    models, faces = SHARED / "models", SHARED / "data" / "faces"
    engines = product_engines(SHARED, tmp / "vision", face_threads, 1)
    ours = YuNetDetector(engines.face)
    theirs = CvYuNet(models / "yunet" / "face_detection_yunet_2023mar.onnx")
    pose = FsaNetPose(engines.pose)
    frames = [_photo(p) for p in sorted(faces.glob("*/*.jpg"))]
    crowd = _photo(faces / "crowd" / "crowd_spectators.jpg")
    reps, whole_reps = (3, 20) if quick else (15, 100)
    detect: list[dict[str, Callable[[], object]]] = [
        {"detect_ort": partial(ours.detect, frame), "detect_cv2": partial(theirs.detect, frame)}
        for frame in frames
    ]
    analyser = FrameAnalyser(ours, pose, AttentionRules())
    whole: dict[str, Callable[[], object]] = {
        "whole_ort": lambda: analyser.analyse(crowd),
        "whole_cv2": lambda: pose.estimate(crowd, theirs.detect(crowd)),
    }
    times = side_by_side_ms(detect, reps, warmup=2) | side_by_side_ms([whole], whole_reps, warmup=5)
    # At the camera's 5 frames/s, idle between frames: what the daemon pays (an idle core wakes first).
    cadence = at_cadence_ms(cadence_calls(ours, theirs, pose, frames, crowd), 5.0, 8 if quick else 25)
    # The daemon's analysis loop on the crowd at 5 frames/s, its default pose refresh: the CPU target.
    share, achieved = cpu_share(
        analyser, crowd, 5.0, 4.0 if quick else 10.0, AttentionSettings().pose_refresh_frames
    )
    out: dict[str, Any] = {
        "cpu_cores_at_5fps": share,
        "achieved_fps_for_cpu": achieved,
        "face_threads": face_threads,
        "photos": len(frames),
        "crowd_faces_ort": len(ours.detect(crowd)),
        "crowd_faces_cv2": len(theirs.detect(crowd)),
    }
    for key in ("detect_ort", "detect_cv2", "whole_ort", "whole_cv2"):
        ms = times[key]
        raw[f"{key}_ms"] = ms
        out[f"{key}_ms"] = [float(np.percentile(ms, 50)), float(np.percentile(ms, 99))]
        out[f"{key}_n"] = len(ms)
    for key, ms in cadence.items():  # 25 calls each (8 with --quick): the report prints the count
        raw[f"{key}_at_5fps_ms"] = ms
        out[f"{key}_at_5fps_ms"] = [float(np.percentile(ms, 50)), float(np.percentile(ms, 99))]
        out[f"{key}_at_5fps_n"] = len(ms)
    pose.close()
    engines.close()
    return out


def section_engines(quick: bool, tmp: Path) -> list[dict[str, Any]]:
    """``edge-agent engines quantize`` (into a private cache) then ``engines bench``: FP32 against INT8."""
    from edge_agent.inference.cli_engines import cmd_bench, cmd_quantize
    from edge_agent.inference.manifest import ENGINES_DIR

    base = {"manifests": str(ENGINES_DIR), "cache_dir": str(tmp / "cache"), "mirror": str(SHARED / "models")}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        for name in QUANTIZED:
            cmd_quantize(
                argparse.Namespace(
                    **base,
                    names=[name],
                    data=str(SHARED / "data" / "faces"),
                    samples=64,
                    held_out=4,
                    asymmetric=False,
                    out=None,
                    force=True,  # a speed comparison: fsanet-1x1's INT8 is too inaccurate for the board
                )
            )
        path = tmp / "engines.json"
        cmd_bench(
            argparse.Namespace(
                **base, names=list(ENGINE_MODELS), iterations=40 if quick else 200, batch=16, json=str(path)
            )
        )
    rows: list[dict[str, Any]] = json.loads(path.read_text())
    return rows


def section_lesson(seconds: float, out: Path, raw: dict[str, Any], *, soak: bool) -> dict[str, Any]:
    import lesson

    run = lesson.run_lesson(seconds, out / ("soak-work" if soak else "lesson-work"))
    (out / ("soak-raw.json" if soak else "lesson-raw.json")).write_text(json.dumps(asdict(run)))
    if soak:
        return lesson.soak_summary(run)
    raw.update(lesson_raw(run))
    return lesson.summarize(run)


def lesson_raw(run: LessonRun) -> dict[str, list[float]]:
    """The lesson's distributions for latency.png. Each answer's feedback time as the table's p99 counts
    it (lesson_figures.feedback_s): one that got no feedback at the client's 10-s timeout, not at the ~1 ms
    of a refused connection, which made the plotted p99 3 ms where the table's was 10,000 ms."""
    return {
        "feedback_ms": [feedback_s(lat, code, status) * 1e3 for _, lat, code, status in run.answers],
        "sync_lag_ms": [x * 1e3 for x in run.sync_lags_s],
    }


def load_soak(path: Path) -> dict[str, Any]:
    """The soak summary of an earlier ``lesson.py run --soak`` (its soak-raw.json)."""
    import lesson

    data = json.loads(path.read_text())
    run = lesson.run_from_json(data)
    return lesson.soak_summary(run)


def _refused(args: argparse.Namespace) -> str | None:
    """Why this run is refused before any step, or None: both ended only after the other parts' minutes."""
    if args.only and "soak" in args.only and not (args.soak_minutes or args.soak_raw):
        # ran no step and exited 0 with a table of NOT MEASURED (a review)
        return ("--only soak needs --soak-minutes N (30 for the real soak) or --soak-raw FILE (an earlier "
                "soak's soak-raw.json)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # a FileExistsError traceback
        return f"--out {out} is a file: give a folder for results.json, raw.json and the plots"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot create the folder ({exc.strerror or exc})"
    return None


def run(args: argparse.Namespace) -> int:
    refused = _refused(args)
    if refused:
        print(f"edge-agent bench: {refused}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "machine_before": report.machine(),
    }
    raw: dict[str, Any] = {}
    lesson_s = args.lesson_seconds or (45.0 if args.quick else 180.0)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        steps: list[tuple[str, Any]] = [
            ("kt", lambda: section_kt(args.quick, tmp)),
            ("vision", lambda: section_vision(args.quick, raw, tmp)),
            ("engines", lambda: section_engines(args.quick, tmp)),
            ("lesson", lambda: section_lesson(lesson_s, out, raw, soak=False)),
        ]
        if args.soak_minutes:
            steps.append(("soak", lambda: section_lesson(args.soak_minutes * 60, out, raw, soak=True)))
        elif args.soak_raw:
            steps.append(("soak", lambda: load_soak(Path(args.soak_raw))))
        for name, step in steps:
            if args.only and name not in args.only:
                continue
            t0 = time.monotonic()
            print(f"bench: {name} ...", flush=True)
            try:
                results[name] = step()
            except Exception as exc:  # one part failing must not hide the others' figures
                results[name] = None
                results.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"
                print(f"bench: {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            print(f"bench: {name} done in {time.monotonic() - t0:.0f} s", flush=True)
    results["machine"] = report.machine()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "raw.json").write_text(json.dumps(raw))
    (out / "results.md").write_text(
        report.markdown(results, "edge-agent bench" + (" --quick" if args.quick else ""))
    )
    print()
    print(report.render(results))
    pngs = report.plots(results, raw, out)
    print(f"\nwritten: {out / 'results.json'}, raw.json, results.md" + "".join(f", {p.name}" for p in pngs))
    return 1 if results.get("failures") else 0


def main(argv: list[str] | None = None) -> int:
    from edge_agent.cli_bench import add_bench_parser

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
