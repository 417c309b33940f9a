"""The store's health detail tells the time in the board's zone, as the rest of the teacher view does."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.config import parse_config
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.store.component import StoreComponent


def test_writes_failing_since_is_told_in_device_timezone_with_its_name(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fleet's boards: the system on UTC, the school's zone in device.timezone (the detail said the
    # failure began 8 h before it did, in Beijing, with no zone to tell)
    monkeypatch.setenv("TZ", "UTC")
    config = parse_config(
        f'[device]\ntimezone = "Asia/Shanghai"\n[paths]\nstate_dir = "{state_dir}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n[camera]\nenabled = false\n'
    )
    store = StoreComponent(config, heartbeats=HeartbeatRegistry())
    store.db._max_page_count = 64  # a full disk at 256 KiB

    async def fill() -> tuple[str, str]:
        await store.start()
        try:
            for i in range(2000):  # what the disk refuses is kept in memory: its futures wait on
                store.outbox.enqueue("attention", {"i": i, "pad": "x" * 500})
                await asyncio.sleep(0.001)
                if store.db.write_failure() is not None:
                    break
            failing = store.db.write_failure()
            assert failing is not None
            since = dt.datetime.fromtimestamp(failing[0], ZoneInfo("Asia/Shanghai"))
            health = store.health()
            assert not health.ok
            return f"{since:%Y-%m-%d %H:%M} CST", health.detail
        finally:
            await store.stop()

    expected, detail = asyncio.run(fill())
    assert detail.startswith(f"writes fail since {expected}: "), detail
