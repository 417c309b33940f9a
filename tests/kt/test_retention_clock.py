"""Retention of student states and the board's clock: the real KT component, outbox, SQLite file and clock
flag (systemd-timesyncd's flag file under a test root)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock_sync import TIMESYNC_FLAG, ClockSyncFlag
from edge_agent.config import DeviceSettings, KTSettings, MqttSettings, StoreSettings
from edge_agent.kt import component as component_module
from edge_agent.kt.component import KTComponent
from edge_agent.kt.erasure import DAY_S
from edge_agent.kt.package import KTPackage
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from tests.kt.test_erasure import _class, _rows, _stamp
from tests.kt.test_service import _service

SETTINGS = KTSettings(min_group_size=1, student_state_max_age_days=400)


def _stored_class(package: KTPackage, engine: Any, db: Database, pseudonymize: Any,
                  days_ago: dict[str, float]) -> None:
    """The students answered (stored), their rows then stamped ``days_ago`` by the board's clock."""
    svc = _service(package, engine, SETTINGS, pseudonymize, db)
    _class(package, pseudonymize, svc, list(days_ago), "before")
    svc.stop()
    now = component_module.time.time()
    _stamp(db, {pseudonymize(s): now - days * DAY_S for s, days in days_ago.items()})


def _component(db: Database, device: DeviceSettings, root: Path) -> KTComponent:
    """The daemon's wiring: the outbox holds the board's clock flag, the KT component is given the outbox."""
    flag = ClockSyncFlag(root, recheck_s=0)
    outbox = Outbox(db, device, StoreSettings(), MqttSettings(), clock_synced=flag)
    outbox.open()
    return KTComponent(SETTINGS, device, None, db, outbox, LiveBoard(), HeartbeatRegistry())


def test_no_student_state_is_deleted_by_retention_while_the_board_clock_is_not_synchronised(
    package: KTPackage, engine: Any, device: DeviceSettings, db: Database, pseudonymize: Any,
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A board with no RTC battery and NTP out of reach, its clock 2 years ahead through two starts: the class
    # answered 1..30 days ago (true time), 731..760 days ago by this clock; 3 students answered in the first
    # start, stamped by it. Those 3 passed the newest-state guard at the restart, and 27 states were deleted.
    caplog.set_level(logging.INFO, "edge_agent.kt.component")
    # several turns while it waits (raising=False: the test runs, and fails, on a release without it)
    monkeypatch.setattr(component_module, "RETIRE_UNSYNCED_RETRY_S", 0.5, raising=False)
    class_ = {f"stu-{n:02d}": 2 * 365 + n + 1 for n in range(30)} | {f"stu-{n:02d}": 0.5 for n in range(3)}
    _stored_class(package, engine, db, pseudonymize, class_)
    component = _component(db, device, tmp_path)

    async def restart() -> None:
        await component.start()
        await asyncio.sleep(3.5)  # retention's first turn, and the turns after it
        db.write(lambda c: None).result(5)

    asyncio.run(restart())
    try:
        rows = _rows(db)
        assert len(rows) == 30 and rows == {pseudonymize(s) for s in class_}
        service = component.get_service()
        assert service is not None and service.student_count() == 30
        said = [r.getMessage() for r in caplog.records if "not known to be right" in r.getMessage()]
        assert len(said) == 1 and "NTP" in said[0]  # once, not at each turn
    finally:
        asyncio.run(component.stop())


def test_retention_runs_soon_after_the_board_clock_is_synchronised_and_deletes_only_old_states(
    package: KTPackage, engine: Any, device: DeviceSettings, db: Database, pseudonymize: Any,
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A board switched off every evening, its NTP answering only after the daemon's first retention turn:
    # waiting the daily turn, it would never retire a state
    caplog.set_level(logging.INFO, "edge_agent.kt.component")
    monkeypatch.setattr(component_module, "RETIRE_UNSYNCED_RETRY_S", 0.5, raising=False)
    _stored_class(package, engine, db, pseudonymize, {"old-1": 401, "old-2": 900, "recent": 399, "today": 0})
    component = _component(db, device, tmp_path)

    async def run() -> set[str]:
        await component.start()
        await asyncio.sleep(1.5)  # the first turn: the clock not synchronised yet
        db.write(lambda c: None).result(5)
        before = _rows(db)
        flag = tmp_path / TIMESYNC_FLAG
        flag.parent.mkdir(parents=True)
        flag.touch()  # systemd-timesyncd reached its server
        await asyncio.sleep(1.5)
        db.write(lambda c: None).result(5)
        return before

    before = asyncio.run(run())
    try:
        assert len(before) == 4
        assert _rows(db) == {pseudonymize("recent"), pseudonymize("today")}
        assert "retention of student states runs again" in caplog.text
        assert "deleted 2 student states" in caplog.text
    finally:
        asyncio.run(component.stop())
