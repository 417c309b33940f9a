"""Turning benchmark results into the printed table, PASS/MISS per target, the machine line and PNG plots.

``results`` is the dict ``run_all`` writes as results.json: sections ``kt``, ``vision``, ``engines``,
``lesson``, ``soak`` (each may be absent when skipped) and ``machine``. Everything here is pure apart from
``plots``, which writes files.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MB_IN_MIB = 1e6 / 2**20  # 300 MB = 286.1 MiB
RSS_TARGET_MIB = 300 * MB_IN_MIB
OURS, INT8, BASELINE = "tab:blue", "tab:green", "grey"
_VERDICT: dict[bool | None, str] = {True: "PASS", False: "MISS", None: "NOT MEASURED"}
# The soak's p99 drift: the last third's p99 at most 2x the first third's. Short runs of an unchanged daemon
# spread 1.6x (12.2 / 19.4 / 13.7 ms), and the quiet 19:53 soak drifted 1.6x (8.8 -> 14.1 ms) with the
# hypervisor's steal: 1.5x failed that noise (round-2 review); a leak or a growing queue goes past 2x.
P99_DRIFT_MAX = 2.0
# The CPU target's pace, 5 analysed frames/s: its share is judged only where the loop reached 95 % of it.
CPU_FPS_MIN = 0.95 * 5.0
Row = tuple[str, str, str, bool | None]  # target, measured, detail, passed (None: not measured)


def cpu_description(cpuinfo: str) -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model numbers and its widest vector unit.

    A VM may name only the vendor ("AMD EPYC"), while ONNX Runtime picks its kernels by vector width and
    the figures move with the CPU: the KT model at batch 1 was 10.5x the eager baseline on a Zen 4
    (AVX-512) VM named "AMD EPYC" and 8.5-9.3x on an Intel Xeon VM (the code of 2026-12-05 on both).
    """
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # the first processor's block is enough
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    arm = f"Arm CPU part {fields['CPU part']}" if "CPU part" in fields else "unknown"
    name = fields.get("model name") or arm
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    widest = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))
    vector = next((label for flag, label in widest if flag in flags), None)
    details = [f"{key} {fields[key]}" for key in ("cpu family", "model") if fields.get(key)]
    details += [vector] if vector else []
    return f"{name} ({', '.join(details)})" if details else name


def board_model(device_tree_model: Path = Path("/proc/device-tree/model")) -> str | None:
    """The board as its device tree names it ("NVIDIA Jetson Orin NX ..."; NUL-terminated), or None off
    one: on an Orin /proc/cpuinfo names only the Arm core ("CPU part 0xd42")."""
    try:
        return device_tree_model.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """CPU (see cpu_description), board, cores, Python, onnxruntime version and the load average now."""
    try:
        model = cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = "unknown"
    try:
        import onnxruntime

        ort = str(onnxruntime.__version__)
    except ImportError:
        ort = "not installed"
    return {
        "cpu": model,
        "board": board_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort,
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def duplicates_problem(lesson: dict[str, Any]) -> str | None:
    """Why a lesson run measured the wrong path (some answers came back as duplicates), or None. Only
    duplicates make a run invalid: failed answers are the daemon's fault, judged by failures_problem."""
    duplicates = lesson.get("answers_duplicate", 0)
    if not duplicates:
        return None
    return (
        f"not a valid run: {duplicates} of {lesson.get('answers_sent', 0)} answers came back as duplicates "
        "(the state folder held an earlier run's answers)"
    )


def failures_problem(lesson: dict[str, Any]) -> str | None:
    """Which answers got no feedback (timeouts, HTTP errors), or None: a run with any is a MISS."""
    failed = lesson.get("answers_failed", 0)
    if not failed:
        return None
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted((lesson.get("answers_failed_by") or {}).items()))
    return f"{failed} of {lesson.get('answers_sent', 0)} answers failed" + (f" ({kinds})" if kinds else "")


