"""The wire format of outbox messages and the reconnect backoff, as pure functions.

A message carries one or more items of one stream (several while draining a backlog)::

    {"v": 1, "tenant": ..., "site": ..., "device": ..., "stream": ..., "store": hex, "sent_at": epoch,
     "items": [{"seq": int, "id": message_id, "at": epoch, "data": {...}}, ...]}

An item stamped while the board's clock was not known to be right (not NTP-synchronised: ``at`` may be
days off, e.g. a board without an RTC battery booted on the time saved at its last shutdown) also carries
``"clock_synced": false``; an item without the field is one stamped on a synchronised clock, or sent by a
release before the field. Receivers that predate it ignore it (they read only the fields above).

``seq`` is per board database (``store``), gap-free as allocated, so a receiver deduplicates by
(store, seq) with the item's ``id``, whatever the device id (a renamed board keeps its store), and any
hole is a real loss (a counted drop on the board). Boards of releases before the store id send none; it
reads as "".
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edge_agent import json_input
from edge_agent.errors import InputRejected

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
# the largest payload decode_envelope reads; a receiver keeps only the first bytes of a larger one
MAX_READ_BYTES = MAX_MESSAGE_BYTES * 4
UNSYNCED_FIELD = '"clock_synced":false,'  # only on an item stamped on a clock not known to be right
STORE_RE = re.compile(r"[A-Za-z0-9_.-]{0,64}")  # "" for boards that predate it
# The record each data stream carries (its "kind"; docs/sync-protocol.md): the components that queue them
# and the receiver that checks them read it here
STREAM_KINDS = {"attention": "attention_window", "kt_class": "kt_class_window"}


@dataclass(frozen=True)
class Item:
    seq: int
    message_id: str
    created_at: float
    payload_json: str  # the stored JSON text, inserted verbatim (no re-encoding per send)
    clock_synced: bool = True  # False: ``created_at`` was read from a clock not known to be right


@dataclass(frozen=True)
class Envelope:
    tenant: str
    site: str
    device: str
    stream: str
    store: str = ""  # the board database's id (Database.store_id): the scope of its seq


def encode_message(envelope: Envelope, items: Sequence[Item], sent_at: float) -> bytes:
    head = json.dumps(
        {"v": SCHEMA_VERSION, "tenant": envelope.tenant, "site": envelope.site, "device": envelope.device,
         "stream": envelope.stream, "store": envelope.store, "sent_at": round(sent_at, 3)},
        separators=(",", ":"),
    )
    parts = [
        f'{{"seq":{item.seq},"id":{json.dumps(item.message_id)},"at":{round(item.created_at, 3)!r},'
        f'{"" if item.clock_synced else UNSYNCED_FIELD}"data":{item.payload_json}}}'
        for item in items
    ]
    return (head[:-1] + ',"items":[' + ",".join(parts) + "]}").encode("utf-8")


@dataclass(frozen=True)
class DecodedItem:
    seq: int
    message_id: str
    created_at: float
    data: Any
    clock_synced: bool = True  # the item's "clock_synced" (absent: True)


@dataclass(frozen=True)
class DecodedMessage:
    tenant: str
    site: str
    device: str
    stream: str
    sent_at: float
    items: list[DecodedItem]
    store: str = ""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InputRejected(message)


def decode_message(payload: bytes) -> DecodedMessage:
    """Parse and check a message; InputRejected says what is wrong with a malformed one (its envelope or
    any one of its items)."""
    message, items = decode_envelope(payload)
    return replace(message, items=[decode_item(item) for item in items])


def decode_envelope(payload: bytes) -> tuple[DecodedMessage, list[Any]]:
    """Parse and check all of a message but its items: the message without items, and its items as they
    came, for decode_item one at a time. A drained backlog sends up to 100 items a message, and a
    receiver that refused the whole message for one bad item lost the other 99 (the board deletes what
    the broker acknowledged). InputRejected says what is wrong with a malformed envelope."""
    _require(len(payload) <= MAX_READ_BYTES, "message too large")
    try:
        doc = json_input.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputRejected(f"message is not JSON: {exc}") from exc
    _require(isinstance(doc, dict), "message is not a JSON object")
    _require(doc.get("v") == SCHEMA_VERSION, f"unsupported schema version {doc.get('v')!r}")
    device, stream, items = doc.get("device"), doc.get("stream"), doc.get("items")
    tenant, site = doc.get("tenant"), doc.get("site")
    _require(isinstance(tenant, str) and isinstance(site, str), "tenant or site missing")
    _require(isinstance(device, str) and bool(device), "device missing")
    _require(isinstance(stream, str) and bool(stream), "stream missing")
    _require(isinstance(items, list) and bool(items), "items missing")
    sent_at = doc.get("sent_at")
    _require(_is_time(sent_at), "sent_at missing or not a finite number")
    store = doc.get("store", "")
    _require(isinstance(store, str) and STORE_RE.fullmatch(store) is not None,
             "store is not an id of up to 64 letters, digits, '.', '_' or '-'")
    return DecodedMessage(tenant, site, device, stream, float(sent_at), [], store), items


def decode_item(item: Any) -> DecodedItem:
    """Check one item of a message; InputRejected says what is wrong with it."""
    _require(isinstance(item, dict), "item is not an object")
    seq, mid, at = item.get("seq"), item.get("id"), item.get("at")
    # SQLite stores a signed 64-bit seq; a larger one would end a receiver's thread.
    _require(isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq < 2**63, "item seq invalid")
    _require(isinstance(mid, str) and bool(mid) and _is_utf8(mid), "item id invalid")
    _require(_is_time(at), "item time invalid")
    _require("data" in item, "item data missing")
    synced = item.get("clock_synced", True)
    _require(isinstance(synced, bool), "item clock_synced is not true or false")
    return DecodedItem(seq, mid, float(at), item["data"], synced)


def _is_time(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int of hundreds of digits (JSON has no bound): it ended a receiver's thread
        return False


def _is_utf8(text: str) -> bool:
    """False for a lone surrogate ("\\ud800" in JSON), which SQLite cannot store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def backoff_delay(attempt: int, minimum: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: in [base/2, base], base = min(maximum, minimum * 2**attempt).

    The jitter keeps a school's boards from reconnecting in lockstep after a shared outage.
    """
    base = min(maximum, minimum * (2.0 ** min(attempt, 30)))
    return rng.uniform(base / 2.0, base)


def missing_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Holes in a sorted sequence of distinct seqs starting at 1, as inclusive (first, last) ranges."""
    gaps: list[tuple[int, int]] = []
    expected = 1
    for seq in seqs:
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return gaps
