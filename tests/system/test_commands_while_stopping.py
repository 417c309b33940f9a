"""Commands that meet a stopping board get an outcome that is true: what the stop cuts short is said, what
comes during the stop is refused, and a config_reload delivered twice is carried out once.

A review (a real Mosquitto, a real daemon): sync stops last, so it still took commands after the model
updates had stopped and the daemon had set its stop; each was "accepted" and never ran, downloads queued
or running at the stop vanished without a word, and the outcomes are kept in memory, so after the restart
the cloud had no trace of any of them.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_agent.provisioning.model_package import generate_signing_key
from tests.brokers import Broker
from tests.system.harness import DaemonProcess, NotifySocket, local_config, write_config

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

STOPPING = "the board is stopping; send it again once it is back"
NOT_DOWNLOADED = "not downloaded, the board stopped; send it again"


class Cloud:
    """The fleet controller: publishes commands, keeps every heartbeat the board sends."""

    def __init__(self, port: int, device: dict[str, str]) -> None:
        prefix = f"edge/{device['tenant']}/{device['site']}/{device['device_id']}"
        self.cmd_topic = f"{prefix}/cmd"
        self.heartbeats: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fleet-controller",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._heard
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{prefix}/heartbeat", qos=1)
        self.client.loop_start()

    def _heard(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self.heartbeats.append(json.loads(message.payload))

    def send(self, command: dict[str, Any]) -> None:
        self.client.publish(self.cmd_topic, json.dumps(command), qos=1).wait_for_publish(5)

    def outcomes(self, request_id: str) -> list[dict[str, Any]]:
        """Every outcome for ``request_id`` the latest heartbeat that names it carries (oldest first)."""
        with self._lock:
            beats = list(self.heartbeats)
        for beat in reversed(beats):
            commands = beat.get("health", {}).get("commands", [])
            found = [outcome for outcome in commands if outcome.get("request_id") == request_id]
            if found:
                return found
        return []

    def last_heartbeat(self) -> dict[str, Any]:
        with self._lock:
            return self.heartbeats[-1]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def silent_https() -> Iterator[int]:
    """A port that takes TCP connections and never answers: a download from it hangs in the TLS handshake,
    as from an update server that stalled."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture()
def board(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], model_mirror: Path,
) -> Iterator[tuple[DaemonProcess, Cloud]]:
    broker = Broker(tmp_path / "broker").start()
    cloud: Cloud | None = None
    try:
        cfg = local_config(tmp_path / "board", faces=None, mqtt_port=broker.port, model_mirror=model_mirror)
        cfg["mqtt"]["heartbeat_s"] = 30.0  # only command replies and the stop's heartbeat come in a test
        generate_signing_key(tmp_path / "sign.key", tmp_path / "sign.pub")
        cfg["updates"] = {"public_key_file": str(tmp_path / "sign.pub"), "poll_interval_s": 0.2,
                          "download_timeout_s": 60.0}
        cloud = Cloud(broker.port, cfg["device"])  # before the board: its first heartbeat comes at connect
        daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "daemon.log",
                         watchdog_usec=60_000_000).start()
        daemon.wait_running(90)
        wait_for(lambda: cloud is not None and cloud.heartbeats, 30, "the board's first heartbeat")
        yield daemon, cloud
    finally:
        if cloud is not None:
            cloud.close()
        broker.stop()


def update(request_id: str, port: int) -> dict[str, Any]:
    return {"type": "model_update", "request_id": request_id, "model": "kt", "version": f"9.{request_id[-1]}",
            "url": f"https://127.0.0.1:{port}/kt.tar", "sha256": "a" * 64, "signature": "A" * 20}


def test_a_stop_says_which_downloads_it_cut_short_and_refuses_the_commands_that_come_during_it(
    board: tuple[DaemonProcess, Cloud], silent_https: int,
) -> None:
    daemon, cloud = board
    for request_id in ("q-1", "q-2", "q-3"):  # one downloading from the stalled server, two queued behind
        cloud.send(update(request_id, silent_https))
    for request_id in ("q-1", "q-2", "q-3"):
        taken = wait_for(lambda r=request_id: cloud.outcomes(r), 10, f"the outcome of {request_id}")
        assert taken[-1]["accepted"] is True, taken

    daemon.signal(signal.SIGTERM)
    # each in the outcome the heartbeat carries (and the log), not lost without a word
    for request_id in ("q-1", "q-2", "q-3"):
        wait_for(lambda r=request_id: f"model update {r}: {NOT_DOWNLOADED}" in daemon.output(), 10,
                 f"the stop to say {request_id} was not downloaded:\n{daemon.output()[-3000:]}")
    # sync stops last: these still reach the board, which no longer runs them
    cloud.send(update("s-4", silent_https))
    cloud.send({"type": "config_reload", "request_id": "r-5"})
    assert daemon.wait(30) == 0, daemon.output()[-3000:]  # a stop, not the reload's restart

    for request_id in ("s-4", "r-5"):
        [outcome] = wait_for(lambda r=request_id: cloud.outcomes(r), 10, f"the outcome of {request_id}")
        assert outcome["accepted"] is False and outcome["detail"] == STOPPING, outcome
    assert cloud.last_heartbeat()["health"]["model_update"] == {
        "ok": False, "result": f"request q-3: {NOT_DOWNLOADED}"}
    assert "model update inbox failed" not in daemon.output()


def test_a_config_reload_delivered_twice_restarts_the_board_once_and_says_the_second_was_a_repeat(
    board: tuple[DaemonProcess, Cloud],
) -> None:
    daemon, cloud = board
    reload = {"type": "config_reload", "request_id": "r-1"}
    cloud.send(reload)
    cloud.send(reload)  # a QoS 1 resend: the same command again
    assert daemon.wait(30) == 75, daemon.output()[-3000:]
    first, second = wait_for(lambda: len(cloud.outcomes("r-1")) == 2 and cloud.outcomes("r-1"), 10,
                             "both outcomes of r-1")
    assert first["accepted"] is True, first
    assert second["accepted"] is False and "repeated delivery" in second["detail"], second
    assert "ignored, the daemon is already stopping" not in daemon.output()