def soak_verdict(soak: dict[str, Any]) -> tuple[bool | None, str]:
    """Growth counts only beyond noise: the fitted rise over the soak must stay under 2 MiB or 1 % of RSS."""
    slope = soak.get("rss_slope_mib_per_hour")
    if slope is None:
        return None, "too few samples after the first minute for a slope"
    invalid = duplicates_problem(soak.get("lesson") or {})
    if invalid:
        return None, invalid
    moved = soak.get("errors_moved")
    if moved is None:
        return None, f"error counters not read: {_scrapes_failed(soak.get('lesson') or {})}"
    rise = slope * soak["minutes"] / 60
    # 1 % of the first 10-minute block's low point (between answer bursts), not of one sample on the
    # bursts' ~12 MiB saw-tooth; the first sample after minute 1 where a soak is too short for a block
    lows = soak.get("rss_low_by_10_min_mib") or []
    base, based_on = (
        (lows[0], "the first 10-min low") if lows else (soak.get("rss_first_mib"), "RSS at minute 1")
    )
    allowance = max(2.0, 0.01 * (base or 0.0))
    failed = failures_problem(soak.get("lesson") or {})
    ok = rise <= allowance and not moved and not failed
    why = (f"fitted rise {rise:+.2f} MiB over {soak['minutes']:.0f} min (allowance {allowance:.2f}: 2 MiB "
           f"or 1 % of {based_on} {_fmt(base, 'MiB')})")
    why += f"; error counters moved: {moved}" if moved else "; no error counter moved"
    return ok, why + (f"; {failed}" if failed else "")


def _scrapes_failed(lesson: dict[str, Any]) -> str:
    failed, scrapes = lesson.get("metrics_scrapes_failed", "?"), lesson.get("metrics_scrapes", "?")
    return f"{failed} of {scrapes} /metrics scrapes failed"


# The engines "every model loaded" names (edge_engines_up's engine label, lesson_figures.engines_up)
LESSON_ENGINES = ("fsanet-1x1", "fsanet-var", "kt-step", "yunet")


def rss_row(lesson: dict[str, Any]) -> Row:
    """The RSS target, judged only on a valid lesson whose daemon had every model loaded: a daemon that
    answered nothing, or loaded only the KT step, is small for the wrong reason."""
    rss = lesson.get("rss_max_mib")
    up = {engine.split()[0] for engine in lesson.get("engines") or []}
    missing = [name for name in LESSON_ENGINES if name not in up]
    problem = duplicates_problem(lesson) or failures_problem(lesson)
    if not problem and missing:
        problem = f"not every model loaded: {', '.join(missing)} not up" + (
            "" if up else " (no engine list: the first /metrics scrape failed or the run predates it)"
        )
    detail = f"not judged: {problem}" if problem else "max over the lesson"
    ok = None if rss is None or problem else rss <= RSS_TARGET_MIB
    return "daemon RSS <= 300 MB, every model loaded", _fmt(rss, "MiB", RSS_TARGET_MIB), detail, ok


def targets(results: dict[str, Any]) -> list[Row]:
    """(target, measured, detail, passed) rows; passed is None when the figure was not measured."""
    rows: list[Row] = []
    lesson, kt, soak = results.get("lesson") or {}, results.get("kt") or {}, results.get("soak")
    p99 = lesson.get("feedback_p99_ms")
    invalid, failed = duplicates_problem(lesson), failures_problem(lesson)
    rows.append(
        (
            "answer-to-feedback p99 <= 10 ms (lesson)",
            _fmt(p99, "ms", 10.0),
            invalid or failed or f"{lesson.get('answers_applied', 0)} answers, client-measured",
            None if p99 is None or invalid else p99 <= 10 and not failed,
        )
    )
    for key, label in (
        ("model_b1_ratio", "model at batch 1: ORT step vs eager window-10"),
        ("model_b64_ratio", "model at batch 64: ORT step vs eager window-10"),
        ("service_vs_torch_model_only_ratio", "service incl. SQLite vs eager model only"),
        ("service_model_choice_ratio", "same service, step engine vs eager window-10"),
        ("http_throughput_ratio", "over HTTP, same web stack"),
        ("http_model_choice_ratio", "over HTTP, same service, step engine vs eager window-10"),
    ):
        ratio = kt.get(key)
        lower, p99_detail = _lower_p99(kt, key)
        rows.append(
            (
                f"KT throughput >= 10x PyTorch ({label})",
                _fmt(ratio, "x", 10.0),
                key + _spread(kt, key) + p99_detail,
                None if ratio is None else ratio >= 10 and lower,
            )
        )
    rows += _kt_targets(kt) + _vision_targets(results.get("vision") or {})
    rows.append(rss_row(lesson))
    if soak:
        ok, why = soak_verdict(soak)
        rows.append(
            ("no growth in the soak beyond noise", _fmt(soak.get("rss_slope_mib_per_hour"), "MiB/h"), why, ok)
        )
    else:
        rows.append(("no growth in the soak beyond noise", "-", "no soak in this run (--soak-minutes)", None))
    drift = (soak or {}).get("p99_drift_ratio")
    lesson = (soak or {}).get("lesson") or {}
    invalid = duplicates_problem(lesson)
    failed = failures_problem(lesson)  # a daemon that stops answering must not pass on a fast last third
    rows.append(
        (
            f"soak p99, last third <= {P99_DRIFT_MAX:g}x the first third",
            _fmt(drift, "x", P99_DRIFT_MAX),
            invalid
            or failed
            or f"{_pair(soak.get('p99_first_third_ms'), soak.get('p99_last_third_ms'), 'ms')} first / last"
            if soak
            else "no soak in this run (--soak-minutes)",
            None if drift is None or invalid else drift <= P99_DRIFT_MAX and not failed,
        )
    )
    return rows


