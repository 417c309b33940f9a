"""A broker's message_size_limit, which no CONNACK announces: found by the sessions it cuts (MQTT 5), or
set as mqtt.max_message_bytes (MQTT 3.1.1, where the broker acknowledges and discards)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.config import DeviceSettings
from edge_agent.store.outbox import Outbox
from edge_agent.sync.publisher import Publisher
from edge_agent.sync.receiver import Receiver
from tests.brokers import Broker, mosquitto_available
from tests.sync.conftest import plain_settings

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]
DEVICE = "board-0001"


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def assert_exactly_once(receiver: Receiver, total: int) -> None:
    assert receiver.wait_for_count(DEVICE, total, 30), receiver.report(DEVICE)
    report = receiver.report(DEVICE)
    assert report["unique"] == total and report["max_seq"] == total and report["gaps"] == []


def _backlog(outbox: Outbox, rows: int) -> None:
    # 60 rows of 6 KB: a 256 KiB batch while draining, twice the broker's 128 KiB
    for i in range(rows):
        stored = outbox.enqueue("kt_class", {"kind": "kt_class_window", "i": i, "skills": "x" * 6000})
    stored.result(5)


def test_a_message_size_limit_that_cuts_mqtt_5_sessions_shrinks_the_batches_and_all_rows_arrive(
    tmp_path: Path, outbox: Outbox
) -> None:
    # Mosquitto 2.0.11 answers an oversized PUBLISH with PUBACK 0x95, which paho takes for a protocol
    # error: the session ended at once, every session rebuilt the same batch, and none of 60 arrived.
    broker = Broker(tmp_path / "broker", extra=("message_size_limit 131072",)).start()
    settings = plain_settings(broker)
    receiver = Receiver(tmp_path / "recv.db", settings).start()
    _backlog(outbox, 60)
    publisher = Publisher(outbox, DeviceSettings(), settings)
    publisher.start()
    try:
        assert_exactly_once(receiver, 60)
        assert outbox.drop_counts() == {}
    finally:
        publisher.stop()
        receiver.stop()
        broker.stop()


def test_a_row_larger_than_the_brokers_message_size_limit_is_dropped_and_counted_and_the_rest_go(
    tmp_path: Path, outbox: Outbox
) -> None:
    broker = Broker(tmp_path / "broker", extra=("message_size_limit 65536",)).start()
    settings = plain_settings(broker)
    receiver = Receiver(tmp_path / "recv.db", settings).start()
    outbox.enqueue("kt_class", {"i": 1})
    outbox.enqueue("kt_class", {"i": 2, "big": "x" * 100_000})  # under the outbox's own 128 KiB limit
    outbox.enqueue("kt_class", {"i": 3}).result(5)
    publisher = Publisher(outbox, DeviceSettings(), settings)
    publisher.start()
    try:
        assert receiver.wait_for_count(DEVICE, 2, 30), receiver.report(DEVICE)
        assert receiver.report(DEVICE)["gaps"] == [(2, 2)]  # a real loss, and the heartbeat's drops say why
        assert wait_until(lambda: outbox.drop_counts() == {"too_large_for_broker": 1}, 5)
        assert wait_until(lambda: outbox.backlog == 0, 5)
    finally:
        publisher.stop()
        receiver.stop()
        broker.stop()


def test_max_message_bytes_set_to_the_brokers_limit_loses_nothing_over_mqtt_3_1_1(
    tmp_path: Path, outbox: Outbox
) -> None:
    # MQTT 3.1.1 cannot refuse a message: Mosquitto acknowledged the 256 KiB batch and discarded it, and
    # 42 of 60 rows were deleted here and lost with no drop counted.
    broker = Broker(tmp_path / "broker", extra=("message_size_limit 131072",)).start()
    settings = plain_settings(broker, protocol="3.1.1", max_message_bytes=131072)
    receiver = Receiver(tmp_path / "recv.db", plain_settings(broker)).start()
    _backlog(outbox, 60)
    publisher = Publisher(outbox, DeviceSettings(), settings)
    publisher.start()
    try:
        assert_exactly_once(receiver, 60)
        assert outbox.drop_counts() == {}
    finally:
        publisher.stop()
        receiver.stop()
        broker.stop()
