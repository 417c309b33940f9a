"""Serving ``/metrics``, and reading histograms back (mean, P99) for the tests.

The exposition is served from its own aiohttp site (``MetricsSettings.host:port``) so a Prometheus
scraper never shares a port with the teacher view. Quantiles are read from bucket counts the way
PromQL's ``histogram_quantile`` does (linear interpolation inside the bucket), so a test's figure
matches the Grafana panel. Nothing in the daemon reads them back (the status page shows no latency).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.errors import ConfigError
from edge_agent.lifecycle import Health
from edge_agent.telemetry.metrics import REGISTRY
from edge_agent.web.access import (
    from_another_site,
    is_local_host,
    is_loopback,
    refuse_another_site,
    tokens_match,
)
from edge_agent.web.connections import (
    KEEPALIVE_S,
    ConnectionLimits,
    GuardedTCPSite,
    listen_failure,
    server_tls_context,
)

log = logging.getLogger(__name__)

Bucket = tuple[float, float]  # (upper bound "le", cumulative count)
CACHE_S = 1.0  # Prometheus scrapes every 15-60 s


@dataclass(frozen=True)
class HistogramStats:
    count: float
    total: float
    mean: float | None
    p50: float | None
    p99: float | None


def metrics_routes(registry: CollectorRegistry = REGISTRY) -> web.RouteTableDef:
    """Route table with GET /metrics serving ``registry`` in the Prometheus text format."""
    routes = web.RouteTableDef()

    # The latest build, running or done: requests that arrive while it runs wait for it rather than each
    # making their own (a review: 32 at once each second made 160 bodies in 5 s, loop lag 90 ms).
    cache: dict[str, Any] = {"at": -math.inf, "build": None}

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        # ~6 ms of Python for ~390 samples, off the event loop that answers students but still holding
        # the GIL: a LAN client scraping 129 times a second took answer p99 from 13.6 to 248 ms (security
        # audit). Other hosts get a body at most CACHE_S old; the board itself always a fresh one (as
        # localhost or a loopback address: a page on a name rebinding to 127.0.0.1, or on the board's
        # hostname, is no part of the board; web/access.py: is_local_host).
        now = time.monotonic()
        board = is_loopback(request.remote) and is_local_host(request.headers.get("Host"))
        build: asyncio.Task[bytes] | None = cache["build"]
        failed = build is not None and build.done() and (build.cancelled() or build.exception() is not None)
        if board or build is None or failed or (build.done() and now - cache["at"] >= CACHE_S):
            build = asyncio.create_task(asyncio.to_thread(generate_latest, registry))
            cache["build"], cache["at"] = build, now
        # shielded: a scraper that hangs up cancels its own wait, not the build others wait for
        body = await asyncio.shield(build)
        response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.enable_compression()  # gzip when the scraper accepts it (Prometheus does): ~35 KB -> ~5 KB
        return response

    return routes


def metrics_app(registry: CollectorRegistry = REGISTRY, token: str | None = None) -> web.Application:
    """The /metrics site; with ``token`` every request needs ``Authorization: Bearer <token>``."""
    middlewares = [_no_other_site] + ([] if token is None else [_bearer_only(token)])
    app = web.Application(middlewares=middlewares)
    app.add_routes(metrics_routes(registry))
    app.on_response_prepare.append(_plain_headers)
    return app


@web.middleware
async def _no_other_site(request: web.Request, handler: Any) -> web.StreamResponse:
    """No request a page of another site makes (web/access.py: from_another_site): Prometheus is none."""
    if from_another_site(request.headers, request.method, links=False):
        return refuse_another_site("metrics")
    response: web.StreamResponse = await handler(request)
    return response


async def _plain_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers["Server"] = "edge-agent"  # as the web port: not the Python and aiohttp versions


def _bearer_only(token: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # the web port's comparison: header bytes that are not UTF-8 answered 500 here (a review)
        if scheme.lower() != "bearer" or not tokens_match(given.strip(), token):
            why = "metrics.token_file is set: send Authorization: Bearer <token>"
            return web.Response(status=401, text=why,
                                headers={"WWW-Authenticate": 'Bearer realm="edge-agent metrics"'})
        response: web.StreamResponse = await handler(request)
        return response

    return check


class MetricsServer:
    """The ``/metrics`` site as a daemon component (not essential: a board without it still teaches)."""

    name = "metrics"
    essential = False

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry = REGISTRY,
        *,
        token: str | None = None,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ) -> None:
        """With both ``tls_*`` files, /metrics is served over HTTPS."""
        self.host = host
        self.port = port
        self._registry = registry
        self._token = token
        self._tls_files = (tls_cert_file, tls_key_file)
        self.scheme = "http" if tls_cert_file is None or tls_key_file is None else "https"
        self._runner: web.AppRunner | None = None
        self._error = ""

    async def start(self) -> None:
        runner = web.AppRunner(
            metrics_app(self._registry, self._token), access_log=None, keepalive_timeout=KEEPALIVE_S
        )
        await runner.setup()
        try:
            tls = server_tls_context(*self._tls_files, "metrics.tls_cert_file")
        except ConfigError as exc:
            await runner.cleanup()
            self._error = exc.problems[0][1]
            raise
        site = GuardedTCPSite(runner, self.host, self.port, ConnectionLimits("metrics"), tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            key, self._error = listen_failure("metrics", self.host, self.port, exc)
            raise ConfigError([(key, self._error)]) from exc  # the key and fix, as the web's (round 2)
        self._runner = runner
        if self.port == 0:  # tests ask for any free port; report the one the OS gave
            self.port = runner.addresses[0][1]
        log.info("metrics served on %s://%s:%s", self.scheme, self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def health(self) -> Health:
        if self._runner is None:
            return Health(False, self._error or "metrics site not started")
        return Health(True, f"serving /metrics on port {self.port} ({self.scheme})")


# --- reading histograms -------------------------------------------------------------------------


def bucket_quantile(q: float, buckets: Iterable[Bucket]) -> float | None:
    """The q-quantile from cumulative buckets, as PromQL ``histogram_quantile`` computes it.

    Observations above the largest finite bound yield that bound (Prometheus does the same), so a
    latency beyond the buckets is reported as "at least the top bucket", never as infinity.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def stats_from_buckets(buckets: list[Bucket], total: float) -> HistogramStats:
    count = max((c for _, c in buckets), default=0.0)
    return HistogramStats(
        count=count,
        total=total,
        mean=total / count if count else None,
        p50=bucket_quantile(0.5, buckets),
        p99=bucket_quantile(0.99, buckets),
    )


