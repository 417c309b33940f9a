"""Outbox benchmark: insert throughput, then drain N queued aggregates to a local Mosquitto.

    .venv/bin/python benchmarks/bench_outbox.py [--count 50000] [--batch-max 100] [--inflight-max 20]

Reports enqueue throughput (pipelined, and one-at-a-time commit latency), drain time and rate (PUBACKed
aggregates and MQTT messages per second), and this process's RSS while draining. The reference receiver
runs as a separate process so it does not share this process's CPU time; its database is checked at the
end (unique, gaps, duplicates).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.config import DeviceSettings, MqttSettings, StoreSettings  # noqa: E402
from edge_agent.store.db import Database  # noqa: E402
from edge_agent.store.outbox import Outbox  # noqa: E402
from edge_agent.sync.protocol import missing_ranges  # noqa: E402
from edge_agent.sync.publisher import Publisher  # noqa: E402
from edge_agent.telemetry import metrics  # noqa: E402
from tests.brokers import Broker  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def aggregate(i: int) -> dict[str, object]:
    """A realistic attention window aggregate (about 250 bytes of JSON)."""
    return {
        "start": 1_800_000_000 + 60 * i,
        "end": 1_800_000_060 + 60 * i,
        "class_id": "class-1",
        "attentive_mean": 0.734,
        "attentive_p10": 0.41,
        "attentive_median": 0.78,
        "faces_mean": 24.6,
        "faces_max": 28,
        "frames": 300,
        "low": False,
        "suppressed": False,
        "pose_method": "fsanet",
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--batch-max", type=int, default=100)
    parser.add_argument("--inflight-max", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    broker = Broker(work / "broker").start()
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        tls=False,
        batch_max=args.batch_max,
        inflight_max=args.inflight_max,
        heartbeat_s=60.0,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.sync.receiver",
            "--host",
            "127.0.0.1",
            "--port",
            str(broker.port),
            "--db",
            str(work / "recv.db"),
            "--report-every",
            "3600",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let the receiver subscribe
    try:
        return run(args, work, broker, receiver, settings)
    finally:
        if receiver.poll() is None:
            receiver.send_signal(signal.SIGINT)
            receiver.wait(10)
        broker.stop()


def run(
    args: argparse.Namespace,
    work: Path,
    broker: Broker,
    receiver: subprocess.Popen[bytes],
    settings: MqttSettings,
) -> int:
    db = Database(work / "edge-agent.db", StoreSettings())
    db.open()
    outbox = Outbox(db, DeviceSettings(), StoreSettings(), settings)
    outbox.open()
    results: dict[str, Any] = {
        "count": args.count,
        "batch_max": args.batch_max,
        "inflight_max": args.inflight_max,
    }

    t0 = time.perf_counter()
    for _ in range(200):
        outbox.enqueue("attention", aggregate(0)).result(10)
    results["enqueue_one_at_a_time_ms"] = round((time.perf_counter() - t0) / 200 * 1000, 3)
    remaining = args.count - 200
    t0 = time.perf_counter()
    last = None
    for i in range(remaining):
        last = outbox.enqueue("attention", aggregate(i))
        if i % 2000 == 1999:  # stay inside the writer's bounded queue (10,000 tasks)
            last.result(60)
    assert last is not None
    last.result(60)
    elapsed = time.perf_counter() - t0
    results["enqueue_pipelined_per_s"] = round(remaining / elapsed)
    results["db_bytes_before_drain"] = sum(p.stat().st_size for p in work.glob("edge-agent.db*"))

    peak = [rss_mib()]
    results["rss_before_drain_mib"] = round(peak[0], 1)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    published_before = metrics.sample("edge_mqtt_published_total", {"stream": "attention"})
    publisher = Publisher(outbox, DeviceSettings(), settings)
    t0 = time.perf_counter()
    publisher.start()
    while outbox.backlog:
        time.sleep(0.01)
    drain = time.perf_counter() - t0
    stop.set()
    publisher.stop()
    messages = metrics.sample("edge_mqtt_published_total", {"stream": "attention"}) - published_before
    results.update(
        {
            "drain_s": round(drain, 2),
            "drain_aggregates_per_s": round(args.count / drain),
            "drain_mqtt_messages": int(messages),
            "drain_mqtt_messages_per_s": round(messages / drain, 1),
            "rss_peak_while_draining_mib": round(peak[0], 1),
        }
    )
    db.close()

    results["receiver"] = check_receiver(work / "recv.db", args.count)
    print(json.dumps(results, indent=2))
    return 0 if results["receiver"]["unique"] == args.count else 1


def check_receiver(path: Path, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    conn = sqlite3.connect(path)
    while time.monotonic() < deadline:
        n = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        if n >= count:
            break
        time.sleep(0.2)
    seqs = [r[0] for r in conn.execute("SELECT seq FROM items ORDER BY seq")]
    dups = conn.execute("SELECT coalesce(sum(duplicates), 0) FROM devices").fetchone()[0]
    conn.close()
    return {"unique": len(seqs), "gaps": missing_ranges(seqs)[:5], "duplicates": dups}


if __name__ == "__main__":
    raise SystemExit(main())
