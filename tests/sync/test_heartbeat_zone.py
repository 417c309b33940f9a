"""The heartbeat's zone on a board whose system zone changes while the daemon runs (no device.timezone)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import DeviceSettings, MqttSettings
from edge_agent.store.outbox import Outbox
from edge_agent.sync.publisher import Publisher


class _Heartbeats:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: bytes, **_: Any) -> int:
        self.sent.append(json.loads(payload))
        return 1


def test_the_heartbeat_follows_a_system_zone_changed_after_the_start(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    link = tmp_path / "localtime"  # /etc/localtime, as `timedatectl set-timezone` re-points it
    link.symlink_to("/usr/share/zoneinfo/Etc/UTC")
    monkeypatch.setenv("TZ", str(link))
    publisher = Publisher(outbox, DeviceSettings(), MqttSettings())
    conn: Any = _Heartbeats()
    publisher._send_heartbeat(conn, time.time())
    link.unlink()
    link.symlink_to("/usr/share/zoneinfo/Asia/Shanghai")
    publisher._send_heartbeat(conn, time.time())
    before, after = ((beat["timezone"], beat["utc_offset_s"]) for beat in conn.sent)
    assert before == ("Etc/UTC", 0)
    assert after == ("Asia/Shanghai", 28800)  # the cloud's days and lessons in the new zone, not 8 h off
