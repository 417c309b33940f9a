"""A board without an RTC battery boots on a wrong clock (the time saved at its last shutdown or power cut, or
the build date) and NTP steps it minutes later: what the attention component kept from before the boot (the
teacher's timeline in the history, a teacher's pause in its file) keeps its true times through the step."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AttentionSettings, CameraSettings, StoreSettings
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.store.db import Database
from edge_agent.store.history import History
from edge_agent.vision import component as component_module
from edge_agent.vision import pipeline
from edge_agent.vision.attention import summarise
from edge_agent.vision.component import AttentionComponent

CST = timezone(timedelta(hours=8))


class _Clock:
    """The wall and monotonic clocks the component and its loop read; NTP moves only the wall one."""

    def __init__(self, wall: datetime) -> None:
        self.wall, self.mono = wall.timestamp(), 5000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def perf_counter(self) -> float:
        return time.perf_counter()

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class _ListOutbox:
    def enqueue(self, stream: str, payload: dict[str, Any], expires_at: float | None = None,
                also: object = None) -> None:
        pass


async def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _lesson(start: datetime, count: int, share: float) -> list[dict[str, Any]]:
    at = start.timestamp()
    return [summarise(at + 60 * i, at + 60 * (i + 1), [24] * 5, [share] * 5, 3) for i in range(count)]


def test_fridays_lesson_reloaded_at_a_monday_boot_stays_on_friday_when_ntp_steps_the_clock(
    tmp_path, state_dir, face_engine, pose_engines, monkeypatch
):
    # A review: the board booted Monday 07:55 on the time saved at Friday's shutdown (17:46) and reloaded
    # Friday's last lesson (16:55-17:40, stamped on a synchronised clock). NTP stepped the clock +62 h and
    # the first new window moved all of them by the step: "This lesson" showed 45 of Friday's windows as
    # Monday 07:04-07:49 before Monday's 5.
    clock = _Clock(datetime(2026, 12, 4, 17, 46, tzinfo=CST))
    monkeypatch.setattr(pipeline, "time", clock)
    monkeypatch.setattr(component_module, "time", clock)
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    history = History(db)
    friday = _lesson(datetime(2026, 12, 4, 16, 55, tzinfo=CST), 45, share=0.55)
    for window in friday:
        history.record("attention", window, at=window["end"])
    db.write(lambda _conn: None).result(5)
    component = AttentionComponent(
        CameraSettings(source=str(tmp_path / "absent.mp4"), reconnect_min_s=0.1, reconnect_max_s=0.2),
        AttentionSettings(), face_engine, pose_engines, outbox=_ListOutbox(), heartbeats=HeartbeatRegistry(),
        history=history,
    )
    monday = _lesson(datetime(2026, 12, 7, 7, 56, tzinfo=CST), 5, share=0.9)

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await component.start()
        try:
            loop = component.loop
            assert loop is not None and list(loop.timeline) == friday  # reloaded
            clock.mono += 20.0
            clock.wall = datetime(2026, 12, 7, 7, 55, 20, tzinfo=CST).timestamp()  # NTP, 20 s after start
            for window in monday:
                clock.tick(60.0)
                loop._emit(window)
            return list(loop.timeline), loop.live_section()["timeline"]
        finally:
            await component.stop()

    try:
        timeline, shown = asyncio.run(run())
    finally:
        db.close()
    assert shown == monday, f"{sum(w['attentive_mean'] == 0.55 for w in shown)} of Friday's windows shown"
    assert timeline == friday + monday  # Friday's lesson stays on Friday in the history's times


def _paused_component(tmp_path: Path, face_engine, pose_engines, clock: dict[str, Any],
                      saved: datetime) -> AttentionComponent:
    pause_file = tmp_path / "camera-pause"
    pause_file.write_text(saved.isoformat())
    return AttentionComponent(
        CameraSettings(source=str(tmp_path / "absent.mp4"), reconnect_min_s=0.1, reconnect_max_s=0.2),
        AttentionSettings(), face_engine, pose_engines, outbox=_ListOutbox(), heartbeats=HeartbeatRegistry(),
        local_now=lambda: clock["now"], monotonic=lambda: clock["mono"], pause_file=pause_file,
        clock_synced=lambda: clock["synced"],
    )


@pytest.mark.parametrize("board_clock_at_boot", [
    datetime(2026, 12, 7, 10, 10, tzinfo=CST),  # the time saved at the power cut: opened Tue 08:05
    datetime(2022, 3, 1, 0, 0, tzinfo=CST),  # the systemd build date: opened Tue 11:30
], ids=["saved-time-of-the-power-cut", "build-date"])
def test_a_pause_restored_on_an_unsynchronised_clock_ends_once_ntp_shows_its_end_has_passed(
    tmp_path, face_engine, pose_engines, board_clock_at_boot
):
    # A review: the teacher paused Monday 10:00-10:45, the power went at 10:10, the board booted Tuesday
    # 07:30 on a wrong clock. The pause's end, taken as "so long from now" on that clock, lasted as long as
    # the clock's error once NTP stepped it; health said "paused by the teacher" all the while.
    clock: dict[str, Any] = {"now": board_clock_at_boot, "mono": 1000.0, "synced": False}
    component = _paused_component(tmp_path, face_engine, pose_engines, clock,
                                  datetime(2026, 12, 7, 10, 45, tzinfo=CST))

    async def run() -> None:
        await component.start()
        try:
            await asyncio.sleep(0.5)
            assert not component.camera.started and "paused by the teacher" in component.health().detail
            # NTP, 20 s after the boot
            clock.update(now=datetime(2026, 12, 8, 7, 30, 20, tzinfo=CST), mono=1020.0, synced=True)
            await _wait_for(lambda: component.camera.started)
            assert component.loop is not None and component.loop.paused_until is None
            assert (tmp_path / "camera-pause").read_text() == ""  # over: the next restart does not pause
        finally:
            await component.stop()

    asyncio.run(run())


def test_a_pause_restored_on_an_unsynchronised_clock_lasts_to_its_end_by_the_synchronised_clock(
    tmp_path, face_engine, pose_engines
):
    # The teacher paused Tuesday 07:05-07:50, the power went at 07:10 and the board booted at 07:30 on the
    # time saved at the cut: 40 minutes "from now" on that clock would open the camera at 08:10.
    clock: dict[str, Any] = {"now": datetime(2026, 12, 8, 7, 10, tzinfo=CST), "mono": 1000.0, "synced": False}
    component = _paused_component(tmp_path, face_engine, pose_engines, clock,
                                  datetime(2026, 12, 8, 7, 50, tzinfo=CST))

    async def run() -> None:
        await component.start()
        try:
            clock.update(now=datetime(2026, 12, 8, 7, 30, 20, tzinfo=CST), mono=1020.0, synced=True)  # NTP
            await asyncio.sleep(0.5)
            assert not component.camera.started  # not over yet: never opened early
            clock.update(now=clock["now"] + timedelta(minutes=19), mono=clock["mono"] + 19 * 60)
            await asyncio.sleep(0.5)
            assert not component.camera.started
            # 07:50:20 (the pause's end anchored to the monotonic clock at the sync: a later step moves it)
            clock.update(now=clock["now"] + timedelta(minutes=1), mono=clock["mono"] + 60)
            await _wait_for(lambda: component.camera.started)
        finally:
            await component.stop()

    asyncio.run(run())
