"""Issue 8: the running daemon's /metrics after real answer traffic, and health endpoints vs. STATUS."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.kt.package import KTPackage
from edge_agent.telemetry.exporter import bucket_quantile, histogram_stats_from_text, sample_from_text
from edge_agent.telemetry.metrics import LATENCY_BUCKETS
from tests.system.harness import (
    DaemonProcess,
    NotifySocket,
    answer,
    free_port,
    http,
    local_config,
    write_config,
)

ANSWERS = 200


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, the definition a histogram quantile approximates."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bucket_index(value: float) -> int:
    """Which histogram bucket (0-based, +Inf last) a latency falls into."""
    return next((n for n, upper in enumerate(LATENCY_BUCKETS) if value <= upper), len(LATENCY_BUCKETS))


def timed_answers(port: int, package: KTPackage, count: int, tag: str) -> list[float]:
    """One answer per request over a keep-alive connection, as a tablet would send them; client latencies."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    try:
        for n in range(count):
            item = package.items[n % len(package.items)]
            body = json.dumps(answer(f"metrics-{n % 10}", item.id, item.skill_id, n % 2 == 0, f"{tag}{n}"))
            began = time.perf_counter()
            conn.request("POST", "/api/v1/answers", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - began)
            assert response.status == 200, payload
            assert json.loads(payload)["status"] == "applied"
    finally:
        conn.close()
    return latencies


def scrape(port: int) -> str:
    status, text = http("GET", f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return str(text)


@dataclass
class Traffic:
    before: str  # scraped right after start
    warm: str  # after one warm-up answer
    after: str  # after the measured answers and one rejected request
    latencies: list[float]
    web_port: int
    metrics_port: int


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory, package: KTPackage) -> Iterator[Traffic]:
    """One daemon, ANSWERS real answers one request each, scraped before and after (shared: ~3 s)."""
    base = tmp_path_factory.mktemp("metrics")
    cfg = local_config(base, faces=None)
    notify = NotifySocket(base)
    daemon = DaemonProcess(write_config(base / "config.toml", cfg), notify, base / "run.log")
    try:
        daemon.start().wait_running()
        metrics_port, web_port = cfg["metrics"]["port"], cfg["web"]["port"]
        before = scrape(metrics_port)
        # Warm-up outside the measurement: the first inference pays for ONNX Runtime's lazy set-up.
        timed_answers(web_port, package, 1, "warm")
        warm = scrape(metrics_port)
        latencies = timed_answers(web_port, package, ANSWERS, "m")
        rejected = http("POST", f"http://127.0.0.1:{web_port}/api/v1/answers", {"answers": "not a list"})
        assert rejected[0] == 400
        yield Traffic(before, warm, scrape(metrics_port), latencies, web_port, metrics_port)
    finally:
        daemon.stop()
        notify.close()


def test_answer_counters_move_with_traffic(traffic: Traffic) -> None:
    text = traffic.after
    families = {f.name: f for f in text_string_to_metric_families(text)}  # the official parser accepts it
    assert families["edge_answers"].type == "counter"
    assert families["edge_answer_feedback_seconds"].type == "histogram"
    assert (sample_from_text(traffic.before, "edge_answers_total", {"outcome": "applied"}) or 0.0) == 0.0
    assert sample_from_text(text, "edge_answers_total", {"outcome": "applied"}) == ANSWERS + 1
    assert sample_from_text(text, "edge_answers_total", {"outcome": "rejected"}) == 1


def test_inference_requests_counted_by_engine_backend_and_outcome(traffic: Traffic) -> None:
    labels = {"engine": "kt-step", "backend": "onnxruntime", "outcome": "ok"}
    ok_warm = sample_from_text(traffic.warm, "edge_inference_requests_total", labels) or 0.0
    ok_after = sample_from_text(traffic.after, "edge_inference_requests_total", labels)
    # One single-skill answer per request: exactly one KT step (one engine call) each.
    assert ok_after is not None and ok_after - ok_warm == ANSWERS
    errors = sample_from_text(traffic.after, "edge_inference_requests_total", {"outcome": "error"})
    assert (errors or 0.0) == 0
    infer = histogram_stats_from_text(traffic.after, "edge_inference_latency_seconds",
                                      {"engine": "kt-step", "stage": "infer"})
    assert infer.count == ok_after and infer.p99 is not None and infer.p99 > 0


