"""The reference receiver's database, without a broker: stores and the upgrade of an older file."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import MqttSettings
from edge_agent.errors import InputRejected
from edge_agent.sync import protocol
from edge_agent.sync import receiver as receiver_cli
from edge_agent.sync.protocol import Envelope, Item, encode_message
from edge_agent.sync.receiver import Receiver, places_warning

OLD_SCHEMA = """
CREATE TABLE items (
    device TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL, message_id TEXT NOT NULL,
    created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (device, seq));
CREATE TABLE conflicts (
    device TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL, message_id TEXT NOT NULL,
    created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (device, seq, message_id));
CREATE TABLE devices (
    device TEXT PRIMARY KEY, status TEXT, status_at REAL, heartbeat TEXT, heartbeat_at REAL,
    duplicates INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0);
INSERT INTO devices (device) VALUES ('b1');
INSERT INTO items VALUES ('b1', 1, 'kt_class', 'aaa', 1.0, 1.0, '{"n":1}');
INSERT INTO items VALUES ('b1', 2, 'kt_class', 'bbb', 2.0, 2.0, '{"n":2}');
INSERT INTO conflicts VALUES ('b1', 1, 'kt_class', 'ccc', 3.0, 3.0, '{"n":3}');
"""


def _message(store: str, seq: int, message_id: str, n: int, *, clock_synced: bool = True) -> bytes:
    envelope = Envelope("t", "s", "b1", "kt_class", store)
    return encode_message(envelope, [Item(seq, message_id, 5.0, f'{{"n":{n}}}', clock_synced)], 5.0)


# a receiver database of the release before the items' clock flag (store ids, no clock_unsynced)
STORE_SCHEMA = """
CREATE TABLE items (
    device TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL,
    message_id TEXT NOT NULL, created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (device, store, seq));
CREATE TABLE conflicts (
    device TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL,
    message_id TEXT NOT NULL, created_at REAL NOT NULL, received_at REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (device, store, seq, message_id));
CREATE TABLE devices (
    device TEXT PRIMARY KEY, status TEXT, status_at REAL, heartbeat TEXT, heartbeat_at REAL,
    duplicates INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0);
