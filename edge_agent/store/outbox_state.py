"""The outbox rules as pure functions: row states, drop choice and batching.

A row lives ``pending`` → ``inflight`` (handed to MQTT) → deleted (its PUBACK arrived). A lost connection or a
crash returns ``inflight`` rows to ``pending``; they are sent again and the receiver deduplicates them by
their ids within a store (docs/sync-protocol.md). Only ``pending`` rows may be dropped (limits, age, expiry):
an ``inflight`` row may already be at the broker, and dropping it would only hide that from the counters.
:class:`Outbox` does these moves in SQL; ``tests/store/test_outbox.py`` (OutboxMachine) checks them on a real
database.
Expiry (a row past its MQTT expiry or ``store.max_age_days``, never one stamped before ``CLOCK_FLOOR``) is
done in SQL by ``Outbox._expire`` and tested there on a real database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PENDING = "pending"
INFLIGHT = "inflight"

# Streams kept longest when the outbox is full; everything else is an aggregate that can be recomputed
# or is superseded by a newer one, so the oldest aggregates are dropped first.
PRIORITY_STREAMS = frozenset({"alert", "event", "audit"})


@dataclass(frozen=True)
class DropCandidate:
    id: int
    bytes: int
    stream: str


def priority(stream: str, priority_streams: frozenset[str] = PRIORITY_STREAMS) -> int:
    """0 for streams dropped first (aggregates), 1 for streams kept longest."""
    return 1 if stream in priority_streams else 0


def plan_drops(
    rows: int, total_bytes: int, max_rows: int, max_bytes: int, candidates: Iterable[DropCandidate]
) -> list[tuple[int, str]]:
    """Which candidates (already in drop order) to delete, with the limit each one is dropped for."""
    drops: list[tuple[int, str]] = []
    for candidate in candidates:
        if rows > max_rows:
            reason = "max_rows"
        elif total_bytes > max_bytes:
            reason = "max_bytes"
        else:
            break
        drops.append((candidate.id, reason))
        rows -= 1
        total_bytes -= candidate.bytes
    return drops


# 2026-01-01 UTC: no board ran this release before it. A board without a battery-backed clock boots in
# 1970 until NTP answers; rows made meanwhile have no true age and must not be aged out once it does.
CLOCK_FLOOR = 1_767_225_600.0


@dataclass(frozen=True)
class Sized:
    """What batching needs to know of a row."""

    id: int
    stream: str
    bytes: int


def group_batches(rows: Sequence[Sized], batch_max: int, max_message_bytes: int) -> list[list[int]]:
    """Row ids grouped into messages: same stream, in order, ≤ batch_max items and ≤ max_message_bytes.

    Rows of one stream keep their order; a row larger than the byte limit still goes, alone.
    """
    open_batches: dict[str, tuple[list[int], int]] = {}
    batches: list[list[int]] = []
    for row in rows:
        ids, size = open_batches.get(row.stream, ([], 0))
        if ids and (len(ids) >= batch_max or size + row.bytes > max_message_bytes):
            batches.append(ids)
            ids, size = [], 0
        ids.append(row.id)
        open_batches[row.stream] = (ids, size + row.bytes)
    batches.extend(ids for ids, _ in open_batches.values() if ids)
    return batches
