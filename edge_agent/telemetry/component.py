"""The telemetry worker: picks a source (sysfs, then jtop, then NVML, else none) and polls it in a thread.

Choosing the source happens inside the thread, so a slow jtop socket or NVML init never delays the
daemon's start-up; until the first reading the metric says ``source="none"``. The same thread reads the
certificate files' expiry (edge_certificate_expiry_seconds) at start and every ``certificate_interval_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import Gauge

from edge_agent.lifecycle import Health, Heartbeat, HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.telemetry.certificates import seconds_left
from edge_agent.telemetry.jetson import NoSource, SysfsSource, Telemetry, TelemetrySource, is_jetson

log = logging.getLogger(__name__)

SOURCES = ("sysfs", "jtop", "nvml", "none")


def choose_source(root: Path = Path("/"), jtop_socket: Path | None = None) -> TelemetrySource:
    """The first source that gives data here; a :class:`NoSource` carrying every reason otherwise."""
    reasons: list[str] = []
    sysfs = SysfsSource(root)
    if is_jetson(root) and sysfs.read().has_data():
        return sysfs
    reasons.append("no Jetson sysfs")
    from edge_agent.telemetry import jtop_source

    ok, why = jtop_source.jtop_available(jtop_socket or root / "run/jtop.sock")
    if ok:
        try:
            return jtop_source.JtopSource()
        except Exception as exc:  # jtop's exceptions are untyped; any failure means "not usable"
            why = f"jtop service refused: {exc}"
    reasons.append(why)
    from edge_agent.telemetry import nvml_source

    ok, why = nvml_source.nvml_available()
    if ok:
        return nvml_source.NvmlSource()
    reasons.append(why)
    return NoSource("; ".join(reasons))


def record(reading: Telemetry, live: LiveBoard | None) -> None:
    """Set the Prometheus gauges from one reading and publish the LiveBoard "device" section."""
    for name in SOURCES:
        metrics.TELEMETRY_SOURCE.labels(source=name).set(1.0 if name == reading.source else 0.0)
    # A value this reading lacks is NaN or gone, never the last one read: a frozen GPU load or a thermal
    # zone stuck at its last temperature would look healthy on the dashboard.
    metrics.GPU_UTILISATION.set(math.nan if reading.gpu_load is None else reading.gpu_load)
    metrics.GPU_MEMORY_USED.set(math.nan if reading.gpu_memory_bytes is None else reading.gpu_memory_bytes)
    _set_labelled(metrics.SOC_TEMPERATURE, reading.temperatures)
    _set_labelled(metrics.POWER, reading.power_w)
    if live is not None:
        live.publish("device", reading.to_live())


def record_certificates(
    files: Sequence[tuple[str, Path]], now: dt.datetime, unreadable: set[str] | None = None
) -> set[str]:
    """Set edge_certificate_expiry_seconds for each (config key, file); a file that cannot be read loses its
    series (a stale value would look renewed or not). Logs a file once as it becomes unreadable (keys in
    ``unreadable`` were already logged); returns the keys unreadable now."""
    left, problems = seconds_left(files, now)
    _set_labelled(metrics.CERTIFICATE_EXPIRY, left)
    for key in sorted(problems.keys() - (unreadable or set())):
        log.warning("cannot read %s to watch its expiry: %s", key, problems[key])
    return set(problems)


def _set_labelled(gauge: Gauge, values: dict[str, float]) -> None:
    """One series per key of ``values``; series of keys no longer read are removed."""
    for (key,) in [labels for labels in _label_sets(gauge) if labels[0] not in values]:
        gauge.remove(key)
    for key, value in values.items():
        gauge.labels(key).set(value)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(s.labels.values()) for f in gauge.collect() for s in f.samples]


class TelemetryComponent:
    name = "telemetry"
    essential = False

    def __init__(
        self,
        interval_s: float,
        live: LiveBoard | None,
        heartbeats: HeartbeatRegistry,
        *,
        root: Path = Path("/"),
        source_factory: Callable[[], TelemetrySource] | None = None,
        certificate_files: Sequence[tuple[str, Path]] = (),
        certificate_interval_s: float = 3600.0,
    ) -> None:
        self.interval_s = interval_s
        # Read again, not only at start: re-provisioning installs a renewed certificate under the same name.
        self._certificate_files = tuple(certificate_files)
        self._certificate_interval_s = certificate_interval_s
        self._certificates_due = 0.0  # time.monotonic() of the next reading
        self._unreadable: set[str] = set()
        self._live = live
        self._heartbeats = heartbeats
        self._factory = source_factory or (lambda: choose_source(root))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Telemetry | None = None

    async def start(self) -> None:
        self._stop.clear()
        self._certificates_due = 0.0  # read at every start
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        self._heartbeats.unregister(self.name)
        self._thread = None

    def health(self) -> Health:
        if self._thread is not None and not self._thread.is_alive():
            return Health(False, "telemetry thread ended unexpectedly; see the log")
        if self._last is None:
            return Health(True, "telemetry starting")
        return Health(True, f"source {self._last.source}: {self._last.detail()}")

    @property
    def last(self) -> Telemetry | None:
        return self._last

    def _run(self) -> None:
        record(Telemetry("none", problems=["choosing a telemetry source"]), None)
        self._refresh_certificates()  # before the source: a slow jtop connect must not delay it
        try:
            source = self._factory()
        except Exception as exc:  # a vendor library failing must not end the daemon
            log.warning("no telemetry source: %s", exc)
            source = NoSource(f"telemetry source failed: {exc}")
        log.info("telemetry source: %s", source.name)
        if self._stop.is_set():
            source.close()
            return
        # Registered only once the source is chosen: a slow jtop connect must not starve the watchdog.
        beat = self._heartbeats.register(self.name, max_gap_s=max(30.0, 3 * self.interval_s))
        try:
            self._loop(source, beat)
        finally:
            self._heartbeats.unregister(self.name)
            source.close()

    def _loop(self, source: TelemetrySource, beat: Heartbeat) -> None:
        while not self._stop.is_set():
            beat.beat()
            self._refresh_certificates()
            self._poll_once(source)
            self._stop.wait(self.interval_s)

    def _poll_once(self, source: TelemetrySource) -> None:
        try:
            reading = source.read()
        except Exception as exc:  # keep polling: a glitch on one read must not stop telemetry
            reading = Telemetry(source.name, problems=[f"read failed: {exc}"])
        self._last = reading
        record(reading, self._live)

    def _refresh_certificates(self) -> None:
        if time.monotonic() < self._certificates_due:
            return
        self._certificates_due = time.monotonic() + self._certificate_interval_s
        now = dt.datetime.now(dt.timezone.utc)
        try:
            self._unreadable = record_certificates(self._certificate_files, now, self._unreadable)
        except Exception as exc:  # cryptography's parser is third-party: a surprise must not end telemetry
            log.warning("cannot read the certificates' expiry: %s", exc)
