"""The lesson scenario's figures, from raw series (pure: no processes, no network, no files).

``parse_metrics`` reads the daemon's /metrics text; ``summarize`` gives the lesson's figures and
``soak_summary`` the soak's (per-minute RSS, p99 and error counters, memory slope, p99 drift).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Frames the daemon drops as broken: frame_problem's reasons (vision/camera.py: a corrupt or unreadable
# image is "empty") and the pipeline's "analysis_error" (vision/pipeline.py). "busy" (a frame superseded
# while analysis ran) is normal at 5 analysed frames/s. The daemon names no "corrupt" reason: watching it,
# a lesson with 3 truncated JPEGs in its camera folder dropped 378 frames and reported no counter moved.
BROKEN_FRAME_REASONS = ("empty", "format", "tiny", "analysis_error")

# Counters that must not move in a healthy run (label filters select the error outcomes only; a tuple
# matches any of its values).
ERROR_COUNTERS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "edge_inference_requests_total": {"outcome": ("error", "rejected")},  # rejected: feeds refused
    "edge_engine_load_failures_total": {},
    "edge_outbox_drops_total": {},
    "edge_mqtt_reconnects_total": {},
    "edge_mqtt_rejected_total": {},
    "edge_camera_reconnects_total": {},
    "edge_camera_stalls_total": {},
    "edge_camera_frames_dropped_total": {"reason": BROKEN_FRAME_REASONS},
    # every answer outcome but applied and duplicate (edge_agent/telemetry/metrics.py ANSWERS; "conflict"
    # is the service's status for a reused client event id)
    "edge_answers_total": {"outcome": ("rejected", "failed", "overloaded", "unavailable", "conflict")},
}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# -- pure helpers -------------------------------------------------------------------------------------


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition; lines that do not parse are skipped, never fatal."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out.append((match.group(1), dict(_LABEL.findall(match.group(2) or "")), value))
    return out


def metric_sum(
    samples: list[tuple[str, dict[str, str], float]], name: str, where: dict[str, str | tuple[str, ...]]
) -> float:
    """Sum of the samples of ``name`` whose labels match ``where`` (a tuple value: any of its values)."""
    return sum(
        v
        for n, labels, v in samples
        if n == name
        and all(labels.get(k) in ((x,) if isinstance(x, str) else x) for k, x in where.items())
    )


def engines_up(samples: list[tuple[str, dict[str, str], float]]) -> list[str]:
    """Each engine the daemon loaded (``edge_engines_up`` at 1) as "model backend precision", sorted: which
    backend a lesson's figures are from (TensorRT where it imported, else ONNX Runtime)."""
    return sorted(
        f"{labels.get('engine')} {labels.get('backend')} {labels.get('precision')}"
        for name, labels, value in samples
        if name == "edge_engines_up" and value == 1
    )


def histogram(
    samples: list[tuple[str, dict[str, str], float]], name: str, **where: str
) -> dict[float, float]:
    """Cumulative bucket counts of one histogram (of the series with labels ``where``), by upper bound
    (``+Inf`` as math.inf)."""
    return {
        float(labels["le"]): v
        for n, labels, v in samples
        if n == f"{name}_bucket" and "le" in labels and all(labels.get(k) == x for k, x in where.items())
    }


# The answer path's stages whose tails the lesson reports (engine "kt-step"): where a slow answer waited.
ANSWER_STAGES = ("queue", "infer", "store")


def answer_stage_buckets(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, dict[float, float]]:
    """The bucket counts of each answer-path stage, keyed ``kt-step/<stage>``."""
    return {
        f"kt-step/{stage}": histogram(
            samples, "edge_inference_latency_seconds", engine="kt-step", stage=stage
        )
        for stage in ANSWER_STAGES
    }


