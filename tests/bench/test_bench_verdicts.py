"""The report's verdicts on what a run could not measure: failed /metrics scrapes, lessons the README gives
no verdict, figures printed beside their limit, side-by-side timing order and the soak's allowance."""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bench_kt
import bench_report
import bench_vision
import lesson
import lesson_figures as figures
import pytest
import run_all

METRICS = (
    "edge_camera_frames_analysed_total 400.0\n"
    'edge_answers_total{outcome="applied"} 90.0\n'
    "edge_camera_stalls_total 2.0\n"
)
EVERY_MODEL = [
    "fsanet-1x1 onnxruntime fp32",
    "fsanet-var onnxruntime fp32",
    "kt-step onnxruntime fp32",
    "yunet onnxruntime fp32",
]  # engines_up of a real lesson run (artifacts/bench/lesson-raw.json, 2026-12-06)
START = 1_800_000_000.0


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/metrics"
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(METRICS.encode() if ok else b"overloaded")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failed_metrics_scrape_leaves_the_counters_unknown_instead_of_zero(metrics_server: str) -> None:
    read = lesson._sample(os.getpid(), metrics_server + "/metrics")
    assert read[3:5] == (400.0, 90.0) and read[5] is not None and read[5]["edge_camera_stalls_total"] == 2.0
    assert read[1] > 0 and read[2] > 0  # CPU and RSS come from /proc, not from the scrape
    for url in (f"http://127.0.0.1:{_closed_port()}/metrics", metrics_server + "/busy"):  # refused, 503
        failed = lesson._sample(os.getpid(), url)
        assert failed[3:] == (None, None, None) and failed[2] > 0


def _soak(samples: list[figures.Sample]) -> figures.LessonRun:
    run = figures.LessonRun(seconds=600, students=50, window=(START, START + 600), samples=samples)
    run.answers = [(START + i * 0.5, 0.004, 200, "applied") for i in range(1200)]
    return run


def _counters(stalls: float) -> dict[str, float]:
    return figures.error_counts(figures.parse_metrics(f"edge_camera_stalls_total {stalls}\n"))


def test_error_counters_compare_the_first_and_last_scrapes_read_and_none_read_gives_no_verdict() -> None:
    # stalls 0 -> 3 during the soak, the last scrape timed out: read as "no error counter moved", a PASS
    good = [
        (START + 5 * k, 0.1 * k, 200.0, 25.0 * k, 5.0 * k, _counters(0 if k < 60 else 3)) for k in range(119)
    ]
    last_failed = _soak([*good, (START + 595, 12.0, 200.0, None, None, None)])
    soak = figures.soak_summary(last_failed)
    assert soak["errors_moved"] == {"edge_camera_stalls_total": 3.0}
    assert bench_report.soak_verdict(soak)[0] is False
    assert soak["lesson"]["frames_per_s"] == pytest.approx(5.0)  # not negative: the failed scrape is skipped
    assert soak["lesson"]["answers_applied_daemon"] == 590.0
    assert soak["lesson"]["metrics_scrapes_failed"] == 1 and soak["per_minute"][-1]["errors"] is None
    # a failed first scrape read as moved (0 -> 2 with nothing happening)
    static = [(START + 5 * k, 0.1 * k, 200.0, 25.0 * k, 5.0 * k, _counters(2)) for k in range(1, 120)]
    first_failed = figures.soak_summary(_soak([(START, 0.0, 200.0, None, None, None), *static]))
    assert first_failed["errors_moved"] == {} and bench_report.soak_verdict(first_failed)[0] is True
    # every scrape but one failed: nothing to compare, no verdict and the rows say why
    blind = [(START + 5 * k, 0.1 * k, 200.0, None, None, None) for k in range(119)]
    blind_soak = figures.soak_summary(_soak([*blind, static[-1]]))
    ok, why = bench_report.soak_verdict(blind_soak)
    assert ok is None and why == "error counters not read: 119 of 120 /metrics scrapes failed"
    assert blind_soak["lesson"]["frames_per_s"] is None
    text = bench_report.render({"soak": blind_soak, "lesson": blind_soak["lesson"]})
    assert "not read (119 of 120 /metrics scrapes failed)" in text
    assert json.loads(json.dumps(blind_soak))["errors_moved"] is None


