"""What docs/sync-protocol.md ("Consuming") tells a consumer, on a real Mosquitto: the broker acknowledges
a message that no session waits for, the board then deletes it, and a consumer with paho's defaults
(clean start, session expiry 0) never sees what was sent while it was away; the board counts no drop.
The reference receiver's persistent session (QoS 1, clean start false) gets all of it."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import DeviceSettings
from edge_agent.store.outbox import Outbox
from edge_agent.sync.publisher import Publisher
from edge_agent.sync.receiver import Receiver
from tests.brokers import Broker
from tests.sync.conftest import plain_settings

pytestmark = pytest.mark.broker
DEVICE = "board-0001"


def default_consumer(broker: Broker) -> tuple[mqtt.Client, queue.Queue[str]]:
    """A consumer written from paho's examples: MQTT 5 with its defaults (clean start, session expiry 0)."""
    got: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="consumer", protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: got.put(m.topic)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("edge/#", qos=1)
    client.connect("127.0.0.1", broker.port, keepalive=10)
    client.loop_start()
    return client, got


def test_a_consumer_without_a_persistent_session_misses_what_was_sent_while_away_and_no_drop_counts_it(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    settings = plain_settings(broker)
    Receiver(tmp_path / "recv.db", settings).start().stop()  # the reference receiver's session, then away
    consumer, _ = default_consumer(broker)
    time.sleep(0.5)  # subscribed
    consumer.disconnect()
    consumer.loop_stop()
    publisher = Publisher(outbox, DeviceSettings(), settings)
    publisher.start()
    try:
        for i in range(20):
            last = outbox.enqueue("attention", {"i": i})
        last.result(5)  # all 20 committed (the writer is FIFO), so a backlog of 0 below means all sent
        deadline = time.monotonic() + 10
        while outbox.backlog and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox.backlog == 0  # acknowledged by the broker, deleted on the board
        assert outbox.drop_counts() == {}  # the heartbeat's drops: nothing lost, as far as the board knows
        consumer, got = default_consumer(broker)  # back, clean start: nothing waited for it
        try:
            time.sleep(1.0)
            assert [t for t in list(got.queue) if t.endswith("/attention")] == []
        finally:
            consumer.disconnect()
            consumer.loop_stop()
        receiver = Receiver(tmp_path / "recv.db", settings).start()
        try:
            assert receiver.wait_for_count(DEVICE, 20, 10)
            assert receiver.report(DEVICE)["gaps"] == []
        finally:
            receiver.stop()
    finally:
        publisher.stop()