def histogram_quantile(start: dict[float, float], end: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of the observations made between two scrapes."""
    bounds = sorted(end)
    deltas = [end[b] - start.get(b, 0.0) for b in bounds]
    if not deltas or deltas[-1] <= 0:
        return None
    for bound, cumulative in zip(bounds, deltas, strict=True):
        if cumulative >= q * deltas[-1]:
            return bound
    return bounds[-1]


def stage_totals(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, list[float]]:
    """[seconds, count] per inference ``engine/stage`` and for the whole answer-to-feedback path."""
    out: dict[str, list[float]] = {}
    for name, labels, value in samples:
        for family, key in (
            ("edge_inference_latency_seconds", f"{labels.get('engine')}/{labels.get('stage')}"),
            ("edge_answer_feedback_seconds", "answer-to-feedback"),
            ("edge_gc_pause_seconds", f"gc/gen{labels.get('generation')}"),
        ):
            if name in (f"{family}_sum", f"{family}_count") and (
                family == "edge_answer_feedback_seconds" or {"engine", "generation"} & set(labels)
            ):
                out.setdefault(key, [0.0, 0.0])[name.endswith("_count")] = value
    return out


def _passes(start: dict[str, list[float]], end: dict[str, list[float]], prefix: str) -> dict[str, int]:
    return {k: int(v[1] - start.get(k, [0.0, 0.0])[1]) for k, v in end.items() if k.startswith(prefix)}


def stage_means_ms(start: dict[str, list[float]], end: dict[str, list[float]]) -> dict[str, float]:
    """Mean milliseconds per call of each stage, over the calls made between two scrapes."""
    means = {}
    for key, (total, count) in end.items():
        before = start.get(key, [0.0, 0.0])
        if count > before[1]:
            means[key] = round((total - before[0]) / (count - before[1]) * 1e3, 3)
    return means


def error_counts(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    return {name: metric_sum(samples, name, where) for name, where in ERROR_COUNTERS.items()}


def pct(values: list[float] | np.ndarray, q: float) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else None


def slope_per_hour(times_s: list[float], values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against time, per hour; None with fewer than 3 points."""
    if len(times_s) < 3 or np.ptp(np.asarray(times_s)) <= 0:
        return None
    return (
        float(np.polyfit(np.asarray(times_s, dtype=np.float64), np.asarray(values, dtype=np.float64), 1)[0])
        * 3600
    )


def cpu_seconds(stat_line: str, ticks: int) -> float:
    """utime + stime of a /proc/PID/stat line (the command may contain spaces and parentheses)."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(status_text: str) -> float | None:
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


# -- raw series ---------------------------------------------------------------------------------------

# (epoch, daemon cpu seconds, rss MiB, frames analysed, answers applied, error counters): the last three
# None where that sample's /metrics scrape failed (lesson._sample)
Sample = tuple[float, float, float, float | None, float | None, dict[str, float] | None]


@dataclass
class LessonRun:
    seconds: float
    students: int
    # (epoch sent, latency s, HTTP status, feedback status) per answer, from the load generator
    answers: list[tuple[float, float, int, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)  # see Sample
    sync_lags_s: list[float] = field(default_factory=list)
    receiver: dict[str, Any] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)  # load start and end (epoch)
    daemon_exit: int | None = None
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    startup_s: float = 0.0
    # the daemon's own answer-to-feedback histogram (arrival to feedback ready) at load start and end
    feedback_buckets: tuple[dict[float, float], dict[float, float]] = ({}, {})
    stages: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})
    # the answer path's stage histograms (answer_stage_buckets) at load start and end
    stage_buckets: tuple[dict[str, dict[float, float]], dict[str, dict[float, float]]] = ({}, {})
    # (epoch, bytes the daemon had written to storage (/proc/PID/io write_bytes), answers it had applied)
    # at load start and end: a board's eMMC or SD card wears with what is written to it
    disk_written: tuple[tuple[float, int, float], tuple[float, int, float]] | None = None
    engines: list[str] = field(default_factory=list)  # engines_up once the daemon started


def run_from_json(data: dict[str, Any]) -> LessonRun:
    """A LessonRun back from its JSON dump (tuples and float bucket keys restored)."""
    buckets: tuple[dict[str, float], ...] = tuple(data.get("feedback_buckets") or ({}, {}))
    return LessonRun(
        **{
            **data,
            "window": tuple(data["window"]),
            "load_avg": tuple(data["load_avg"]),
            "answers": [tuple(a) for a in data["answers"]],
            "samples": [tuple(x) for x in data["samples"]],
            "feedback_buckets": tuple({float(k): v for k, v in b.items()} for b in buckets),
            "stages": tuple(data.get("stages") or ({}, {})),
            "stage_buckets": tuple(
                {k: {float(b): v for b, v in h.items()} for k, h in side.items()}
                for side in data.get("stage_buckets") or ({}, {})
            ),
            "disk_written": tuple(tuple(side) for side in data.get("disk_written") or ()) or None,
        }
    )


CLIENT_TIMEOUT_S = 10.0  # the load generator's limit per answer (lesson.py)


def _answered(code: int, status: str) -> bool:
    return code == 200 and status in ("applied", "duplicate")


def feedback_s(lat: float, code: int, status: str) -> float:
    """An answer's time to feedback: one that got none counts as the client's whole timeout. With only
    the 200s kept, a lesson whose daemon stalled 12 s (50 of 600 answers timed out) gave p99 4.8 s; at the
    time the client saw, refused connections (~1 ms) made a dead daemon's p99 look fast (round 2)."""
    return lat if _answered(code, status) else max(lat, CLIENT_TIMEOUT_S)


Scraped = tuple[float, float, float, dict[str, float]]


def scraped(samples: list[Sample]) -> list[Scraped]:
    """(epoch, frames, answers applied, error counters) of the samples whose /metrics scrape was read."""
    return [(s[0], s[3], s[4], s[5]) for s in samples if s[3] is not None and s[4] is not None
            and s[5] is not None]


def errors_moved(samples: list[Sample]) -> dict[str, float] | None:
    """How far each error counter moved between the first and the last scrape read, or None with fewer than
    two read: a failed scrape's counters are unknown, not zero (a failed last scrape read as "no error
    counter moved", a soak PASS)."""
    read = scraped(samples)
    if len(read) < 2:
        return None
    a, b = read[0][3], read[-1][3]
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b if b.get(k, 0.0) != a.get(k, 0.0)}