# Issue 4's target is "at least 10x the throughput at lower p99": the p99s measured for a ratio's two
# sides (ours, baseline); the ratios without a pair (batch 64, the service alone) are judged on throughput.
RATIO_P99S = {
    "model_b1_ratio": ("step_b1_p99_ms", "torch_window10_p99_ms", "per call"),
    "http_throughput_ratio": ("ours_http200_p99_ms", "torch_http200_p99_ms", "at 200 answers/s"),
    "http_model_choice_ratio": ("ours_http200_p99_ms", "eager_svc_http200_p99_ms", "at 200 answers/s"),
}


def _lower_p99(kt: dict[str, Any], key: str) -> tuple[bool, str]:
    """Whether ours had the lower p99 beside a 10x ratio (True where the pair was not measured), and the
    detail to print."""
    ours_key, baseline_key, where = RATIO_P99S.get(key, ("", "", ""))
    ours, baseline = kt.get(ours_key), kt.get(baseline_key)
    if ours is None or baseline is None:
        return True, ""
    lower = ours < baseline
    detail = f"; p99 {where}, ours / baseline: {_pair(ours, baseline, 'ms')}"
    return lower, detail + ("" if lower else ", not lower")


def _row(name: str, value: float | None, unit: str, detail: str, ok: bool, *, limit: float) -> Row:
    return name, _fmt(value, unit, limit), detail, None if value is None else ok


def _kt_targets(kt: dict[str, Any]) -> list[Row]:
    """The knowledge-tracing targets other than the 10x: the step's own time and the answer API's."""
    step = kt.get("step_b1_median_ms")
    p99, rate = kt.get("ours_http200_p99_ms"), kt.get("ours_http_sustained_answers_per_s")
    sent, answered = kt.get("ours_http200_sent"), kt.get("ours_http200_ok")
    failed = sent is not None and answered is not None and answered < sent
    return [
        _row(
            "KT step median <= 0.1 ms at batch 1",
            step,
            "ms",
            "step_b1_median_ms: Engine.infer on ONNX Runtime",
            step is not None and step <= 0.1,
            limit=0.1,
        ),
        _row(
            "KT over HTTP p99 <= 10 ms at 200 answers/s",
            p99,
            "ms",
            "ours_http200_p99_ms" if sent is None else f"{answered} of {sent} answers answered 200",
            p99 is not None and p99 <= 10 and not failed,
            limit=10.0,
        ),
        _row(
            "KT over HTTP >= 2,000 answers/s sustained",
            rate,
            "/s",
            "32 clients, closed loop",
            rate is not None and rate >= 2000,
            limit=2000.0,
        ),
    ]


def _vision_targets(vision: dict[str, Any]) -> list[Row]:
    """Detection, the crowd frame and the CPU at the camera's pace. The medians are judged back to back;
    the 5 frames/s figure (an idle core wakes first) is given beside them (README, Performance)."""
    rows = []
    for key, name, limit in (
        ("detect_ort", "face detection with decoding <= 5 ms median", 5.0),
        ("whole_ort", "crowd frame, detection + pose, <= 20 ms median", 20.0),
    ):
        back, paced = vision.get(f"{key}_ms"), vision.get(f"{key}_at_5fps_ms")
        median = back[0] if back else None
        at_5fps = _fmt(paced[0] if paced else None, "ms")
        ok = median is not None and median <= limit
        rows.append(_row(name, median, "ms", f"back to back; at 5 frames/s {at_5fps}", ok, limit=limit))
    cpu, fps = vision.get("cpu_cores_at_5fps"), vision.get("achieved_fps_for_cpu")
    # the CPU share counts only at the pace it names: a loop that analysed no frames used no CPU
    slow = fps is None or fps < CPU_FPS_MIN
    rows.append(
        _row(
            "CPU at 5 analysed frames/s < 0.5 core",
            cpu,
            "cores",
            f"crowd frame, default pose refresh; achieved {_fmt(fps, 'frames/s')}"
            + (f", under {CPU_FPS_MIN:g}: not the pace the target names" if slow else ""),
            cpu is not None and cpu < 0.5 and not slow,
            limit=0.5,
        )
    )
    return rows


