"""Client ids on the shipped broker config (a real Mosquitto): each certificate gets the client id of its
own CN, whatever it asks for, so one board's certificate cannot take over another client's connection or
wipe its queued session (a review, 2026-12-03: board np-3a-02's certificate, asking for the receiver's
client id with clean start, wiped the receiver's session and np-3a-01's seq 92-95 with it; asking for
np-3a-01's, it knocked that board off about once a second)."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from edge_agent.config import MqttSettings
from edge_agent.sync.protocol import Envelope, Item, encode_message
from edge_agent.sync.receiver import Receiver
from tests.provisioning.fleet_helpers import Broker, Client, Fleet, back_end_certificate

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


def as_board(fleet: Fleet, broker: Broker, device_id: str, client_id: str) -> Client:
    """A client with ``device_id``'s provisioned certificate, asking for ``client_id``."""
    etc = fleet.etc(device_id)
    return Client(broker.port, etc / "certs/ca.pem", etc / "certs/device.pem", etc / "secrets/device.key",
                  client_id)


def receiver_settings(fleet: Fleet, broker: Broker, cn: str = "edge-receiver") -> MqttSettings:
    cert, key = back_end_certificate(fleet, cn)
    return MqttSettings(host="127.0.0.1", port=broker.port, tls=True, ca_file=fleet.ca.cert_path,
                        cert_file=cert, key_file=key, backoff_min_s=0.05, backoff_max_s=0.5)


def test_a_boards_certificate_cannot_take_over_another_boards_connection(
    fleet: Fleet, broker: Broker
) -> None:
    a = as_board(fleet, broker, "board-a", "edge-board-a")  # the client id the board's daemon asks for
    intruders = []
    try:
        assert a.connect() == 0
        # board-b's certificate asking for what board-a asked, and for what the broker gives board-a
        for client_id in ("edge-board-a", "board-a"):
            intruder = as_board(fleet, broker, "board-b", client_id)
            intruders.append(intruder)
            assert intruder.connect() == 0  # accepted, as board-b
            intruder.close()
        with pytest.raises(queue.Empty):  # a session taken over shows here as a disconnect (142)
            print("board-a's connection changed:", a.connected.get(timeout=1.0))
        assert a.publish("edge/district-a/school-1/board-a/heartbeat", b"{}") < 128  # 16: no subscribers
    finally:
        a.close()
        for intruder in intruders:
            intruder.close()


def test_a_boards_certificate_cannot_wipe_the_receivers_queued_messages(
    fleet: Fleet, broker: Broker, tmp_path: Path
) -> None:
    settings = receiver_settings(fleet, broker)
    Receiver(tmp_path / "received.db", settings).start().stop()  # its persistent session, subscribed
    a = as_board(fleet, broker, "board-a", "edge-board-a")
    envelope = Envelope("district-a", "school-1", "board-a", "attention", "s" * 32)
    try:
        assert a.connect() == 0
        for seq in (1, 2, 3):  # queued for the receiver, which is away
            payload = encode_message(envelope, [Item(seq, f"id-{seq}", time.time(), "{}")], time.time())
            assert a.publish("edge/district-a/school-1/board-a/attention", payload) == 0
    finally:
        a.close()
    intruder = as_board(fleet, broker, "board-b", "edge-receiver")  # the receiver's default, clean start
    try:
        assert intruder.connect() == 0
    finally:
        intruder.close()
    receiver = Receiver(tmp_path / "received.db", settings).start()
    try:
        assert receiver.wait_for_count("board-a", 3, timeout=10), broker.log()[-3000:]
        assert receiver.seqs("board-a") == [1, 2, 3]
    finally:
        receiver.stop()
