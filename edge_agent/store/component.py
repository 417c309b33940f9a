"""The store as a daemon component: the one SQLite database and its outbox, opened first, closed last."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edge_agent.clock_sync import ClockSyncFlag
from edge_agent.config import Config
from edge_agent.lifecycle import Health, HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.store.db import Database
from edge_agent.store.history import History
from edge_agent.store.instance_lock import InstanceLock
from edge_agent.store.outbox import Outbox
from edge_agent.telemetry import metrics
from edge_agent.vision.camera_hours import board_time, board_zone

log = logging.getLogger(__name__)

DISK_REASONS = ("store_error", "queue_full")  # writes the disk refused or could not keep up with

CLOSE_TIMEOUT_S = 5.0
STALL_REPORT_S = 5.0  # a write waiting this long on the disk makes the store unhealthy (answers get 503)


class StoreComponent:
    """Essential: without a writable database nothing the board measures could be kept."""

    name = "store"
    essential = True

    def __init__(
        self,
        config: Config,
        *,
        heartbeats: HeartbeatRegistry,
        live: LiveBoard | None = None,
        clock_synced: Callable[[], bool] | None = None,
    ) -> None:
        self.db = Database(config.database_path, config.store, heartbeats)
        # whether the board's clock is known to be right: what the outbox stamps its rows with, and what the
        # health summary, the heartbeat and edge_clock_synchronised say
        self.clock_synced = clock_synced or ClockSyncFlag()
        self.outbox = Outbox(
            self.db, config.device, config.store, config.mqtt, clock_synced=self.clock_synced
        )
        # the teacher view's recent windows, kept across restarts
        self.history = History(self.db, clock_synced=self.clock_synced)
        self._instance = InstanceLock(config.database_path.with_name("edge-agent.lock"))
        self._live = live
        self.alert: str | None = None
        self._zone = board_zone(config.device.timezone)  # None: the system's, looked up when shown
        self._open = False
        # read at each scrape (the flag looks at most once a minute)
        metrics.CLOCK_SYNCHRONISED.set_function(lambda: 1.0 if self.clock_synced() else 0.0)

    async def start(self) -> None:
        await asyncio.to_thread(self._instance.acquire)
        try:
            report = await asyncio.to_thread(self.db.open)
        except BaseException:
            self._instance.release()
            raise
        self._open = True
        if report.alert:
            # The daemon keeps running on a fresh database; the alert stays visible until restart.
            # db.open already counted it as ALERTS{kind="store_corrupt"}.
            self.alert = report.alert
        recovered = await asyncio.to_thread(self.outbox.open)
        self.history.prune()
        log.info("store open: %s (%s messages to resend after the last stop)", report.path, recovered)

    async def stop(self) -> None:
        if not self._open:
            return
        try:
            # what the disk refused until now: tried once more, and what it still refuses is counted and said
            await asyncio.to_thread(self.outbox.close)
            flushed = await asyncio.to_thread(self.db.close, CLOSE_TIMEOUT_S)
        finally:  # also when the daemon's stop budget ends this wait (the process leaves next)
            self._open = False
            self._instance.release()
        if not flushed:
            log.error("store: pending writes did not finish within %s s", CLOSE_TIMEOUT_S)

    def health(self) -> Health:
        if not self._open or not self.db.is_open:
            return Health(False, "database is not open")
        if self.alert:
            return Health(False, self.alert)
        failing = self.db.write_failure()
        held = self.outbox.held
        kept = f"; {held} message{'' if held == 1 else 's'} kept in memory until the disk takes them"
        kept = kept if held else ""
        if failing is not None:
            # in the board's zone, as every other time on the teacher view (the OS zone, UTC on most
            # boards, put it 8 h off in Beijing, unlabelled)
            since = f"{board_time(self._zone, failing[0]):%Y-%m-%d %H:%M %Z}"
            return Health(False, f"writes fail since {since}: {failing[1]}{kept}")
        waiting, what = max((self.db.write_waiting_s(), "write"), (self.db.read_waiting_s(), "read"))
        if waiting >= STALL_REPORT_S:
            return Health(False, f"a database {what} has waited {waiting:.0f} s for the disk: it is slow or "
                                 "stalled (a worn SD card or eMMC, or heavy writes by another program)")
        status = self.outbox.status()
        detail = f"{status['backlog']} message{'' if status['backlog'] == 1 else 's'} waiting{kept}"
        # a full disk is no limit (a review: "23 dropped by limits (store_error=23)")
        for said, reasons in (("dropped by limits", lambda k: k not in DISK_REASONS),
                              ("lost to the disk", lambda k: k in DISK_REASONS)):
            counts = {k: v for k, v in status["drops"].items() if v and reasons(k)}
            if counts:
                listed = ", ".join(f"{k}={v}" for k, v in counts.items())
                detail += f"; {sum(counts.values())} {said} ({listed})"
        return Health(True, detail)