INSERT INTO devices (device) VALUES ('b1');
INSERT INTO items VALUES ('b1', 'ffffffffffffffffffffffffffffffff', 1, 'kt_class', 'aaa', 1.0, 1.0, '{}');
"""


def test_items_stamped_on_an_unsynchronised_clock_are_stored_flagged_also_in_an_older_receiver_database(
    tmp_path: Path,
) -> None:
    # Monday's lesson from a board booted on Friday's saved time was filed under Friday, with nothing to
    # tell it from a real Friday window (a review): the receiver keeps the board's word on its clock.
    path = tmp_path / "received.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(STORE_SCHEMA)
    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/b1/kt_class", _message("f" * 32, 2, "bbb", 2, clock_synced=False))
        receiver._take("edge/t/s/b1/kt_class", _message("f" * 32, 3, "ccc", 3))
        report = receiver.report("b1")
        assert (report["unique"], report["gaps"], report["clock_unsynced"]) == (3, [], 1)
    finally:
        receiver.stop()
    Receiver(path, MqttSettings()).stop()  # opening an upgraded file again changes nothing
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, clock_unsynced FROM items ORDER BY seq").fetchall()
        assert rows == [(1, None), (2, 1), (3, None)]
        assert "clock_unsynced" in {r[1] for r in conn.execute("PRAGMA table_info(conflicts)")}


def test_a_receiver_database_from_before_store_ids_is_upgraded_keeping_every_item(tmp_path: Path) -> None:
    path = tmp_path / "received.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    receiver = Receiver(path, MqttSettings())
    try:
        report = receiver.report("b1")
        assert (report["store"], report["unique"], report["gaps"], report["conflicts"]) == ("", 2, [], 1)
        # The board, upgraded, now sends from its store: seq 1 there is new data, not a repeat.
        receiver._take("edge/t/s/b1/kt_class", _message("f" * 32, 1, "ddd", 4))
        receiver._take("edge/t/s/b1/kt_class", _message("f" * 32, 1, "ddd", 4))  # QoS 1 redelivery
        report = receiver.report("b1")
        assert (report["store"], report["unique"], report["duplicates"], report["conflicts"]) == (
            "f" * 32, 1, 1, 1
        )
        assert [s["store"] for s in report["stores"]] == ["", "f" * 32]
        assert [data["n"] for _, _, data in receiver.items("b1")] == [1, 2, 4]
    finally:
        receiver.stop()
    Receiver(path, MqttSettings()).stop()  # opening an upgraded file again changes nothing
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 3


def test_a_board_rolled_back_to_a_release_before_store_ids_continues_its_sequence_without_repeats(
    tmp_path: Path,
) -> None:
    # Found by the upgrade audit: a board born on a release with store ids, rolled back, re-sent 4 items
    # whose PUBACK it had lost under store "" (kept twice, 0 duplicates), and its next items showed as a
    # new store with gaps [1,3] and [4,6] although nothing was lost.
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    store = "b3" * 16
    try:
        for seq in (1, 2, 3, 4):
            receiver._take("edge/t/s/b1/kt_class", _message(store, seq, f"id{seq}", seq))
        for seq in (1, 2, 3, 4, 5, 6):  # the rolled-back release: no store; 1-4 are its lost PUBACKs
            receiver._take("edge/t/s/b1/kt_class", _message("", seq, f"id{seq}", seq))
        for seq in (7, 8):  # upgraded again
            receiver._take("edge/t/s/b1/kt_class", _message(store, seq, f"id{seq}", seq))
        report = receiver.report("b1")
        assert (report["store"], report["unique"], report["gaps"], report["duplicates"]) == (store, 8, [], 4)
        assert [s["store"] for s in report["stores"]] == [store] and report["conflicts"] == 0
        assert [data["n"] for _, _, data in receiver.items("b1")] == [1, 2, 3, 4, 5, 6, 7, 8]
    finally:
        receiver.stop()


def test_a_renamed_board_goes_on_with_its_store_and_shows_no_gap_for_what_it_sent_under_its_old_name(
    tmp_path: Path,
) -> None:
    # Fleet review: renamed (--replace under a new id), a board kept its store and went on at seq 9; the
    # receiver reported seqs 1-8 as a gap under the new name, though they were stored under the old one.
    store = "e" * 32
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        for seq in (1, 2, 3):
            receiver._take("edge/t/s/b1/kt_class", _message(store, seq, f"id{seq}", seq))
        renamed = Envelope("t", "s", "b2", "kt_class", store)
        for seq in (3, 4, 5):  # 3 again: its PUBACK was lost at the rename (round 4: all shown as lost)
            receiver._take("edge/t/s/b2/kt_class",
                           encode_message(renamed, [Item(seq, f"id{seq}", 5.0, '{"n":0}')], 5.0))
        report = receiver.report("b2")
        assert (report["store"], report["max_seq"], report["gaps"]) == (store, 5, []), report
        assert receiver.report("b1")["gaps"] == []
    finally:
        receiver.stop()


def test_two_boards_sending_from_one_copied_database_keep_their_own_gaps(tmp_path: Path) -> None:
    # Round 3: with gaps counted per store across device ids, a board copied from another's image filled
    # the first one's holes (3 and 4 lost, shown as none)
    store = "c" * 32
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        for device, seqs in (("x", (1, 2, 5)), ("y", (1, 2, 3, 4, 5))):
            envelope = Envelope("t", "s", device, "kt_class", store)
            for seq in seqs:
                receiver._take(f"edge/t/s/{device}/kt_class",
                               encode_message(envelope, [Item(seq, f"{device}{seq}", 5.0, '{"n":0}')], 5.0))
        assert receiver.report("x")["gaps"] == [(3, 4)] or receiver.report("x")["gaps"] == [[3, 4]]
        assert receiver.report("y")["gaps"] == []
    finally:
        receiver.stop()


def test_a_heartbeat_nested_too_deep_is_not_json_to_the_receiver_not_a_crash_of_its_parser() -> None:
    # json.loads raised RecursionError on it: caught only by the message handler's catch-all
    from edge_agent.sync.receiver import _heartbeat_text

    assert _heartbeat_text(b"[" * 5_000 + b"]" * 5_000) is None  # 10 KB, under the size limit
    assert _heartbeat_text(b'{"status":"online"}') == '{"status":"online"}'


def _rejected_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT topic, device, item, reason, payload FROM rejected_messages "
                            "ORDER BY rowid").fetchall()


def test_one_bad_item_of_a_drained_backlog_is_kept_apart_and_the_other_99_are_stored(tmp_path: Path) -> None:
    # A review: the receiver refused a whole message for one bad item and acknowledged it; a backlog
    # drains 100 items a message, and the board deletes what the broker acknowledged: 99 good items lost.
    path = tmp_path / "received.db"
    envelope = Envelope("t", "s", "b1", "kt_class", "a" * 32)
    doc = json.loads(encode_message(envelope, [Item(seq, f"id{seq}", 5.0, f'{{"n":{seq}}}')
                                               for seq in range(1, 101)], 5.0))
    doc["items"][41]["id"] = 7  # item 41 (seq 42) is bad
    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/b1/kt_class", json.dumps(doc).encode())
        report = receiver.report("b1")
        assert (report["unique"], report["gaps"], report["rejected"]) == (99, [(42, 42)], 1)
        # redelivered (its PUBACK lost after the commit): the bad item is kept once, not twice (round 2)
        receiver._take("edge/t/s/b1/kt_class", json.dumps(doc).encode())
        report = receiver.report("b1")
        assert (report["unique"], report["duplicates"], report["rejected"]) == (99, 99, 1)
    finally:
        receiver.stop()
    [(topic, device, item, reason, payload)] = _rejected_rows(path)
    assert (topic, device, item) == ("edge/t/s/b1/kt_class", "b1", 41) and "item id invalid" in reason
    kept = json.loads(payload)  # the bad item alone in its message's envelope, to replay once fixed
    assert kept["items"] == [doc["items"][41]] and (kept["device"], kept["store"]) == ("b1", "a" * 32)


def test_a_message_the_receiver_cannot_read_is_kept_as_it_came_with_the_reason(tmp_path: Path) -> None:
    # "Refuse other values of v" meant lost for good: the broker had acknowledged it, the board deleted it.
    path = tmp_path / "received.db"
    newer = json.dumps({"v": 2, "tenant": "t", "site": "s", "device": "b1", "stream": "kt_class",
                        "records": [{"seq": 1}]}).encode()
    elsewhere = _message("", 1, "x", 1).replace(b'"tenant":"t"', b'"tenant":"u"')  # not the topic's tenant
    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/b1/kt_class", newer)
        receiver._take("edge/t/s/b1/kt_class", b"\xff\xfe not json")
        receiver._take("edge/t/s/b1/kt_class", elsewhere)
        receiver._take("edge/not/a/topic", b"{}")
        assert receiver.report("b1")["rejected"] == 3 and receiver.rejected == 4
        assert receiver.count("b1") == 0
    finally:
        receiver.stop()
    rows = _rejected_rows(path)
    assert [(device, item, payload) for _, device, item, _, payload in rows] == [
        ("b1", None, newer), ("b1", None, b"\xff\xfe not json"),
        ("b1", None, elsewhere), (None, None, b"{}"),
    ]
    assert "unsupported schema version 2" in rows[0][3] and "not JSON" in rows[1][3]
    assert "disagree" in rows[2][3] and rows[3][0] == "edge/not/a/topic"


def test_a_kept_message_or_item_re_sent_with_a_new_sent_at_is_kept_and_counted_once(tmp_path: Path) -> None:
    # A review: the digest that keeps a rejected message once covered its "sent_at", which the board sets
    # at every send: a re-send after a lost PUBACK was kept and counted again. An item is the same item
    # in another place of its message too (a re-send batches the board's rows anew).
    path = tmp_path / "received.db"
    envelope = Envelope("t", "s", "b1", "kt_class", "a" * 32)

    def newer(sent_at: float) -> bytes:
        return json.dumps({"v": 2, "tenant": "t", "site": "s", "device": "b1", "stream": "kt_class",
                           "sent_at": sent_at, "records": [{"seq": 1}]}).encode()

    def with_bad_item(sent_at: float, seqs: range) -> bytes:
        doc = json.loads(encode_message(envelope, [Item(seq, f"id{seq}", 5.0, f'{{"n":{seq}}}')
                                                   for seq in seqs], sent_at))
        for item in doc["items"]:
            if item["seq"] == 3:
                item["id"] = 7  # seq 3 is bad
        return json.dumps(doc).encode()

    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/b1/kt_class", newer(10.0))
        receiver._take("edge/t/s/b1/kt_class", newer(11.5))  # re-sent
        receiver._take("edge/t/s/b1/kt_class", b"not json")
        receiver._take("edge/t/s/b1/kt_class", b"not json")  # redelivered: the same bytes
        receiver._take("edge/t/s/b1/kt_class", with_bad_item(10.0, range(3, 5)))  # seq 3 item 0
        receiver._take("edge/t/s/b1/kt_class", with_bad_item(12.0, range(1, 6)))  # seq 3 item 2
        report = receiver.report("b1")
        assert (report["unique"], report["rejected"], receiver.rejected) == (4, 3, 3), report
    finally:
        receiver.stop()
    rows = _rejected_rows(path)
    assert [(item, payload) for _, _, item, _, payload in rows] == [
        (None, newer(10.0)), (None, b"not json"), (0, rows[2][4])]
    assert json.loads(rows[2][4])["items"][0]["seq"] == 3


def _send(receiver: Receiver, device: str, store: str, seq: int, message_id: str) -> None:
    envelope = Envelope("t", "s", device, "kt_class", store)
    receiver._take(f"edge/t/s/{device}/kt_class",
                   encode_message(envelope, [Item(seq, message_id, 5.0, f'{{"n":{seq}}}')], 5.0))


def test_an_item_re_sent_under_a_renamed_boards_new_id_is_a_duplicate_not_stored_twice(
    tmp_path: Path,
) -> None:
    # The cloud review: old-id sent seq 1-5; renamed, the board sent seq 5 again under new-id with the same
    # id (its PUBACK lost at the rename), then seq 6: seq 5 was stored twice, with 0 duplicates counted.
    store = "d" * 32
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        for seq in (1, 2, 3, 4, 5):
            _send(receiver, "old-id", store, seq, f"id{seq}")
        for seq in (5, 6):
            _send(receiver, "new-id", store, seq, f"id{seq}")
        report = receiver.report("new-id")
        assert (report["duplicates"], report["unique"], report["max_seq"], report["gaps"]) == (1, 6, 6, [])
        assert (receiver.count("old-id"), receiver.count("new-id")) == (5, 1)
    finally:
        receiver.stop()


def test_a_receiver_database_from_before_the_store_wide_id_check_finds_a_renamed_boards_repeat(
    tmp_path: Path,
) -> None:
    path = tmp_path / "received.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(STORE_SCHEMA)  # b1 sent seq 1 ('aaa') from store f...f
    receiver = Receiver(path, MqttSettings())
    try:
        _send(receiver, "b2", "f" * 32, 1, "aaa")  # renamed b2, its PUBACK lost at the rename
        _send(receiver, "b2", "f" * 32, 2, "bbb")
        assert (receiver.report("b2")["duplicates"], receiver.count("b1"), receiver.count("b2")) == (1, 1, 1)
    finally:
        receiver.stop()
    with sqlite3.connect(path) as conn:  # the old file was given the index the check reads
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'items_by_store_id'").fetchone()


def _heartbeat(receiver: Receiver, device: str, store: str, last_seq: int) -> None:
    doc = {"v": 1, "device": device, "store": store, "backlog": 0, "last_seq": last_seq}
    receiver._take(f"edge/t/s/{device}/heartbeat", json.dumps(doc).encode())


def test_seqs_a_board_stored_that_never_came_show_at_the_tail_of_each_store_even_one_it_lost(
    tmp_path: Path,
) -> None:
    # The cloud review: the receiver never read the heartbeat's last_seq, and kept one heartbeat per device,
    # replaced by the new store's after the board lost its database: the old store's last items, lost at
    # the broker before the board went quiet, showed nowhere.
    old, new, unseen = "a" * 32, "b" * 32, "c" * 32
    receiver = Receiver(tmp_path / "received.db", MqttSettings())
    try:
        for seq in (1, 2, 3):
            _send(receiver, "b1", old, seq, f"o{seq}")
        _heartbeat(receiver, "b1", old, 5)  # 4 and 5 stored on the board, lost at the broker
        _heartbeat(receiver, "b1", old, 4)  # an older heartbeat come late: the highest is kept
        _heartbeat(receiver, "b1", new, 0)  # the database lost: a new store, nothing in it yet
        _send(receiver, "b1", new, 1, "n1")
        _heartbeat(receiver, "b1", new, 2)
        _heartbeat(receiver, "b1", unseen, 7)  # a store none of whose items came
        report = receiver.report("b1")
        assert (report["store"], report["gaps"], report["tail"]) == (new, [], [(2, 2)])
        assert [(s["store"], s["max_seq"], s["last_seq"], s["tail"]) for s in report["stores"]] == [
            (old, 3, 5, [(4, 5)]), (new, 1, 2, [(2, 2)]), (unseen, 0, 7, [(1, 7)]),
        ]
    finally:
        receiver.stop()


def test_the_tenant_and_site_of_each_item_are_kept_and_a_device_seen_under_two_sites_is_named(
    tmp_path: Path,
) -> None:
    # The cloud review: the broker checks only the device id, so tenant and site are the board's claim, and
    # the receiver kept neither: two districts using one device id merged, a board moved to another site
    # could not be seen. An older receiver file gets the columns (NULL for what it holds).
    path = tmp_path / "received.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(STORE_SCHEMA)  # b1's seq 1, stored before the columns
    receiver = Receiver(path, MqttSettings())
    try:
        for seq, site in ((2, "school-1"), (3, "school-1"), (4, "school-2")):
            envelope = Envelope("t", site, "b1", "kt_class", "f" * 32)
            receiver._take(f"edge/t/{site}/b1/kt_class",
                           encode_message(envelope, [Item(seq, f"id{seq}", 5.0, "{}")], 5.0))
        report = receiver.report("b1")
        assert [(p["tenant"], p["site"], p["items"]) for p in report["places"]] == [
            ("t", "school-1", 2), ("t", "school-2", 1)
        ]
        warning = places_warning(report)
        assert warning is not None and "t/school-1 (2 items), then t/school-2 (1 items)" in warning
        assert places_warning(receiver.report("nobody")) is None
    finally:
        receiver.stop()
    Receiver(path, MqttSettings()).stop()  # opening an upgraded file again changes nothing
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, tenant, site FROM items ORDER BY seq").fetchall()
        assert rows == [(1, None, None), (2, "t", "school-1"), (3, "t", "school-1"), (4, "t", "school-2")]
        assert {"tenant", "site"} <= {r[1] for r in conn.execute("PRAGMA table_info(conflicts)")}


def test_a_heartbeat_naming_another_device_and_a_record_of_another_stream_are_kept_apart(
    tmp_path: Path,
) -> None:
    # The cloud review: the receiver filed a heartbeat under its topic's device whatever device it named,
    # and an item under its stream whatever its data's kind said.
    path = tmp_path / "received.db"
    receiver = Receiver(path, MqttSettings())
    try:
        _heartbeat(receiver, "b1", "a" * 32, 3)
        foreign = {"v": 1, "device": "b2", "store": "a" * 32, "backlog": 0, "last_seq": 9}
        receiver._take("edge/t/s/b1/heartbeat", json.dumps(foreign).encode())
        envelope = Envelope("t", "s", "b1", "kt_class", "a" * 32)
        items = [Item(1, "k1", 5.0, '{"kind":"kt_class_window","v":1}'),
                 Item(2, "k2", 5.0, '{"kind":"attention_window","v":1}')]
        receiver._take("edge/t/s/b1/kt_class", encode_message(envelope, items, 5.0))
        other = Envelope("t", "s", "b1", "alert", "a" * 32)  # a stream with no kind of its own: any is taken
        receiver._take("edge/t/s/b1/alert", encode_message(other, [Item(3, "k3", 5.0, '{"kind":"x"}')], 5.0))
        report = receiver.report("b1")
        assert (report["heartbeat"]["device"], report["stores"][0]["last_seq"]) == ("b1", 3)
        assert (report["unique"], report["rejected"]) == (2, 2)
    finally:
        receiver.stop()
    reasons = [(item, reason) for _, _, item, reason, _ in _rejected_rows(path)]
    assert reasons == [
        (None, "heartbeat names device 'b2', its topic 'b1'"),
        (1, "item 1: item kind 'attention_window' on stream 'kt_class', which carries 'kt_class_window'"),
    ]


def test_what_was_kept_is_taken_once_the_receiver_reads_it_and_the_rest_stays_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The doc says keep what cannot be read and replay it after an upgrade; the receiver had no replay
    path = tmp_path / "received.db"
    newer = _message("a" * 32, 1, "x1", 1).replace(b'"v":1', b'"v":2')  # from a board of a later release
    receiver = Receiver(path, MqttSettings())
    try:
        receiver._take("edge/t/s/b1/kt_class", newer)
        receiver._take("edge/t/s/b1/kt_class", b"not json")
        receiver._take("edge/t/s/b1/heartbeat", b"[]")  # a heartbeat is not replayed: a newer one came since
        assert receiver.report("b1")["rejected"] == 3 and receiver.count("b1") == 0
    finally:
        receiver.stop()
    monkeypatch.setattr(protocol, "SCHEMA_VERSION", 2)  # the receiver upgraded to read version 2
    assert receiver_cli.main(["--db", str(path), "--replay-rejected"]) == 0
    assert json.loads(capsys.readouterr().out) == {"taken": 1, "kept_again": 1}
    rows = _rejected_rows(path)
    assert [(topic.rsplit("/", 1)[1], payload) for topic, _, _, _, payload in rows] == [
        ("heartbeat", b"[]"), ("kt_class", b"not json")]
    receiver = Receiver(path, MqttSettings())
    try:
        assert receiver.items("b1") == [(1, "kt_class", {"n": 1})]
        assert receiver.report("b1")["rejected"] == 2
    finally:
        receiver.stop()


def test_a_replay_keeps_each_rows_receive_time_and_place_and_undoes_a_take_that_fails_halfway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round 2: replayed items took the replay's time as received_at, and the report's current store went
    # back to the board's old database; a row kept again lost its place in its message; a take that raised
    # halfway kept the items before the fault; and a count went below 0
    path = tmp_path / "received.db"
    old, new = "a" * 32, "b" * 32
    receiver = Receiver(path, MqttSettings())
    try:
        for seq in range(1, 4):
            receiver._take("edge/t/s/b1/kt_class", _message(old, seq, f"o{seq}", seq))
        receiver._take("edge/t/s/b1/kt_class", _message(old, 4, "o4", 4).replace(b'"v":1', b'"v":2'))
        envelope = Envelope("t", "s", "b1", "kt_class", old)
        pair = json.loads(encode_message(envelope, [Item(5, "o5", 5.0, '{"n":5}'), Item(6, "o6", 5.0, "{}")],
                                         5.0))
        pair["items"][1]["id"] = 7  # kept alone, as item 1
        receiver._take("edge/t/s/b1/kt_class", json.dumps(pair).encode())
        for seq in range(1, 11):  # the board's database lost: a new store
            receiver._take("edge/t/s/b1/kt_class", _message(new, seq, f"n{seq}", seq))
        assert receiver.report("b1")["store"] == new
        first_seen = dict(receiver._conn.execute("SELECT item IS NULL, received_at FROM rejected_messages"))

        def reads_none(payload: bytes) -> Any:
            raise InputRejected("unsupported schema version 1")  # a receiver that reads only a later one

        monkeypatch.setattr("edge_agent.sync.receiver.decode_envelope", reads_none)
        assert receiver.replay_rejected() == (0, 2)
        kept = receiver._conn.execute("SELECT item, received_at FROM rejected_messages ORDER BY item")
        kept = kept.fetchall()
        assert kept == [(None, first_seen[1]), (1, first_seen[0])]  # round 3: item 1 became a whole message
        monkeypatch.setattr("edge_agent.sync.receiver.decode_envelope", _reads_newer)  # the upgrade
        assert receiver.replay_rejected() == (1, 1)
        report = receiver.report("b1")
        assert (report["store"], report["unique"], report["rejected"]) == (new, 10, 1)
        assert receiver.seqs("b1", old) == [1, 2, 3, 4, 5]
        stored_at = receiver._conn.execute("SELECT received_at FROM items WHERE message_id = 'o4'").fetchone()
        assert stored_at == (first_seen[1],)  # the whole message's first receive time
        [(item, at)] = receiver._conn.execute("SELECT item, received_at FROM rejected_messages").fetchall()
        assert (item, at) == (1, first_seen[0])  # still item 1 of its message, first seen then

        later = encode_message(envelope, [Item(7, "o7", 5.0, "{}"), Item(8, "o8", 5.0, "{}")], 5.0)
        receiver._take("edge/t/s/b1/kt_class", later.replace(b'"v":1', b'"v":4'))  # not read yet
        real_item = receiver_cli.decode_item

        def second_fails(raw: Any) -> Any:
            if raw["id"] == "o8":
                raise RuntimeError("a fault of this receiver")
            return real_item(raw)

        monkeypatch.setattr("edge_agent.sync.receiver.decode_envelope",
                            lambda payload: _reads_newer(payload.replace(b'"v":4', b'"v":1')))
        monkeypatch.setattr("edge_agent.sync.receiver.decode_item", second_fails)
        assert receiver.replay_rejected() == (0, 2)  # the item kept alone still fails on its own id
        assert receiver.seqs("b1", old) == [1, 2, 3, 4, 5]  # not seq 7, read before the fault
        assert receiver.report("b1")["rejected"] == 2
        reasons = [r for (r,) in receiver._conn.execute("SELECT reason FROM rejected_messages")]
        assert "item 1: item id invalid" in reasons[0] and "a fault of this receiver" in reasons[1], reasons
    finally:
        receiver.stop()


def _reads_newer(payload: bytes) -> Any:
    """A receiver upgraded to read versions 2 and 3 (as version 1 here)."""
    return protocol.decode_envelope(payload.replace(b'"v":2', b'"v":1').replace(b'"v":3', b'"v":1'))


def test_two_replays_at_once_lose_no_kept_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Round 3: a replay deletes by rowid from a list read before; a row another replay kept again took a
    # freed rowid, and was deleted as the row listed there (14 of 15 runs of two replays left 0 of 1 bad rows)
    path = tmp_path / "received.db"
    first, second = Receiver(path, MqttSettings()), Receiver(path, MqttSettings())
    try:
        for seq in (1, 2):
            newer = _message("a" * 32, seq, f"x{seq}", seq).replace(b'"v":1', b'"v":2')
            first._take("edge/t/s/b1/kt_class", newer)
        first._take("edge/t/s/b1/kt_class", b"still not json")
        monkeypatch.setattr("edge_agent.sync.receiver.decode_envelope", _reads_newer)
        listed_then_waits = second._transaction

        @contextlib.contextmanager
        def after_the_first_replay() -> Iterator[None]:
            if first.report("b1")["unique"] == 0:  # the second has its list; the first replays all now
                assert first.replay_rejected() == (2, 1)
            with listed_then_waits():
                yield

        monkeypatch.setattr(second, "_transaction", after_the_first_replay)
        assert second.replay_rejected() == (0, 0)
        assert [payload for *_, payload in _rejected_rows(path)] == [b"still not json"]
        assert first.report("b1")["unique"] == 2 and first.report("b1")["rejected"] == 1
    finally:
        first.stop()
        second.stop()