def _lesson(status: str = "applied", engines: list[str] | None = None, rss: float = 211.0) -> dict:
    answers = [(START + i, 0.002, 200 if status != "timeout" else 0, status) for i in range(1150)]
    samples = [(START + 5 * k, 0.1 * k, rss, 25.0 * k, 5.0 * k, _counters(0)) for k in range(37)]
    run = figures.LessonRun(seconds=180, students=50, answers=answers, samples=samples,
                            window=(START, START + 180), engines=EVERY_MODEL if engines is None else engines)
    return figures.summarize(run)


def _rss(lesson_figures: dict) -> tuple[str, str, bool | None]:
    _, measured, detail, ok = next(r for r in bench_report.targets({"lesson": lesson_figures})
                                      if r[0] == "daemon RSS <= 300 MB, every model loaded")
    return measured, detail, ok


def test_the_rss_target_is_judged_only_on_a_valid_lesson_with_every_model_loaded() -> None:
    assert _rss(_lesson()) == ("211 MiB", "max over the lesson", True)
    assert _rss(_lesson(rss=400.0))[2] is False
    _, detail, ok = _rss(_lesson("duplicate"))  # answers that never reached the model or SQLite
    assert ok is None and detail.startswith("not judged: not a valid run: 1150 of 1150 answers came back")
    _, detail, ok = _rss(_lesson("timeout"))  # a stalled daemon
    assert ok is None and detail == "not judged: 1150 of 1150 answers failed (1150 timeouts)"
    _, detail, ok = _rss(_lesson(engines=["kt-step onnxruntime fp32"]))
    assert ok is None and detail == "not judged: not every model loaded: fsanet-1x1, fsanet-var, yunet not up"
    _, detail, ok = _rss(_lesson(engines=[]))
    assert ok is None and "no engine list" in detail
    on_board = [e.replace("onnxruntime fp32", "tensorrt fp16") for e in EVERY_MODEL]
    assert _rss(_lesson(engines=on_board))[2] is True


def test_a_figure_beside_its_limit_never_prints_as_the_limit() -> None:
    results = {
        "lesson": {"feedback_p99_ms": 10.004, "answers_applied": 1150, "answers_sent": 1150},
        "kt": {"model_b1_ratio": 9.9996, "step_b1_median_ms": 0.099996},
    }
    rows = {name: (measured, ok) for name, measured, _, ok in bench_report.targets(results)}
    assert rows["answer-to-feedback p99 <= 10 ms (lesson)"] == ("10.004 ms", False)
    assert rows["KT throughput >= 10x PyTorch (model at batch 1: ORT step vs eager window-10)"] == (
        "9.9996 x",
        False,
    )
    assert rows["KT step median <= 0.1 ms at batch 1"] == ("0.099996 ms", True)
    rss = _lesson(rss=bench_report.RSS_TARGET_MIB + 0.1)  # 286.2 MiB: the 300 MB line is 286.1
    assert _rss(rss)[0] == "286.2 MiB" and _rss(rss)[2] is False
    # away from the limit, or on it: 4 figures as before
    assert bench_report._fmt(10.0, "ms", 10.0) == "10 ms"
    assert bench_report._fmt(12.34567, "x", 10.0) == "12.35 x"


def test_the_ratio_spread_is_labelled_as_the_p10_p90_of_the_rounds() -> None:
    rounds = [9.1, 9.6] + [10.3 + 0.04 * i for i in range(16)] + [11.6, 12.4]
    kt = bench_kt._spread_of("model_b1_ratio", rounds)
    detail = next(d for n, _, d, _ in bench_report.targets({"kt": kt}) if "batch 1" in n)
    assert detail == "model_b1_ratio (p10-p90 of 20 rounds: 10.2-11)"
    assert bench_report._spread({"x_p10": 1.0, "x_p90": 2.0}, "x") == " (p10-p90 of the rounds: 1-2)"


