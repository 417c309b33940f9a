"""The store component's health, which the teacher view's IT list, /readyz and the doctor show, on real
SQLite files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent import assembly
from edge_agent.config import Config
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.store.component import StoreComponent
from edge_agent.telemetry import metrics


def _config(state_dir: Path, **store: object) -> Config:
    return Config.model_validate({"paths": {"state_dir": str(state_dir)}, "store": store})


def test_a_store_started_on_a_damaged_database_runs_on_a_new_one_and_says_so_until_restart(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    config.database_path.parent.mkdir(parents=True, exist_ok=True)
    config.database_path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)  # a damaged file
    store = StoreComponent(config, heartbeats=HeartbeatRegistry())
    assert store.health().detail == "database is not open"

    async def scenario() -> None:
        await store.start()
        try:
            health = store.health()
            assert not health.ok and "moved" in health.detail and ".corrupt-" in health.detail, health
            assert store.outbox.enqueue("attention", {"i": 1}).result(5) == 1  # and it keeps working
        finally:
            await store.stop()

    asyncio.run(scenario())
    assert list(tmp_path.glob("edge-agent.db.corrupt-*"))
    again = StoreComponent(config, heartbeats=HeartbeatRegistry())

    async def restart() -> None:
        await again.start()
        try:
            health = again.health()
            assert health.ok and health.detail == "1 message waiting", health
        finally:
            await again.stop()

    asyncio.run(restart())


def test_rows_dropped_by_the_outbox_limits_show_in_the_store_health_by_reason(tmp_path: Path) -> None:
    store = StoreComponent(_config(tmp_path, max_rows=100), heartbeats=HeartbeatRegistry())

    async def scenario() -> None:
        await store.start()
        try:
            for i in range(105):
                stored = store.outbox.enqueue("attention", {"i": i})
            stored.result(5)
            health = store.health()
            assert health.ok and health.detail == "100 messages waiting; 5 dropped by limits (max_rows=5)"
        finally:
            await store.stop()

    asyncio.run(scenario())


class _Daemon:
    state = "running"

    def readiness(self, components: object = None) -> tuple[bool, list[str]]:
        return True, []


def test_the_clock_flag_is_in_the_metrics_and_the_health_summary(tmp_path: Path) -> None:
    # A board booted on the time saved at its last shutdown (no RTC battery) stamps days-old times until NTP
    # syncs; nothing on the board said so (a review): a gauge for an alert, and the summary the heartbeat
    # and the status API carry.
    synced = [False]
    store = StoreComponent(_config(tmp_path), heartbeats=HeartbeatRegistry(), clock_synced=lambda: synced[0])
    assert metrics.sample("edge_clock_synchronised") == 0.0
    summary = assembly._health_summary(_Daemon(), clock_synced=store.clock_synced)  # type: ignore[arg-type]
    assert summary["clock_synced"] is False
    synced[0] = True
    assert metrics.sample("edge_clock_synchronised") == 1.0
    assert assembly._health_summary(_Daemon(), clock_synced=store.clock_synced)["clock_synced"] is True  # type: ignore[arg-type]