def _bound_ms(start: dict[float, float], end: dict[float, float], q: float, key: str,
              past_top: dict[str, float | None]) -> float | None:
    """histogram_quantile in ms; in the +Inf bucket None, with the largest finite bound (ms) in
    ``past_top[key]``: JSON has no infinity (results.json held "Infinity", which strict readers refuse)."""
    bound = histogram_quantile(start, end, q)
    if bound is None or math.isfinite(bound):
        return _ms(bound)
    past_top[key] = _ms(max((b for b in end if math.isfinite(b)), default=None))
    return None


def summarize(run: LessonRun) -> dict[str, Any]:
    """The lesson figures: answer-to-feedback, frames/s, sync lag, daemon CPU and RSS, errors."""
    ok = [lat for _, lat, code, status in run.answers if _answered(code, status)]
    latencies = [feedback_s(lat, code, status) for _, lat, code, status in run.answers]
    failed = [(code, status, lat) for _, lat, code, status in run.answers if not _answered(code, status)]
    start, end = run.window
    inside = [s for s in run.samples if start <= s[0] <= end] or run.samples
    first, last = (inside[0], inside[-1]) if inside else (None, None)
    span = (last[0] - first[0]) if first and last else 0.0
    read = scraped(inside)  # frames and answers from the first and last scrapes read, as errors_moved
    frames_span = read[-1][0] - read[0][0] if read else 0.0
    rss = [s[2] for s in run.samples]
    lags_ms = [x * 1e3 for x in run.sync_lags_s]
    past_top: dict[str, float | None] = {}
    return {
        "seconds": run.seconds,
        "students": run.students,
        "startup_s": round(run.startup_s, 2),
        "engines": run.engines,
        "answers_sent": len(run.answers),
        "answers_ok": len(ok),
        # each answer of a lesson has its own client event id: all must be applied, none duplicates
        "answers_applied": sum(1 for _, _, code, st in run.answers if code == 200 and st == "applied"),
        "answers_duplicate": sum(1 for _, _, code, st in run.answers if code == 200 and st == "duplicate"),
        "answers_failed": len(failed),
        "answers_failed_by": failure_kinds(failed),
        "feedback_p50_ms": _ms(pct(latencies, 50)),
        "feedback_p99_ms": _ms(pct(latencies, 99)),
        "feedback_max_ms": _ms(max(latencies) if latencies else None),
        "daemon_feedback_p50_le_ms": _bound_ms(*run.feedback_buckets, 0.5, "feedback p50", past_top),
        "daemon_feedback_p99_le_ms": _bound_ms(*run.feedback_buckets, 0.99, "feedback p99", past_top),
        "daemon_stage_mean_ms": stage_means_ms(*run.stages),
        "daemon_stage_p99_le_ms": {
            key: _bound_ms(run.stage_buckets[0].get(key, {}), bounds, 0.99, f"{key} p99", past_top)
            for key, bounds in run.stage_buckets[1].items()
        },
        # the bucket bounds above null in the two above: the quantile is past the largest finite bound (ms)
        "daemon_le_past_top_bucket_ms": past_top,
        "daemon_gc_passes": _passes(*run.stages, prefix="gc/"),
        "frames_per_s": (read[-1][1] - read[0][1]) / frames_span if frames_span else None,
        "answers_applied_daemon": read[-1][2] if read else None,
        "sync_messages": run.receiver.get("unique", 0),
        "sync_gaps": run.receiver.get("gaps", []),
        "sync_duplicates": run.receiver.get("duplicates", 0),
        "sync_lag_p50_ms": pct(lags_ms, 50),
        "sync_lag_p99_ms": pct(lags_ms, 99),
        "cpu_cores": (last[1] - first[1]) / span if span and first and last else None,
        "rss_max_mib": max(rss) if rss else None,
        "rss_last_mib": rss[-1] if rss else None,
        **_disk_written(run.disk_written),
        "errors_moved": errors_moved(run.samples),  # None: fewer than two scrapes read
        "metrics_scrapes_failed": len(run.samples) - len(scraped(run.samples)),
        "metrics_scrapes": len(run.samples),
        "daemon_exit": run.daemon_exit,
        "load_avg_1_5_15": list(run.load_avg),
    }