def _matches(sample_labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(sample_labels.get(key) == value for key, value in wanted.items())


def _collect(
    samples: Iterable[tuple[str, Mapping[str, str], float]], name: str, labels: Mapping[str, str]
) -> HistogramStats:
    """Sum buckets over every series that matches ``labels`` (a subset), like ``sum by (le)``."""
    by_bound: dict[float, float] = {}
    total = 0.0
    for sample_name, sample_labels, value in samples:
        if not _matches(sample_labels, labels):
            continue
        if sample_name == f"{name}_bucket":
            bound = float(sample_labels["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + value
        elif sample_name == f"{name}_sum":
            total += value
    return stats_from_buckets(sorted(by_bound.items()), total)


def histogram_stats(
    name: str, labels: Mapping[str, str] | None = None, registry: CollectorRegistry = REGISTRY
) -> HistogramStats:
    """Mean and quantiles of a histogram in this process, e.g. ``edge_inference_latency_seconds``."""
    samples = (
        (s.name, s.labels, s.value) for family in registry.collect() for s in family.samples
    )
    return _collect(samples, name, labels or {})


def histogram_stats_from_text(
    text: str, name: str, labels: Mapping[str, str] | None = None
) -> HistogramStats:
    """The same, from a scraped exposition (what a test or the fleet sees over HTTP)."""
    samples = (
        (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
    )
    return _collect(samples, name, labels or {})


def sample_from_text(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None when there is none."""
    values = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and _matches(s.labels, labels or {})
    ]
    return sum(values) if values else None


async def scrape(url: str, timeout_s: float = 5.0) -> str:
    """GET a /metrics URL and return its text; raises on a non-200 answer or after ``timeout_s``."""
    async with ClientSession(timeout=ClientTimeout(total=timeout_s)) as session, session.get(url) as response:
        response.raise_for_status()
        return await response.text()

