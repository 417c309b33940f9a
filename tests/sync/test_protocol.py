"""The wire format and backoff rules (pure)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import InputRejected
from edge_agent.sync.protocol import (
    Envelope,
    Item,
    backoff_delay,
    decode_message,
    encode_message,
    missing_ranges,
)

ENV = Envelope("t", "s", "board-1", "attention")


def test_a_batch_round_trips_with_seq_id_and_data() -> None:
    items = [Item(7, "abc", 1.5, '{"x":1}'), Item(8, "def", 2.25, '{"y":[1,2]}')]
    raw = encode_message(ENV, items, sent_at=3.0)
    doc = json.loads(raw)
    assert doc["v"] == 1 and doc["device"] == "board-1" and doc["stream"] == "attention"
    decoded = decode_message(raw)
    assert [(i.seq, i.message_id, i.created_at, i.data) for i in decoded.items] == [
        (7, "abc", 1.5, {"x": 1}),
        (8, "def", 2.25, {"y": [1, 2]}),
    ]


def test_the_store_id_round_trips_and_a_message_without_one_reads_as_the_empty_store() -> None:
    envelope = Envelope("t", "s", "board-1", "attention", "ab" * 16)
    raw = encode_message(envelope, [Item(1, "a", 1.0, "{}")], 2.0)
    assert decode_message(raw).store == "ab" * 16
    doc = json.loads(raw)
    del doc["store"]  # a board of a release before store ids
    assert decode_message(json.dumps(doc).encode()).store == ""


def test_an_item_stamped_on_an_unsynchronised_clock_says_so_and_one_without_it_reads_as_synced() -> None:
    # A board without an RTC battery boots on the time saved at its last shutdown: Monday's lesson went to
    # the cloud stamped as Friday evening, with nothing saying the time might be wrong (a review).
    raw = encode_message(ENV, [Item(1, "a", 1.0, "{}", clock_synced=False), Item(2, "b", 2.0, "{}")], 3.0)
    doc = json.loads(raw)
    assert doc["items"][0]["clock_synced"] is False
    assert "clock_synced" not in doc["items"][1]  # as before: receivers that predate the field see no change
    assert [i.clock_synced for i in decode_message(raw).items] == [False, True]
    for value in ("false", 0, None):
        doc["items"][0]["clock_synced"] = value
        with pytest.raises(InputRejected, match="clock_synced"):
            decode_message(json.dumps(doc).encode())


@pytest.mark.parametrize("store", [7, None, ["a"], "x" * 65, "a/b", "a b", "仓"])
def test_a_malformed_store_id_is_rejected_naming_the_field(store: object) -> None:
    doc = json.loads(encode_message(ENV, [Item(1, "a", 1.0, "{}")], 2.0))
    doc["store"] = store
    with pytest.raises(InputRejected, match="store"):
        decode_message(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v":2}',
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,  # deeper than json parses
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":0,"id":"a","at":1}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":true,"id":"a","at":1}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":2,"at":1}]}',
        b'{"v":1,"device":"","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":1}]}',
        b'{"v":1,"device":"d","stream":"s","items":[{"seq":1,"id":"a","at":1}]}',
        # Found by the sync audit: each was accepted, or ended the reference receiver's thread.
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":9223372036854775808,"id":"a","at":1,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":NaN,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":Infinity,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":true,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":true,"items":[{"seq":1,"id":"a","at":1,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"","at":1,"data":{}}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":1}]}',
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"a","at":1%s,"data":{}}]}'
        % (b"0" * 400),
        b'{"v":1,"device":"d","stream":"s","sent_at":1,"items":[{"seq":1,"id":"\\udc00","at":1,"data":{}}]}',
    ],
)
def test_malformed_messages_are_rejected(raw: bytes) -> None:
    with pytest.raises(InputRejected):
        decode_message(raw)


@given(attempt=st.integers(0, 100), seed=st.integers(0, 1000))
def test_backoff_grows_and_stays_within_bounds(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, 1.0, 300.0, random.Random(seed))
    base = min(300.0, 2.0**attempt)
    assert base / 2 <= delay <= base <= 300.0


def test_backoff_jitter_spreads_boards_apart() -> None:
    rng = random.Random(1)
    assert len({round(backoff_delay(5, 1.0, 300.0, rng), 3) for _ in range(20)}) > 10


@pytest.mark.parametrize(
    ("seqs", "gaps"),
    [([], []), ([1, 2, 3], []), ([2, 3], [(1, 1)]), ([1, 4, 5, 9], [(2, 3), (6, 8)])],
)
def test_missing_ranges(seqs: list[int], gaps: list[tuple[int, int]]) -> None:
    assert missing_ranges(seqs) == gaps
