"""Start-up objects leave the collector's sight once the daemon runs; every collector pass is timed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from edge_agent.daemon import Daemon
from edge_agent.heap import freeze_startup_objects, time_collections
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.systemd import Notifier
from edge_agent.telemetry.metrics import sample


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


@pytest.fixture()
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # frozen objects go back to the oldest generation for the other tests


def _tracked_ids() -> set[int]:
    return {id(o) for generation in (0, 1, 2) for o in gc.get_objects(generation)}


def test_live_start_up_objects_are_no_longer_walked_by_collections(unfrozen: None) -> None:
    kept = [[i] for i in range(20_000)]  # lists are always tracked by the collector
    assert id(kept[0]) in _tracked_ids()
    frozen = freeze_startup_objects()
    assert frozen >= 20_000 and gc.get_freeze_count() == frozen
    walked = _tracked_ids()
    assert not any(id(row) in walked for row in kept)
    assert kept[-1] == [19_999]  # still alive and usable


def test_start_up_garbage_is_collected_not_frozen(unfrozen: None) -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    freeze_startup_objects()
    assert gone() is None


def test_objects_made_after_the_freeze_are_still_collected(unfrozen: None) -> None:
    freeze_startup_objects()
    later = Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None


def test_every_collector_pass_is_counted_by_generation() -> None:
    time_collections()
    time_collections()  # a second call must not count each pass twice
    gc.disable()  # no automatic pass in between: which test ran before decides how close one is
    try:
        before = {g: sample("edge_gc_pause_seconds_count", {"generation": g}) for g in ("0", "2")}
        gc.collect(0)
        gc.collect(2)
        after = {g: sample("edge_gc_pause_seconds_count", {"generation": g}) for g in ("0", "2")}
    finally:
        gc.enable()
    assert after["0"] == before["0"] + 1
    assert after["2"] == before["2"] + 1
    assert sample("edge_gc_pause_seconds_sum", {"generation": "2"}) > 0


def test_a_running_daemon_has_frozen_its_start_up_objects(unfrozen: None) -> None:
    daemon = Daemon([], live=LiveBoard(), heartbeats=HeartbeatRegistry(), notifier=Notifier({}))

    async def scenario() -> tuple[int, int]:
        task = asyncio.create_task(daemon.run())
        while daemon.state != "running":
            await asyncio.sleep(0.01)
        frozen = gc.get_freeze_count()
        daemon.request_stop()
        return frozen, await asyncio.wait_for(task, 10)

    frozen, code = asyncio.run(scenario())
    assert code == 0 and frozen > 1000
