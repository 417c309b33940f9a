"""/metrics over real HTTP, moved by a real ONNX Runtime engine, and quantiles read back from buckets."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry, Histogram

from edge_agent.errors import ConfigError, EngineInputError
from edge_agent.inference.guarded import GuardedEngine
from edge_agent.inference.manifest import InputProfile
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.telemetry.exporter import (
    MetricsServer,
    bucket_quantile,
    histogram_stats,
    histogram_stats_from_text,
    sample_from_text,
    scrape,
)
from edge_agent.telemetry.metrics import LATENCY_BUCKETS

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 0), (2.0, 10), (INF, 10)], 1.5),  # linear inside the bucket
        (0.99, [(1.0, 50), (2.0, 100), (INF, 100)], 1.98),
        (0.5, [(1.0, 10), (2.0, 10), (INF, 10)], 0.5),  # first bucket starts at zero
        (0.99, [(1.0, 0), (2.0, 0), (INF, 5)], 2.0),  # above every bound: the top finite bound
        (0.5, [(1.0, 0), (INF, 0)], None),  # nothing observed
        (0.5, [(1.0, 3)], None),  # no +Inf bucket: not a histogram
        (0.5, [], None),
    ],
)
def test_bucket_quantile_matches_promql_histogram_quantile(q, buckets, expected) -> None:
    got = bucket_quantile(q, buckets)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_bucket_quantile_rejects_a_quantile_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        bucket_quantile(1.5, [(INF, 1)])


def test_histogram_stats_reads_mean_and_p99_from_a_registry() -> None:
    registry = CollectorRegistry()
    hist = Histogram("demo_seconds", "demo", ["stage"], buckets=(0.1, 0.2, 0.4), registry=registry)
    for value in [0.05] * 90 + [0.3] * 10:
        hist.labels(stage="infer").observe(value)
    stats = histogram_stats("demo_seconds", {"stage": "infer"}, registry)
    assert stats.count == 100 and stats.mean == pytest.approx(0.075)
    assert stats.p50 == pytest.approx(0.1 * 50 / 90)
    assert stats.p99 == pytest.approx(0.2 + 0.2 * 9 / 10)
    assert histogram_stats("demo_seconds", {"stage": "other"}, registry).mean is None


def test_malformed_exposition_text_raises_value_error() -> None:
    with pytest.raises(ValueError):
        histogram_stats_from_text("edge_x{le=oops 1\n", "edge_x")


def _bucket_around(value: float) -> tuple[float, float]:
    lower = 0.0
    for bound in LATENCY_BUCKETS:
        if value <= bound:
            return lower, bound
        lower = bound
    return lower, INF


def test_scraped_metrics_move_with_real_inference_and_p99_agrees(model_mirror: Path) -> None:
    # wrapped as select.load_engine wraps every engine the daemon runs: GuardedEngine counts and times
    shape = (1, 3, 64, 64)  # the mirror's export: batch fixed at 1
    engine = GuardedEngine(
        OnnxRuntimeEngine(model_mirror / "headpose/fsanet-1x1-iter-688590.onnx", model_name="fsanet-scrape"),
        [InputProfile("input", shape, shape, shape)],
    )
    rng = np.random.default_rng(7)
    crops = rng.uniform(-1.0, 1.0, size=(300, 1, 3, 64, 64)).astype(np.float32)
    labels = {"engine": "fsanet-scrape", "backend": "onnxruntime"}
    server = MetricsServer("127.0.0.1", 0)

    async def scenario() -> tuple[str, str, list[float]]:
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            before = await scrape(url)
            measured = []
            for crop in crops:
                began = time.perf_counter()
                engine.infer({"input": crop})
                measured.append(time.perf_counter() - began)
            with pytest.raises(EngineInputError):  # outside the profile: refused before it runs
                engine.infer({"input": crops[0][:, :1]})
            after = await scrape(url)
        finally:
            await server.stop()
        return before, after, measured

    before, after, measured = asyncio.run(scenario())
    engine.close()
    ok_before = sample_from_text(before, "edge_inference_requests_total", {**labels, "outcome": "ok"}) or 0.0
    assert (
        sample_from_text(after, "edge_inference_requests_total", {**labels, "outcome": "ok"})
        == ok_before + 300
    )
    assert sample_from_text(after, "edge_inference_requests_total", {**labels, "outcome": "rejected"}) == 1

    stats = histogram_stats_from_text(after, "edge_inference_latency_seconds", {"engine": "fsanet-scrape"})
    assert stats.count == 300
    # timed inside the wrapper (after the profile check and the lock), so under what the test timed, and
    # by far the most of it: the lower bound is loose because a 2-core CI machine may preempt the test
    # between its clock and the wrapper's (0.84 against 0.94 ms a call was seen there)
    assert stats.total <= sum(measured) and stats.total >= 0.5 * sum(measured), (stats.total, sum(measured))
    true_p99 = float(np.quantile(measured, 0.99))
    lower, upper = _bucket_around(true_p99)
    assert stats.p99 is not None and abs(stats.p99 - true_p99) <= upper - lower, (stats.p99, true_p99)
    # the in-process reader sees the same numbers as the scraper
    assert histogram_stats("edge_inference_latency_seconds", {"engine": "fsanet-scrape"}) == stats


def test_metrics_server_reports_a_taken_port() -> None:
    async def scenario() -> str:
        first = MetricsServer("127.0.0.1", 0)
        await first.start()
        second = MetricsServer("127.0.0.1", first.port)
        try:
            with pytest.raises(ConfigError, match=r"metrics\.port"):
                await second.start()
            return second.health().detail
        finally:
            await first.stop()

    detail = asyncio.run(scenario())
    assert "cannot listen" in detail and "another program uses it: change metrics.port" in detail


def test_scrapes_are_gzipped_for_a_scraper_that_accepts_it_and_plain_otherwise() -> None:
    import gzip
    import urllib.request

    server = MetricsServer("127.0.0.1", 0)

    async def scenario() -> tuple[tuple[str | None, bytes], tuple[str | None, bytes]]:
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"

        def get(headers: dict[str, str]) -> tuple[str | None, bytes]:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
                return resp.headers.get("Content-Encoding"), resp.read()

        try:
            return (await asyncio.to_thread(get, {"Accept-Encoding": "gzip"}),
                    await asyncio.to_thread(get, {"Accept-Encoding": "identity"}))
        finally:
            await server.stop()

    (encoding, packed), (plain_encoding, plain) = asyncio.run(scenario())
    assert encoding == "gzip" and plain_encoding is None
    assert b"edge_answers_total" in gzip.decompress(packed) and b"edge_answers_total" in plain
    assert len(packed) * 4 < len(plain), (len(packed), len(plain))


def test_a_metrics_token_keeps_scrapers_without_it_out(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    token = "m" * 24
    server = MetricsServer("127.0.0.1", 0, token=token)

    async def scenario() -> list[int]:
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"

        def status(headers: dict[str, str]) -> int:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        try:
            return [await asyncio.to_thread(status, h) for h in (
                {}, {"Authorization": "Bearer " + "x" * 24}, {"Authorization": f"Bearer {token}"},
                {"Authorization": f"bearer {token}"}, {"Authorization": token})]
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == [401, 401, 200, 200, 401]  # the scheme is case-insensitive


def test_garbled_metrics_requests_are_refused_not_answered_500(tmp_path: Path) -> None:
    # A review: a token with bytes that are not UTF-8, and an Origin urlsplit cannot read, answered 500
    import socket

    server = MetricsServer("127.0.0.1", 0, token="m" * 24)

    def status(header: bytes) -> int:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + header
                         + b"\r\n\r\n")
            return int(sock.recv(65536).split(b" ", 2)[1])

    async def scenario() -> list[int]:
        await server.start()
        try:
            return [await asyncio.to_thread(status, h) for h in (
                b"Authorization: Bearer \xff\xfe" + b"m" * 22, b"Origin: http://[oops")]
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == [401, 403]


def test_another_host_scraping_many_times_a_second_gets_one_exposition_a_second() -> None:
    # Security audit: a LAN client at 129 scrapes/s took answer p99 from 13.6 to 248 ms.
    import urllib.request

    from edge_agent.telemetry import metrics
    from tests.web.harness import non_loopback_ipv4

    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    server = MetricsServer("0.0.0.0", 0)

    def value(host: str) -> float:
        with urllib.request.urlopen(f"http://{host}:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("edge_kt_students_forgotten_total ")))

    async def scenario() -> tuple[float, float, float, float]:
        await server.start()
        try:
            first = await asyncio.to_thread(value, address)
            metrics.KT_STUDENTS_FORGOTTEN.inc()
            cached = await asyncio.to_thread(value, address)
            local = await asyncio.to_thread(value, "127.0.0.1")  # the board itself: always fresh
            await asyncio.sleep(1.1)
            return first, cached, local, await asyncio.to_thread(value, address)
        finally:
            await server.stop()

    first, cached, local, later = asyncio.run(scenario())
    assert cached == first and local == later == first + 1


def test_scrapes_from_another_host_arriving_together_share_one_exposition() -> None:
    # A review: the cache was checked before the body was made and filled after, so 32 scrapes at once each
    # second made 160 bodies in 5 s (event-loop lag up to 90 ms) where one at a time made 5.
    from aiohttp import TCPConnector
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    class CountingCollector(Collector):
        """A real collector, as slow as the daemon's ~400 samples, counting how often it is read."""

        def __init__(self) -> None:
            self.reads = 0

        def collect(self) -> list[CounterMetricFamily]:
            self.reads += 1
            time.sleep(0.05)
            return [CounterMetricFamily("edge_test_reads", "times this collector was read", value=self.reads)]

    registry = CollectorRegistry()
    collector = CountingCollector()
    registry.register(collector)
    server = MetricsServer("127.0.0.1", 0, registry)

    async def scenario() -> list[bytes]:
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            async with ClientSession(connector=TCPConnector(limit=0)) as session:
                async def get() -> bytes:
                    # Prometheus's Host for a fleet target: not the board itself, so the cached path
                    async with session.get(url, headers={"Host": "10.20.0.11:9108"}) as response:
                        assert response.status == 200
                        return await response.read()

                return await asyncio.gather(*[get() for _ in range(16)])
        finally:
            await server.stop()

    bodies = asyncio.run(scenario())
    assert collector.reads == 1
    assert len(set(bodies)) == 1 and b"edge_test_reads_total 1.0" in bodies[0]


