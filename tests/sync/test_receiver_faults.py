"""The reference receiver against what no board sends: an oversized message, a fault out of a take, another
board's items under a store id, a rolled-back board draining its streams, data that is no record, and
commands to device ids that are no boards."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.publish as paho_publish
import pytest

from edge_agent.config import MqttSettings
from edge_agent.sync import receiver as receiver_cli
from edge_agent.sync.protocol import MAX_READ_BYTES, Envelope, Item, encode_message
from edge_agent.sync.receiver import KEPT_PREFIX_BYTES, MAX_RECEIVE_BYTES, Receiver, stores_warning
from tests.brokers import Broker
from tests.sync.conftest import plain_settings

STORE = "5d41402abc4b2a76b9719d911017c592"


def _items(device: str, seqs: tuple[int, ...], *, store: str = STORE, stream: str = "attention",
           data: str | None = None) -> tuple[str, bytes]:
    kind = "attention_window" if stream == "attention" else "kt_class_window"
    items = [Item(seq, f"{device}-{store}-{seq}", 5.0, data or f'{{"kind":"{kind}","n":{seq}}}')
             for seq in seqs]
    envelope = Envelope("t", "s", device, stream, store)
    return f"edge/t/s/{device}/{stream}", encode_message(envelope, items, 5.0)


def _rejected(path: Path) -> list[tuple[str, str, bytes]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT topic, reason, payload FROM rejected_messages ORDER BY rowid").fetchall()


def test_a_message_over_what_the_receiver_reads_is_kept_as_its_length_hash_and_first_bytes(
    tmp_path: Path,
) -> None:
    # A review: a 21 MB message was parsed whole for its digest and kept whole (45 -> 675 MB, 42 MB of
    # database); under a 640 MiB memory limit the MemoryError ended the receiver's thread
    path = tmp_path / "received.db"
    huge = b"[" + b"{}," * (MAX_READ_BYTES // 3 + 1000) + b"{}]"
    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/evil/attention", huge)
        receiver._take("edge/t/s/evil/attention", huge)  # redelivered: the same row
        assert receiver.report("evil")["rejected"] == 1
        assert receiver.replay_rejected() == (0, 0)  # nothing of it can be read: not replayed, still kept
    finally:
        receiver.stop()
    [(topic, reason, payload)] = _rejected(path)
    assert payload == huge[:KEPT_PREFIX_BYTES]
    assert f"{len(huge)} bytes (sha256 {hashlib.sha256(huge).hexdigest()})" in reason, reason
    assert reason.startswith("message too large") and topic == "edge/t/s/evil/attention"


def test_the_broker_drops_for_the_receiver_a_message_larger_than_it_asks_for(
    broker: Broker, tmp_path: Path
) -> None:
    # The broker's own limit is 256 MiB; no board sends over 256 KiB. What lies between 1 MiB (the most
    # the receiver reads) and MAX_RECEIVE_BYTES is still kept as a trace.
    receiver = Receiver(tmp_path / "recv.db", plain_settings(broker)).start()
    try:
        for size in (MAX_RECEIVE_BYTES + 1024, MAX_READ_BYTES + 1024):
            paho_publish.single("edge/t/s/evil/attention", payload=b"x" * size, qos=1, hostname="127.0.0.1",
                                port=broker.port, protocol=5)
        paho_publish.single(*_items("b1", (1,)), qos=1, hostname="127.0.0.1", port=broker.port, protocol=5)
        assert receiver.wait_for_count("b1", 1, 10)
        [(_, reason, payload)] = _rejected(tmp_path / "recv.db")
        assert f"{MAX_READ_BYTES + 1024} bytes" in reason and len(payload) == KEPT_PREFIX_BYTES
    finally:
        receiver.stop()


def test_a_fault_raised_out_of_a_take_reconnects_and_the_message_comes_again(
    broker: Broker, tmp_path: Path
) -> None:
    # A review: a MemoryError out of the message callback ended the receiver's thread; the process went on
    # reporting, stored nothing more, and the broker redelivered the message to every restart
    receiver = Receiver(tmp_path / "recv.db", plain_settings(broker))
    take, faults = receiver._take, []

    def fails_once(topic: str, payload: bytes) -> None:
        if not faults:
            faults.append(topic)
            raise MemoryError("keeping a message")
        take(topic, payload)

    receiver._take = fails_once  # type: ignore[method-assign]
    receiver.start()
    try:
        for seq in (1, 2):
            topic, payload = _items("b1", (seq,))
            paho_publish.single(topic, payload, qos=1, hostname="127.0.0.1", port=broker.port, protocol=5)
        assert receiver.wait_for_count("b1", 2, 10), receiver.seqs("b1")
        assert faults == ["edge/t/s/b1/attention"] and not receiver.wait_ended(0)
    finally:
        receiver.stop()


def test_the_receiver_cli_exits_non_zero_when_its_mqtt_thread_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It went on logging reports of a database nothing wrote to any more
    monkeypatch.setattr(Receiver, "_run", lambda self: None)  # a thread ended by what _run cannot catch
    result: list[int] = []
    cli = threading.Thread(target=lambda: result.append(receiver_cli.main(
        ["--db", str(tmp_path / "recv.db"), "--report-every", "0.1"])), daemon=True)
    cli.start()
    cli.join(5)
    assert result == [1]


def test_another_boards_items_under_a_store_id_hide_none_of_its_losses_and_are_named(tmp_path: Path) -> None:
    # A review: boardA (its own certificate and topic) sent seqs 3 and 4 under boardB's store id after
    # boardB's 1, 2, 5: boardB's real loss of 3-4 showed as gaps [], with no word of boardA
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        for device, seqs in (("boardB", (1, 2)), ("boardA", (3, 4)), ("boardB", (5,))):
            receiver._take(*_items(device, seqs))
        report = receiver.report("boardB")
        assert report["gaps"] == [(3, 4)] and report["stores"][0]["also_under"] == ["boardA"]
        warning = stores_warning(report)
        assert warning is not None and f"store {STORE} also came under boardA" in warning
        assert receiver.report("boardA")["gaps"] == [(1, 2)]
        assert stores_warning(receiver.report("nobody")) is None
    finally:
        receiver.stop()


def test_a_renamed_boards_store_is_counted_across_its_ids_and_named_in_a_warning(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        receiver._take(*_items("old", (1, 2, 3)))
        time.sleep(0.01)
        receiver._take(*_items("new", (4, 5)))
        report = receiver.report("new")
        assert (report["unique"], report["gaps"], report["stores"][0]["also_under"]) == (5, [], ["old"])
        assert "a board renamed" in (stores_warning(report) or "")
    finally:
        receiver.stop()


def test_a_rolled_back_board_draining_each_stream_on_its_own_shows_no_loss(tmp_path: Path) -> None:
    # A review, with the interleaving docs/sync-protocol.md describes: the kt_class 18 and 21 after the
    # attention 16-22, below the store's last seq by then, were filed under "" and shown lost
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        receiver._take(*_items("b1", tuple(range(1, 16))))
        receiver._take(*_items("b1", (16, 17, 19, 20, 22), store=""))  # the release before store ids
        receiver._take(*_items("b1", (18, 21), store="", stream="kt_class"))
        report = receiver.report("b1")
        assert (report["store"], report["unique"], report["gaps"]) == (STORE, 22, [])
        assert [s["store"] for s in report["stores"]] == [STORE]
    finally:
        receiver.stop()


def test_data_that_is_not_an_object_on_a_known_stream_is_kept_apart_not_stored(tmp_path: Path) -> None:
    # A review: attention items whose data was 7, [1, 2], "x" or null were stored as attention windows
    path = tmp_path / "received.db"
    receiver = Receiver(path, MqttSettings())
    try:
        for seq, data in enumerate(("7", "[1,2]", '"x"', "null"), 1):
            receiver._take(*_items("b1", (seq,), data=data))
        receiver._take(*_items("b1", (5,)))
        assert receiver.seqs("b1") == [5] and receiver.report("b1")["rejected"] == 4
    finally:
        receiver.stop()
    reasons = [reason for _, reason, _ in _rejected(path)]
    assert reasons[0] == "item 0: item data on stream 'attention' is 7, not a JSON object"
    assert "is an array" in reasons[1] and "is null" in reasons[3]


def test_a_command_to_a_device_id_makes_no_device(tmp_path: Path) -> None:
    # A review: a config_reload sent to a mistyped id showed a phantom device in every report
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        receiver._take("edge/t/s/np-typo-99/cmd", b'{"type":"config_reload","request_id":"r1"}')
        receiver._take("edge/t/s/b1/hello", b"{}")
        assert receiver.devices() == ["b1"]
    finally:
        receiver.stop()