def failure_kinds(failed: list[tuple[int, str, float]]) -> dict[str, int]:
    """How many answers failed each way: "timeouts" (the load generator's 10-s limit; a raw file from
    before 2026-12-03 has them as "error" at 10 s), "no reply" (connection refused or reset), "HTTP 503"..."""
    kinds: dict[str, int] = {}
    for code, status, lat in failed:
        kind = (
            ("timeouts" if status == "timeout" or lat >= CLIENT_TIMEOUT_S else "no reply")
            if code == 0
            else f"HTTP {code}" if code != 200 else f"status {status!r}"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _disk_written(
    written: tuple[tuple[float, int, float], tuple[float, int, float]] | None,
) -> dict[str, float | None]:
    """Storage writes per applied answer and per hour (None where /proc/PID/io could not be read)."""
    if not written:
        return {"disk_written_kib_per_answer": None, "disk_written_mib_per_hour": None}
    (t0, bytes0, answers0), (t1, bytes1, answers1) = written
    return {
        "disk_written_kib_per_answer": (bytes1 - bytes0) / 1024 / (answers1 - answers0)
        if answers1 > answers0 else None,
        "disk_written_mib_per_hour": (bytes1 - bytes0) / 2**20 * 3600 / (t1 - t0) if t1 > t0 else None,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def rss_lows(series: list[tuple[float, float]], block_s: float = 600.0) -> list[float]:
    """The lowest RSS of each whole ``block_s`` block of (seconds, MiB): the level between answer bursts,
    which a leak would raise, while the bursts' saw-tooth (about 12 MiB) moves a fitted slope."""
    # The last, partial block is left out; one whose samples reach within 5 % of its end is whole: a
    # 30-minute soak's last sample comes at about 1,795-1,800 s, and its third block was dropped in most
    # runs (the one a leak would show most in).
    whole = int((series[-1][0] + 0.05 * block_s) // block_s) if series else 0
    lows: dict[int, float] = {}
    for t, rss in series:
        if (block := int(t // block_s)) < whole:
            lows[block] = min(rss, lows.get(block, rss))
    return [round(v, 1) for _, v in sorted(lows.items())]


def soak_summary(run: LessonRun, warmup_s: float = 60.0) -> dict[str, Any]:
    """Per-minute RSS, p99 and error counters; memory slope (least squares, after warm-up); p99 drift."""
    start = run.window[0]
    minutes: dict[int, dict[str, Any]] = {}
    for t, lat, code, status in run.answers:  # failed answers too, at the client's timeout (feedback_s)
        minutes.setdefault(int((t - start) // 60), {"lat": []})["lat"].append(feedback_s(lat, code, status))
    for t, _, rss, _, _, errors in run.samples:
        row = minutes.setdefault(int((t - start) // 60), {"lat": []})
        row["rss"], row["errors"] = rss, None if errors is None else sum(errors.values())
    per_minute = [
        {
            "minute": m,
            "answers": len(r["lat"]),
            "p99_ms": _ms(pct(r["lat"], 99)),
            "rss_mib": r.get("rss"),
            "errors": r.get("errors"),
        }
        for m, r in sorted(minutes.items())
        if m >= 0
    ]
    steady = [(t - start, s[2]) for s in run.samples if (t := s[0]) - start >= warmup_s]
    ok = sorted((t, feedback_s(lat, code, status)) for t, lat, code, status in run.answers)
    third = len(ok) // 3
    first_p99 = _ms(pct([lat for _, lat in ok[:third]], 99)) if third else None
    last_p99 = _ms(pct([lat for _, lat in ok[-third:]], 99)) if third else None
    summary = summarize(run)
    return {
        "minutes": run.seconds / 60,
        "per_minute": per_minute,
        # the least-squares line passes through the mean point: the plot draws it from there
        "rss_mean_point": [float(np.mean([x for x, _ in steady])), float(np.mean([y for _, y in steady]))]
        if steady
        else None,
        "rss_series": [(round(t - start, 1), s[2]) for s in run.samples if (t := s[0]) >= start],
        "rss_slope_mib_per_hour": slope_per_hour([x for x, _ in steady], [y for _, y in steady]),
        "rss_first_mib": steady[0][1] if steady else None,
        "rss_last_mib": steady[-1][1] if steady else None,
        "rss_low_by_10_min_mib": rss_lows(steady),
        "errors_moved": summary["errors_moved"],
        "p99_first_third_ms": first_p99,
        "p99_last_third_ms": last_p99,
        "p99_drift_ratio": (last_p99 / first_p99) if first_p99 and last_p99 else None,
        "lesson": summary,
    }