def _fmt(value: float | None, unit: str, limit: float | None = None) -> str:
    """4 figures (whole numbers from 100); beside its target's ``limit``, as many more as it takes for the
    printed number to stay on the value's side of it: a p99 of 10.004 ms printed "10 ms MISS" and a ratio
    of 9.9996 "10 x MISS"."""
    if value is None:
        return "-"
    text = f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"
    for figures in range(5, 18):
        if limit is None or value == limit or (float(text) - limit) * (value - limit) > 0:
            break
        text = f"{value:.{figures}g}"
    return f"{text} {unit}"


def comparison_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, ours, baseline, ratio) side by side."""
    rows = []
    kt, vision = results.get("kt") or {}, results.get("vision") or {}
    if kt:
        for batch, ours, theirs in (("1", "step_b1_answers_per_s", "torch_answers_per_s"),
                                    ("64", "step_b64_answers_per_s", "torch_b64_answers_per_s")):
            rows.append(
                (
                    f"KT answers/s, model at batch {batch} (ORT step vs torch window-10)",
                    _fmt(kt.get(ours), "/s"),
                    _fmt(kt.get(theirs), "/s"),
                    _fmt(kt.get(f"model_b{batch}_ratio"), "x") + _spread(kt, f"model_b{batch}_ratio"),
                )
            )
        rows.append(
            (
                "KT µs per answer, model at a lesson's pace (batch 1, a call every 20 ms: cold caches)",
                _fmt(kt.get("step_paced_median_us"), "µs"),
                _fmt(kt.get("torch_paced_median_us"), "µs"),
                _fmt(kt.get("model_paced_ratio"), "x") + _spread(kt, "model_paced_ratio")
                + f"; a 64x256 matmul at that pace {_fmt(kt.get('floor_paced_median_us'), 'µs')}",
            )
        )
        rows.append(
            (
                "KT answers/s, service vs torch model-only",
                _fmt(kt.get("service_answers_per_s"), "/s"),
                _fmt(kt.get("torch_answers_per_s"), "/s"),
                _fmt(kt.get("service_vs_torch_model_only_ratio"), "x"),
            )
        )
        rows.append(
            (
                "KT answers/s, same service: step engine vs eager window-10",
                _fmt(kt.get("service_answers_per_s"), "/s"),
                _fmt(kt.get("service_eager_answers_per_s"), "/s"),
                _fmt(kt.get("service_model_choice_ratio"), "x") + _spread(kt, "service_model_choice_ratio"),
            )
        )
        rows.append(
            (
                "KT µs per answer in the model / outside it (same service)",
                _pair(
                    kt.get("service_model_us_per_answer"), kt.get("service_outside_model_us_per_answer"), "µs"
                ),
                _pair(
                    kt.get("service_eager_model_us_per_answer"),
                    kt.get("service_eager_outside_model_us_per_answer"),
                    "µs",
                ),
                f"bound {_fmt(kt.get('service_amdahl_bound'), 'x')}",
            )
        )
        rows.append(
            (
                "KT answers/s over HTTP, same service: step engine vs eager window-10",
                _fmt(kt.get("ours_http_sustained_answers_per_s"), "/s"),
                _fmt(kt.get("eager_svc_http_sustained_answers_per_s"), "/s"),
                _fmt(kt.get("http_model_choice_ratio"), "x") + _spread(kt, "http_model_choice_ratio"),
            )
        )
        rows.append(
            (
                "KT answers/s over HTTP (32 clients)",
                _fmt(kt.get("ours_http_sustained_answers_per_s"), "/s"),
                _fmt(kt.get("torch_http_sustained_answers_per_s"), "/s"),
                _fmt(kt.get("http_throughput_ratio"), "x") + _spread(kt, "http_throughput_ratio"),
            )
        )
        rows.append(
            (
                "KT HTTP p50 / p99 at 200 answers/s",
                f"{_fmt(kt.get('ours_http200_p50_ms'), 'ms')} / {_fmt(kt.get('ours_http200_p99_ms'), 'ms')}",
                _pair(kt.get("torch_http200_p50_ms"), kt.get("torch_http200_p99_ms"), "ms"),
                _ratio(kt.get("torch_http200_p99_ms"), kt.get("ours_http200_p99_ms")),
            )
        )
    for ours_key, cv_key, label in (
        ("detect_ort", "detect_cv2", "face detection p50 / p99 (13 photos)"),
        ("whole_ort", "whole_cv2", "whole frame, crowd, FSA-Net pose p50 / p99"),
        ("detect_ort_at_5fps", "detect_cv2_at_5fps", "face detection at 5 frames/s, idle between frames"),
        ("whole_ort_at_5fps", "whole_cv2_at_5fps", "whole frame at 5 frames/s, idle between frames"),
    ):
        ours, cv = vision.get(f"{ours_key}_ms"), vision.get(f"{cv_key}_ms")
        if ours and cv:
            rows.append(
                (
                    label + _calls(vision.get(f"{ours_key}_n")),
                    f"{_fmt(ours[0], 'ms')} / {_fmt(ours[1], 'ms')}",
                    f"{_fmt(cv[0], 'ms')} / {_fmt(cv[1], 'ms')}",
                    _ratio(cv[0], ours[0]),
                )
            )
    by_key = {(r["model"], r["backend"], r["precision"], r["batch"]): r for r in results.get("engines") or []}
    for (model, backend, precision, batch), row in sorted(by_key.items()):
        if backend == "pytorch-eager" and row.get("median_ms"):
            ort = by_key.get((model, "onnxruntime", "fp32", batch), {})
            rows.append(
                (
                    f"{model} b{batch} ORT vs PyTorch eager median / p99",
                    f"{_fmt(ort.get('median_ms'), 'ms')} / {_fmt(ort.get('p99_ms'), 'ms')}",
                    f"{_fmt(row['median_ms'], 'ms')} / {_fmt(row['p99_ms'], 'ms')}",
                    _ratio(row["median_ms"], ort.get("median_ms")),
                )
            )
        if backend == "onnxruntime" and precision == "int8" and row.get("median_ms"):
            fp32 = by_key.get((model, backend, "fp32", batch), {})
            rows.append(
                (
                    f"{model} b{batch} INT8 (ours) vs FP32 (baseline) p50 / p99",
                    f"{_fmt(row['median_ms'], 'ms')} / {_fmt(row['p99_ms'], 'ms')}",
                    f"{_fmt(fp32.get('median_ms'), 'ms')} / {_fmt(fp32.get('p99_ms'), 'ms')}",
                    _ratio(fp32.get("median_ms"), row["median_ms"]),
                )
            )
    return rows


def _calls(n: int | None) -> str:
    """How many calls a p50 / p99 comes from: under 100 the p99 is in effect the slowest call."""
    if n is None:
        return ""
    return f" ({n} calls each: the p99 is in effect the max)" if n < 100 else f" ({n} calls each)"


def _spread(results: dict[str, Any], key: str) -> str:
    """The 10th-90th percentile of a ratio measured in alternated rounds, where the run has it: not their
    range (rounds outside it are not shown), so the label says which."""
    low, high = results.get(f"{key}_p10"), results.get(f"{key}_p90")
    if low is None or high is None:
        return ""
    rounds = results.get(f"{key}_rounds")
    of = f"{rounds:.0f} rounds" if rounds is not None else "the rounds"
    return f" (p10-p90 of {of}: {low:.3g}-{high:.3g})"


def _pair(a: float | None, b: float | None, unit: str) -> str:
    return f"{_fmt(a, unit)} / {_fmt(b, unit)}"


def _ratio(baseline: float | None, ours: float | None) -> str:
    return f"{baseline / ours:.2f}x" if baseline and ours else "-"


def lesson_rows(lesson: dict[str, Any]) -> list[tuple[str, str]]:
    lag50, lag99 = lesson.get("sync_lag_p50_ms"), lesson.get("sync_lag_p99_ms")
    return [
        (
            "answers applied / ok / sent",
            f"{lesson.get('answers_applied')} / {lesson.get('answers_ok')} / {lesson.get('answers_sent')}",
        ),
        (
            "answers duplicate / failed",
            f"{lesson.get('answers_duplicate')} / {failures_problem(lesson) or lesson.get('answers_failed')}",
        ),
        (
            "answer-to-feedback p50 / p99 / max (every answer sent; a timeout at its 10 s)",
            f"{_fmt(lesson.get('feedback_p50_ms'), 'ms')} / {_fmt(lesson.get('feedback_p99_ms'), 'ms')} / "
            f"{_fmt(lesson.get('feedback_max_ms'), 'ms')}",
        ),
        (
            "daemon-side feedback p50 / p99 (histogram bucket bound)",
            f"{_bound(lesson, 'daemon_feedback_p50_le_ms', 'feedback p50')} / "
            f"{_bound(lesson, 'daemon_feedback_p99_le_ms', 'feedback p99')}",
        ),
        ("daemon mean ms per stage", _stages(lesson.get("daemon_stage_mean_ms") or {})),
        (
            "daemon p99 per answer stage (bucket bound)",
            ", ".join(
                f"{k} {_bound(lesson['daemon_stage_p99_le_ms'], k, f'{k} p99', lesson)}"
                for k in lesson.get("daemon_stage_p99_le_ms") or {}
            )
            or "-",
        ),
        (
            "garbage-collector passes by generation",
            ", ".join(f"{k[3:]}: {v}" for k, v in sorted((lesson.get("daemon_gc_passes") or {}).items()))
            or "-",
        ),
        ("frames analysed per second", _fmt(lesson.get("frames_per_s"), "/s")),
        ("the daemon's engines (model, backend, precision)", ", ".join(lesson.get("engines") or []) or "-"),
        (
            "sync messages / gaps / duplicates",
            f"{lesson.get('sync_messages')} / {len(lesson.get('sync_gaps') or [])} / "
            f"{lesson.get('sync_duplicates')}",
        ),
        # the messages of a lesson are few (16 in 180 s): with under 100 the p99 is about the largest
        ("sync lag p50 / p99", f"{_fmt(lag50, 'ms')} / {_fmt(lag99, 'ms')} "
                               f"(of {lesson.get('sync_messages', 0)} messages)"),
        ("daemon CPU", _fmt(lesson.get("cpu_cores"), "cores")),
        (
            "daemon RSS max / last",
            f"{_fmt(lesson.get('rss_max_mib'), 'MiB')} / {_fmt(lesson.get('rss_last_mib'), 'MiB')}",
        ),
        (
            "daemon storage writes",
            f"{_fmt(lesson.get('disk_written_mib_per_hour'), 'MiB/h')}, "
            f"{_fmt(lesson.get('disk_written_kib_per_answer'), 'KiB')} per answer applied",
        ),
        ("error counters moved", _moved(lesson, lesson)),
    ]


def _bound(figures: dict[str, Any], key: str, name: str, lesson: dict[str, Any] | None = None) -> str:
    """A histogram bucket bound; past the largest finite one (a null in results.json) "> that bound"."""
    past = (lesson or figures).get("daemon_le_past_top_bucket_ms") or {}
    if figures.get(key) is None and name in past:
        return f"> {_fmt(past[name], 'ms')}"
    return _fmt(figures.get(key), "ms")


def _moved(figures: dict[str, Any], lesson: dict[str, Any]) -> str:
    moved = figures.get("errors_moved")
    if moved is None and "metrics_scrapes" in lesson:
        return f"not read ({_scrapes_failed(lesson)})"
    return str(moved or "none")


def _stages(means: dict[str, float]) -> str:
    keep = (
        "answer-to-feedback",
        "kt-step/queue",
        "kt_step/queue",
        "kt-step/infer",
        "yunet/infer",
        "fsanet-1x1/infer",
    )
    return ", ".join(f"{k} {means[k]:.2f}" for k in keep if k in means) or "-"


def render(results: dict[str, Any]) -> str:
    """The printed report: comparisons, lesson figures, soak, targets and the machine."""
    out = []
    comp = comparison_rows(results)
    if comp:
        out.append(_table(["side by side", "ours", "baseline", "ratio"], comp))
    if results.get("lesson"):
        out.append(
            _table(
                [
                    f"lesson ({results['lesson']['seconds']:.0f} s, "
                    f"{results['lesson']['students']} students)",
                    "value",
                ],
                lesson_rows(results["lesson"]),
            )
        )
    soak = results.get("soak")
    if soak:
        out.append(_table([f"soak ({soak['minutes']:.0f} min)", "value"], soak_rows(soak)))
    rows = [(name, measured, _VERDICT[ok], detail) for name, measured, detail, ok in targets(results)]
    out.append(_table(["target", "measured", "verdict", "detail"], rows))
    m = results.get("machine") or {}
    out.append(
        f"machine: {_on_board(m)}{m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
        f"onnxruntime {m.get('onnxruntime')}, load average at the end {m.get('load_avg_1_5_15')}"
    )
    return "\n\n".join(out)


def _table(header: list[str], rows: Sequence[Sequence[str]]) -> str:
    body = [header, *[list(r) for r in rows]]
    widths = [max(len(str(line[i])) for line in body) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def soak_rows(soak: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("RSS slope (least squares, after minute 1)", _fmt(soak.get("rss_slope_mib_per_hour"), "MiB/h")),
        ("RSS first / last", _pair(soak.get("rss_first_mib"), soak.get("rss_last_mib"), "MiB")),
        (
            "RSS low point by 10-minute block (between answer bursts)",
            " / ".join(f"{v:.1f}" for v in soak.get("rss_low_by_10_min_mib") or []) + " MiB"
            if soak.get("rss_low_by_10_min_mib")
            else "-",
        ),
        (
            "p99 first third / last third",
            f"{_pair(soak.get('p99_first_third_ms'), soak.get('p99_last_third_ms'), 'ms')} "
            f"(drift {_fmt(soak.get('p99_drift_ratio'), 'x')})",
        ),
        ("error counters moved", _moved(soak, soak.get("lesson") or {})),
    ]


def _on_board(m: dict[str, Any]) -> str:
    return f"{m['board']}: " if m.get("board") else ""


def backends(results: dict[str, Any]) -> str:
    """Where the figures ran: the KT and vision parts on ONNX Runtime always, the lesson's daemon on what
    its engines loaded (TensorRT where it imported: a board)."""
    engines = (results.get("lesson") or {}).get("engines") or []
    on_tensorrt = [model for model, backend, *_ in map(str.split, engines) if backend == "tensorrt"]
    if not on_tensorrt:
        return "CPU only (no TensorRT)"
    return (f"the lesson's daemon with {', '.join(on_tensorrt)} on TensorRT, the other parts on ONNX Runtime "
            "on the CPU")


def markdown(results: dict[str, Any], command: str) -> str:
    """The README section: figures, machine and load, how to reproduce."""
    m, before = results.get("machine") or {}, results.get("machine_before") or {}
    lines = [
        f"Measured with `{command}` ({results.get('started', '?')} to {results.get('finished', '?')}) on "
        f"{_on_board(m)}{m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, onnxruntime "
        f"{m.get('onnxruntime')}, {backends(results)}. Load average (1/5/15 min) at the start "
        f"{before.get('load_avg_1_5_15')}, at the end {m.get('load_avg_1_5_15')}.",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    for name, measured, detail, ok in targets(results):
        lines.append(f"| {name} | {measured} ({detail}) | {_VERDICT[ok]} |")
    sections: list[tuple[str, Sequence[Sequence[str]]]] = []
    if results.get("lesson"):
        lesson = results["lesson"]
        sections.append((f"lesson scenario, {lesson['seconds']:.0f} s | value", lesson_rows(lesson)))
    if results.get("soak"):
        sections.append((f"soak, {results['soak']['minutes']:.0f} min | value", soak_rows(results["soak"])))
    comp = comparison_rows(results)
    if comp:
        sections.append(("side by side | ours | baseline | ratio", comp))
    for header, rows in sections:
        lines += ["", f"| {header} |", "|" + "---|" * (header.count("|") + 1)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plots(results: dict[str, Any], raw: dict[str, Any], out: Path) -> list[Path]:
    """Latency distributions, throughput bars and (with a soak) RSS and p99 per minute, as PNGs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        ("answer-to-feedback, lesson (client)", {"ours": raw.get("feedback_ms", [])}, 10.0),
        ("sync lag, lesson (receiver)", {"ours": raw.get("sync_lag_ms", [])}, None),
        (
            "face detection per photo",
            {"ORT": raw.get("detect_ort_ms", []), "cv2.FaceDetectorYN": raw.get("detect_cv2_ms", [])},
            5.0,
        ),
        (
            "whole frame, crowd, FSA-Net pose",
            {"ORT": raw.get("whole_ort_ms", []), "cv2-based": raw.get("whole_cv2_ms", [])},
            20.0,
        ),
    ]
    for ax, (title, series, target) in zip(axes.flat, panels, strict=True):
        for label, values in series.items():
            if len(values):
                # An empirical CDF reads the same for 3 sync messages as for 10,000 answers.
                xs = np.sort(np.asarray(values, dtype=np.float64))
                ax.step(
                    xs,
                    np.arange(1, xs.size + 1) / xs.size,
                    where="post",
                    label=(
                        f"{label}: n {xs.size}, p50 {np.median(xs):.2f}, p99 {np.percentile(xs, 99):.2f} ms"
                    ),
                )
        ax.axhline(0.99, color="grey", linewidth=0.5)
        if target:
            ax.axvline(target, color="red", linestyle="--", label=f"target {target:g} ms")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("share of calls at or below")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / "latency.png", plt))
    bars = _throughput_bars(results)
    if bars:
        fig, ax = plt.subplots(figsize=(12, 5))
        ax.barh([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        ax.set_xscale("log")
        ax.set_xlabel("items per second (log)")
        ax.set_title("throughput: ours (blue, ORT FP32), INT8 Q/DQ (green), baselines (grey)")
        fig.tight_layout()
        written.append(_save(fig, out / "throughput.png", plt))
    soak = results.get("soak")
    if soak and soak.get("per_minute"):
        written.append(_soak_plot(soak, plt, out / "soak.png"))
    return written


def _throughput_bars(results: dict[str, Any]) -> list[tuple[str, float, str]]:
    kt = results.get("kt") or {}
    # Each pair at one batch size: ORT's batch 64 beside PyTorch's batch 1 read as 192x (686,205 against
    # 3,576 answers/s), a comparison the README withdrew.
    bars = [
        (label, kt[key], color)
        for key, label, color in (
            ("step_b1_answers_per_s", "KT model, ORT step, batch 1", OURS),
            ("torch_answers_per_s", "KT model, PyTorch eager window 10, batch 1", BASELINE),
            ("step_b64_answers_per_s", "KT model, ORT step, batch 64", OURS),
            ("torch_b64_answers_per_s", "KT model, PyTorch eager window 10, batch 64", BASELINE),
            ("service_answers_per_s", "KT service (micro-batch + SQLite), step engine", OURS),
            ("service_eager_answers_per_s", "KT service (micro-batch + SQLite), eager window 10", BASELINE),
            ("ours_http_sustained_answers_per_s", "KT over HTTP, ours", OURS),
            ("torch_http_sustained_answers_per_s", "KT over HTTP, PyTorch", BASELINE),
        )
        if kt.get(key)
    ]
    vision = results.get("vision") or {}
    for key, label, color in (
        ("detect_ort_ms", "face detection, ORT", OURS),
        ("detect_cv2_ms", "face detection, cv2", BASELINE),
        ("whole_ort_ms", "whole frame, ORT", OURS),
        ("whole_cv2_ms", "whole frame, cv2-based", BASELINE),
    ):
        if vision.get(key):
            bars.append((f"{label} (1/p50)", 1000.0 / vision[key][0], color))
    for row in results.get("engines") or []:
        if row.get("throughput") and row["batch"] == 1 and row["backend"] != "tensorrt":
            color = {"pytorch-eager": BASELINE}.get(
                row["backend"], INT8 if row["precision"] == "int8" else OURS
            )
            bars.append((f"{row['model']} {row['backend']} {row['precision']} b1", row["throughput"], color))
    return bars


def _soak_plot(soak: dict[str, Any], plt: Any, path: Path) -> Path:
    rows = soak["per_minute"]
    series = soak.get("rss_series") or [(r["minute"] * 60, r["rss_mib"]) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot([t / 60 for t, _ in series], [v for _, v in series], ".-", label="daemon RSS (MiB), every sample")
    slope = soak.get("rss_slope_mib_per_hour")
    if slope is not None and soak.get("rss_mean_point"):
        t_mean, rss_mean = soak["rss_mean_point"]
        xs = np.array([1.0, soak["minutes"]])
        fit = rss_mean + slope * (xs - t_mean / 60) / 60
        ax.plot(xs, fit, "k:", label="least-squares fit (after min 1)")
    ax.set_xlabel("minute")
    ax.set_ylabel("RSS MiB")
    ax2 = ax.twinx()
    ax2.plot(
        [r["minute"] + 0.5 for r in rows],
        [r["p99_ms"] for r in rows],
        "s--",
        color="tab:orange",
        label="answer-to-feedback p99 per minute (ms)",
    )
    ax2.set_ylabel("p99 ms")
    ax2.set_ylim(bottom=0)
    ax.set_title(f"soak {soak['minutes']:.0f} min: RSS slope {slope or 0:+.2f} MiB/h")
    fig.legend(loc="lower right", bbox_to_anchor=(0.9, 0.2), fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