def test_side_by_side_calls_alternate_with_the_leader_swapped_every_round() -> None:
    order: list[str] = []

    def call(name: str) -> object:
        return lambda: order.append(name)

    times = bench_vision.interleaved_ms({"ours": call("ours"), "theirs": call("theirs")}, 4, warmup=0)
    assert order == ["ours", "theirs", "theirs", "ours", "ours", "theirs", "theirs", "ours"]
    assert [len(v) for v in times.values()] == [4, 4]
    order.clear()
    photos = [{"detect_ort": call(f"ort{i}"), "detect_cv2": call(f"cv2{i}")} for i in range(2)]
    times = run_all.side_by_side_ms(photos, 2, warmup=1)
    assert order == ["ort0", "cv20", "ort0", "cv20", "cv20", "ort0",
                     "ort1", "cv21", "ort1", "cv21", "cv21", "ort1"]
    assert sorted(times) == ["detect_cv2", "detect_ort"] and len(times["detect_ort"]) == 4


def test_the_vision_section_keeps_its_engine_copies_in_the_runs_temporary_folder() -> None:
    # it made a bench-vision-* folder in /tmp (5.3 MB) that nothing removed
    assert "tmp" in inspect.signature(run_all.section_vision).parameters
    assert "mkdtemp" not in inspect.getsource(run_all)


def test_the_soak_allowance_is_one_percent_of_the_first_ten_minute_low_not_of_one_sample() -> None:
    # the first sample after minute 1 on a burst's peak (216 MiB) allowed 2.16 MiB; the level is 204
    soak = {"rss_slope_mib_per_hour": 4.2, "minutes": 30.0, "rss_first_mib": 216.0,
            "rss_low_by_10_min_mib": [204.0, 204.6, 206.1], "errors_moved": {}, "lesson": {}}
    ok, why = bench_report.soak_verdict(soak)
    assert ok is False
    assert why.startswith("fitted rise +2.10 MiB over 30 min (allowance 2.04: 2 MiB or 1 % of the first")
    soak["rss_slope_mib_per_hour"] = 4.0
    assert bench_report.soak_verdict(soak)[0] is True
    short = soak | {"rss_low_by_10_min_mib": [], "rss_first_mib": 300.0, "rss_slope_mib_per_hour": 6.0}
    ok, why = bench_report.soak_verdict(short)  # under 10 minutes: no block, the first sample it is
    assert ok is True and "1 % of RSS at minute 1 300 MiB" in why


def test_a_quantile_past_the_largest_bucket_is_written_as_null_with_the_bound_it_passed() -> None:
    bounds = [0.005, 0.01, 2.5, math.inf]
    start = dict.fromkeys(bounds, 0.0)
    end = {0.005: 10.0, 0.01: 10.0, 2.5: 10.0, math.inf: 1000.0}  # 990 of 1000 answers over 2.5 s
    run = figures.LessonRun(seconds=60, students=50, feedback_buckets=(start, end),
                            stage_buckets=({"kt-step/queue": start}, {"kt-step/queue": end}))
    summary = figures.summarize(run)
    assert summary["daemon_feedback_p99_le_ms"] is None and summary["daemon_feedback_p50_le_ms"] is None
    assert summary["daemon_stage_p99_le_ms"] == {"kt-step/queue": None}
    assert summary["daemon_le_past_top_bucket_ms"] == {
        "feedback p50": 2500.0, "feedback p99": 2500.0, "kt-step/queue p99": 2500.0
    }
    json.dumps(summary, allow_nan=False)  # results.json held "Infinity"
    text = bench_report.render({"lesson": summary})
    assert "> 2500 ms / > 2500 ms" in text and "kt-step/queue > 2500 ms" in text
