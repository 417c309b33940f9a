"""The heartbeat's start time and uptime on a board whose clock steps after the daemon started (no RTC
battery: it boots on the time saved at its last shutdown, and NTP steps it forward days later)."""

from __future__ import annotations

import json
import time
from typing import Any

from edge_agent.config import DeviceSettings, MqttSettings
from edge_agent.store.outbox import Outbox
from edge_agent.sync.publisher import Publisher


class _Heartbeats:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, topic: str, payload: bytes, **_: Any) -> int:
        self.sent.append(json.loads(payload))
        return 1


def test_a_clock_step_after_the_start_moves_started_at_with_it_and_uptime_stays_true(outbox: Outbox) -> None:
    publisher = Publisher(outbox, DeviceSettings(), MqttSettings())
    conn: Any = _Heartbeats()
    before = time.time()
    publisher._send_heartbeat(conn, time.time())
    publisher._send_heartbeat(conn, time.time() + 0.5)  # half a second of jitter: the same start
    stepped = time.time() + 62 * 3600  # NTP's first sync: the clock jumps over the weekend
    publisher._send_heartbeat(conn, stepped)
    first, jittered, after_step = conn.sent
    assert before - 1 <= first["started_at"] <= time.time()
    assert jittered["started_at"] == first["started_at"]
    # up for a second or so, not 62 h (the cloud computes at - started_at)
    assert 0 <= after_step["at"] - after_step["started_at"] < 5, after_step
    assert 0 <= after_step["uptime_s"] < 5 and after_step["uptime_s"] >= first["uptime_s"]