def test_a_page_of_another_site_gets_no_metrics_and_a_rebinding_name_no_fresh_ones() -> None:
    # A review: a page open in the board's own browser fetched /metrics over loopback 142 times a second,
    # where each body is made afresh (~6 ms of Python): answer p99 went from 6 to 229 ms. A page on a DNS
    # name rebinding to 127.0.0.1 reached it as the board too.
    import urllib.error
    import urllib.request

    from edge_agent.telemetry import metrics

    server = MetricsServer("127.0.0.1", 0)

    def get(headers: dict[str, str]) -> tuple[int, float | None, dict[str, str]]:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
                return int(response.status), sample_from_text(text, "edge_kt_students_forgotten_total"), \
                    dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, None, dict(exc.headers)

    async def scenario() -> list[tuple[int, float | None, dict[str, str]]]:
        await server.start()
        try:
            seen = [await asyncio.to_thread(get, {"Host": "evil.test:9108"})]
            metrics.KT_STUDENTS_FORGOTTEN.inc()
            for headers in ({"Host": "evil.test:9108"}, {},
                            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
                            {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
                            {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"},
                            # iframes of such a page loaded it afresh (round 2): no link opens /metrics
                            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
                             "Sec-Fetch-Dest": "iframe"}):
                seen.append(await asyncio.to_thread(get, headers))
            return seen
        finally:
            await server.stop()

    def refused() -> float:
        value = metrics.REGISTRY.get_sample_value("edge_web_cross_site_refused_total", {"server": "metrics"})
        return value or 0.0

    before = refused()
    rebound, rebound_again, board, cross, same_site, typed, framed = asyncio.run(scenario())
    assert rebound[0] == rebound_again[0] == 200 and rebound_again[1] == rebound[1]  # the cached body
    assert board[1] == rebound[1] + 1  # the board itself, by its own name: fresh
    assert cross[0] == same_site[0] == framed[0] == 403  # the board's view is another port: same-site
    assert typed[0] == 200  # /metrics typed into the board's browser
    assert refused() == before + 3
    assert board[2]["Server"] == "edge-agent" and board[2]["X-Content-Type-Options"] == "nosniff"


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt install prometheus)")
def test_prometheus_scrapes_a_board_over_https_by_its_fleet_name_and_token(tmp_path: Path) -> None:
    # A real Prometheus, as the fleet's would run: the board's own certificate from the fleet CA, the
    # target by address, and the fleet-wide server_name every board certificate carries.
    import subprocess
    import threading
    import urllib.request

    from edge_agent.assembly import build
    from edge_agent.config import Config
    from edge_agent.provisioning.ca import FLEET_SERVER_NAME, FleetCA, key_to_pem, make_csr, new_ec_key
    from edge_agent.provisioning.files import write_private, write_public
    from tests.system.harness import free_port, local_config

    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    key = new_ec_key()
    write_public(tmp_path / "device.pem", ca.sign_csr(make_csr(key, "board-7", "district-a", "school-1")))
    write_private(tmp_path / "device.key", key_to_pem(key))
    token = "m" * 24
    write_private(tmp_path / "metrics.token", token.encode())
    write_private(tmp_path / "wrong.token", b"x" * 24)
    data = local_config(tmp_path, faces=None)
    files = {"tls_cert_file": "device.pem", "tls_key_file": "device.key", "token_file": "metrics.token"}
    data["metrics"].update({key: str(tmp_path / name) for key, name in files.items()})
    server = build(Config.model_validate(data)).metrics_server  # as the daemon wires it from its config
    assert server is not None
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    assert server.scheme == "https" and "(https)" in server.health().detail

    def job(name: str, token_file: str, scheme: str = "https") -> str:
        return (f"  - job_name: {name}\n    scheme: {scheme}\n    authorization:\n"
                f"      credentials_file: {tmp_path / token_file}\n    tls_config:\n"
                f"      ca_file: {ca.dir / 'ca.pem'}\n      server_name: {FLEET_SERVER_NAME}\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n")

    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n"
        + job("board", "metrics.token") + job("wrong-token", "wrong.token")
        + job("plain", "metrics.token", "http")
    )
    api = f"127.0.0.1:{free_port()}"
    prometheus = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address={api}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        targets: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{api}/api/v1/targets", timeout=5) as response:
                    active = json.loads(response.read())["data"]["activeTargets"]
                targets = {t["labels"]["job"]: t for t in active}
            except OSError:
                pass  # not listening yet
            if len(targets) == 3 and all(t["health"] != "unknown" for t in targets.values()):
                break
            time.sleep(0.5)
        assert targets["board"]["health"] == "up", targets["board"]["lastError"]
        assert targets["wrong-token"]["health"] == "down" and "401" in targets["wrong-token"]["lastError"]
        assert targets["plain"]["health"] == "down"  # plain HTTP to the TLS port
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