def test_each_kt_inference_is_counted_once(traffic: Traffic) -> None:
    ok_warm = sample_from_text(traffic.warm, "edge_inference_requests_total", {"outcome": "ok"}) or 0.0
    ok_after = sample_from_text(traffic.after, "edge_inference_requests_total", {"outcome": "ok"}) or 0.0
    assert ok_after - ok_warm == ANSWERS


def test_feedback_p99_from_the_histogram_matches_the_client(traffic: Traffic, package: KTPackage) -> None:
    warm_stats = histogram_stats_from_text(traffic.warm, "edge_answer_feedback_seconds")
    stats = histogram_stats_from_text(traffic.after, "edge_answer_feedback_seconds")
    assert stats.count - warm_stats.count == ANSWERS
    assert stats.p99 is not None
    before, after, latencies = traffic.warm, traffic.after, traffic.latencies
    for attempt in range(3):
        # Each request's server-side latency lies inside the client's, so for every bucket bound the
        # histogram must count at least as many answers below it as the client saw: always, no tolerance.
        server_cum = _delta_buckets(before, after)
        for bound, count in server_cum:
            assert count >= sum(1 for x in latencies if x <= bound), (bound, count)
        measured = _quantile(server_cum, 0.99)
        client_p99 = percentile(latencies, 0.99)
        client_bucket, server_bucket = bucket_index(client_p99), bucket_index(measured)
        print(f"round {attempt}: client p99 {client_p99 * 1000:.2f} ms (bucket {client_bucket}), "
              f"histogram p99 {measured * 1000:.2f} ms (bucket {server_bucket})")
        # An interpolated histogram quantile is only known to its bucket, and the client also pays for HTTP
        # and its own scheduling: 0.8-1.5 ms on a slow 2-core VM, which spans two of the fine buckets
        # (1.5, 2, 3 ms). So: within one bucket, or the client at most 2.5x the server (a wrong unit is
        # 1000x, the wrong observation point, e.g. the model step alone, 10x). One stalled request can
        # push the client's tail further, so a disagreeing round is measured again; the last must agree.
        agree = abs(client_bucket - server_bucket) <= 1 or measured <= client_p99 <= 2.5 * measured
        if agree or attempt == 2:
            break
        before = after
        latencies = timed_answers(traffic.web_port, package, ANSWERS, f"retry{attempt}-")
        after = scrape(traffic.metrics_port)
    assert agree, (client_p99, measured)


def _delta_buckets(before: str, after: str) -> list[tuple[float, float]]:
    """Cumulative buckets of edge_answer_feedback_seconds observed between two scrapes."""

    def buckets(text: str) -> dict[float, float]:
        return {
            float(s.labels["le"]): s.value
            for f in text_string_to_metric_families(text) if f.name == "edge_answer_feedback_seconds"
            for s in f.samples if s.name.endswith("_bucket")
        }

    old, new = buckets(before), buckets(after)
    return sorted((bound, new[bound] - old.get(bound, 0.0)) for bound in new)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    value = bucket_quantile(q, buckets)
    assert value is not None
    return value


def test_healthz_and_readyz_agree_with_the_status_line(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # MQTT points at a port nobody listens on: the daemon runs degraded and must say why, the same way
    # to systemd (STATUS) and to probes (/readyz).
    cfg = local_config(tmp_path, faces=None, mqtt_port=free_port())
    daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "run.log").start()
    daemon.wait_running()
    base = f"http://127.0.0.1:{cfg['web']['port']}"
    assert http("GET", f"{base}/healthz") == (200, {"status": "alive"})

    deadline = time.monotonic() + 10
    seen: list[tuple[str, object]] = []
    while time.monotonic() < deadline:
        status, body = http("GET", f"{base}/readyz")
        latest = [m["STATUS"] for m in notify.with_key("STATUS")][-1]
        seen.append((latest, body))
        if status == 503 and latest == "running: " + "; ".join(body["reasons"]):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"/readyz never matched the STATUS line: {seen[-3:]}")
    assert body["status"] == "not ready"
    assert any(reason.startswith("sync: not connected") for reason in body["reasons"])
    metrics_text = scrape(cfg["metrics"]["port"])
    assert sample_from_text(metrics_text, "edge_component_up", {"component": "sync"}) == 0.0
    assert sample_from_text(metrics_text, "edge_component_up", {"component": "kt"}) == 1.0
