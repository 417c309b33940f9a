"""The durable outbox: messages waiting for the broker's acknowledgement, with limits and drop counting.

All changes run on the database's writer thread (:meth:`Database.write`), so the in-memory totals below
are only touched there. Each message gets a per-device sequence number allocated in the same transaction
as its row: a committed row always has a seq, an uncommitted one never consumed one, so the receiver can
treat any hole in the sequence as a real loss (a drop, counted here) and never as a crash artefact.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from edge_agent.config import DeviceSettings, MqttSettings, StoreSettings
from edge_agent.errors import InputRejected, StoreError, StoreLockedError
from edge_agent.store import outbox_state as rules
from edge_agent.store.db import STORAGE_FAILURES, Database, StoreQueueFull, set_meta
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)
DROP_LOG_EVERY_S = 3600.0

T = TypeVar("T")
U = TypeVar("U")

STREAM_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_STREAMS = frozenset({"cmd", "status", "heartbeat"})
MAX_PAYLOAD_BYTES = 128 * 1024
EXPIRE_INTERVAL_S = 60.0
_COLUMNS = (
    "id, seq, message_id, stream, topic, payload, created_at, expires_at, attempts, bytes, "
    "clock_unsynced IS NULL"
)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    seq: int
    message_id: str
    stream: str
    topic: str
    payload: str
    created_at: float
    expires_at: float | None
    attempts: int
    bytes: int
    clock_synced: bool = True  # False: queued while the clock was not known right (its created_at may be off)


def topic_prefix(device: DeviceSettings) -> str:
    return f"edge/{device.tenant}/{device.site}/{device.device_id}"


def chain(inner: Future[T], transform: Callable[[T], U]) -> Future[U]:
    """A future resolved with ``transform(inner.result())`` (run on the thread that resolves ``inner``).

    Not cancellable: the write is queued and runs anyway, so a caller that stops waiting (asyncio.wait_for
    cancels what it waits on) must not turn it into "cancelled" and break the callbacks that count it."""
    outer: Future[U] = Future()
    outer.set_running_or_notify_cancel()

    def done(f: Future[T]) -> None:
        try:
            outer.set_result(transform(f.result()))
        except BaseException as exc:
            outer.set_exception(exc)

    inner.add_done_callback(done)
    return outer


# How long a message waits for a database another program holds (see enqueue)
LOCKED_RETRY_S = 600.0
# Messages the disk refuses (full, read-only, held past LOCKED_RETRY_S) are kept in memory up to this many
# bytes of payload and tried again every HELD_RETRY_S: 4 MiB is about 30 hours of the default windows
# (an attention window a minute, ~0.6 KB; a lesson window every 5 minutes, ~8 KB)
HELD_MAX_BYTES = 4 * 1024 * 1024
HELD_RETRY_S = 30.0


@dataclass
class _Message:
    """One enqueue on its way to the file: tried now, or kept in memory while the disk refuses it."""

    stream: str
    insert: Callable[[sqlite3.Connection], tuple[int, dict[str, int]]]
    result: Future[int]
    size: int
    locked_until: float


class Outbox:
    def __init__(
        self,
        db: Database,
        device: DeviceSettings,
        settings: StoreSettings,
        mqtt: MqttSettings,
        *,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
        priority_streams: frozenset[str] = rules.PRIORITY_STREAMS,
        held_max_bytes: int = HELD_MAX_BYTES,
    ) -> None:
        self.db = db
        # Rows age out only while the board's clock is known to be right (the daemon: ClockSyncFlag): a
        # clock set wrongly ahead (a bad RTC) would otherwise delete the backlog it then holds.
        self._clock_synced = clock_synced
        self.device = device
        self.settings = settings
        self.mqtt = mqtt
        self._clock = clock
        self._priority = priority_streams
        self._prefix = topic_prefix(device)
        # Totals kept by the writer thread only, so that status() never reads the file: a stalled disk
        # blocked the event loop in it (health every few seconds) and with it every answer.
        self._rows = 0
        self._bytes = 0
        self._oldest: float | None = None  # created_at of the oldest row
        self._last_seq = 0  # the newest message's seq (0: none yet): the heartbeat says it
        self._drops: dict[str, int] = {}  # persisted totals by reason; replaced whole, never changed in place
        # Losses the writer could not count as they happened (a full write queue, a failed write): in
        # status() at once, in the file with the next write that commits. Any thread adds; under the lock.
        self._unstored: collections.Counter[str] = collections.Counter()
        self._saving_unstored = False
        self._unstored_lock = threading.Lock()
        # monotonic: on the wall clock, one stepped back (NTP after an RTC ahead) stopped an offline board,
        # whose only expiry runs here on enqueue, ageing rows out until it caught up again
        self._last_expire = -float("inf")
        # drops not yet in the log, and when it last said some: one line per DROP_LOG_EVERY_S, not per write
        self._unlogged_drops: collections.Counter[str] = collections.Counter()
        self._drops_logged = -float("inf")
        self.new_rows = threading.Event()  # set on enqueue and release: the publisher has work
        # Refused by the disk, oldest first, and those queued behind them (the cloud gets them in order);
        # any thread, under the lock. _trying: one of them is being tried (taken off the deque meanwhile).
        self._held: collections.deque[_Message] = collections.deque()
        self._held_bytes = 0
        self._held_max_bytes = held_max_bytes
        self._trying = False
        self._held_lock = threading.Lock()
        self._held_timer: threading.Timer | None = None
        self._closed = False

    # -- start-up ------------------------------------------------------------------------------------

    def open(self, timeout: float = 30.0) -> int:
        """Return rows left in flight by a crash to pending and load totals; returns how many came back."""

        def recover(conn: sqlite3.Connection) -> int:
            cur = conn.execute("UPDATE outbox SET state = ? WHERE state = ?", (rules.PENDING, rules.INFLIGHT))
            self._recount(conn)
            return cur.rowcount

        recovered = self.db.write(recover).result(timeout)
        if recovered:
            log.info("outbox: %s messages were in flight at the last stop and will be sent again", recovered)
        self.new_rows.set()
        self.refresh_metrics()
        return recovered

    def _recount(self, conn: sqlite3.Connection) -> None:
        rows, total, oldest = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), min(created_at) FROM outbox"
        ).fetchone()
        self._rows, self._bytes = int(rows), int(total)
        self._oldest = None if oldest is None else float(oldest)
        self._drops = _drop_totals(conn)
        self._last_seq = _stored_next_seq(conn) - 1

    def topic(self, stream: str) -> str:
        return f"{self._prefix}/{stream}"

    # -- enqueue -------------------------------------------------------------------------------------

    def enqueue(
        self,
        stream: str,
        payload: dict[str, Any],
        expires_at: float | None = None,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> Future[int]:
        """Queue ``payload`` durably for ``stream``; the future gives its seq once committed. ``also`` runs
        in the same transaction (a sender's record that this payload is queued: both or neither).

        Raises InputRejected at once for a bad stream name, a payload that is not JSON, or one too large.
        """
        if not STREAM_RE.match(stream) or stream in RESERVED_STREAMS:
            raise self._refused(f"outbox stream name {stream!r} is not allowed", "stream")
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise self._refused(f"outbox payload for {stream!r} is not plain JSON: {exc}", "payload") from exc
        size = len(text.encode("utf-8"))
        if size > MAX_PAYLOAD_BYTES:
            raise self._refused(f"outbox payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}", "payload")
        # No expiry by default: a row waits store.max_age_days here (60). Releases before 2026-12-01 set
        # mqtt.message_expiry_days (30) here too, which deleted a board's backlog after 30 days offline.
        now = self._clock()

        def insert(conn: sqlite3.Connection) -> tuple[int, dict[str, int]]:
            seq = _next_seq(conn)
            # asked on the writer thread: chronyd may be asked (UDP, a timeout)
            unsynced = None if self._clock_synced() else 1
            conn.execute(
                "INSERT INTO outbox (message_id, seq, stream, topic, payload, created_at, expires_at, "
                "attempts, state, bytes, clock_unsynced) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (uuid.uuid4().hex, seq, stream, self.topic(stream), text, now, expires_at,
                 rules.PENDING, size, unsynced),
            )
            if also is not None:
                also(conn)
            self._last_seq = seq  # a batch rolled back is counted again (_recount)
            self._rows += 1
            self._bytes += size
            self._oldest = now if self._oldest is None else min(self._oldest, now)
            drops = self._enforce_limits(conn)
            if time.monotonic() - self._last_expire > EXPIRE_INTERVAL_S:
                self._last_expire = time.monotonic()
                for reason, n in self._expire(conn, now).items():
                    drops[reason] = drops.get(reason, 0) + n
            return seq, drops

        result: Future[int] = Future()
        result.set_running_or_notify_cancel()
        message = _Message(stream, insert, result, size, time.monotonic() + LOCKED_RETRY_S)
        with self._held_lock:
            behind = bool(self._held) or self._trying
            kept = behind and self._keep(message, front=False)  # after those the disk refused: in order
        if not behind:
            self._attempt(message, said=False)
        elif not kept:
            self._lose("store_error")
            result.set_exception(StoreError(
                f"the disk refuses writes and {self._held_max_bytes // 1024} KiB of messages already wait "
                "in memory; this one is lost (free space on the state directory's disk)"))
        return result

    def _attempt(self, message: _Message, *, said: bool, held: bool = False) -> None:
        def settled(future: Future[int]) -> None:
            error = future.exception()
            # Held by another program (a sqlite3 shell's transaction): tried again, each try waiting the
            # busy timeout, instead of losing a class's window for good (a review: 5 lost to a 30-s lock)
            if isinstance(error, StoreLockedError) and time.monotonic() < message.locked_until:
                if not said:
                    log.warning("outbox: the %s message waits for the database: %s", message.stream, error)
                self.db.write(self._recount)
                self._attempt(message, said=True, held=held)
                return
            if isinstance(error, (*STORAGE_FAILURES, StoreQueueFull)):
                # A full or read-only disk, a lock past LOCKED_RETRY_S or a full write queue: kept in memory
                # and tried again, where it was lost at once before 2026-12-04 (a review: the lesson and
                # attention windows of a full disk's hours, "lost to the disk")
                if not isinstance(error, StoreQueueFull):
                    self.db.write(self._recount)  # the batch rolled back after the totals moved
                with self._held_lock:
                    if held:
                        self._trying = False
                    kept = self._keep(message, front=held, error=error)
                if kept:
                    return
            self._on_enqueued(future, message.stream)
            if error is None:
                message.result.set_result(future.result())
            else:
                message.result.set_exception(error)
            if held:
                with self._held_lock:
                    self._trying = False
                    if error is not None:  # the next at the next retry: at once, a chain of refusals
                        self._schedule_retry()  # recursed through every message (RecursionError)
                if error is None:
                    self._try_held(after_success=True)

        # One kept in memory is tried in a transaction of its own: refused again, it would take down the
        # writes batched with it, the acks that free the room it waits for among them
        chain(self.db.write(message.insert, alone=held), self._after_write).add_done_callback(settled)

    def _keep(self, message: _Message, *, front: bool, error: BaseException | None = None) -> bool:
        """Under the held lock: ``message`` into memory to be tried again, at the front (one that was
        kept already) or the back (False: there is no room, or the outbox is closing; it is lost)."""
        if self._closed or (not front and self._held_bytes + message.size > self._held_max_bytes):
            return False
        if not front and not self._held and error is not None:
            log.warning("outbox: the disk refused the %s message (%s); it and those after it are kept in "
                        "memory (up to %d KiB) and written once the disk takes them; a stop or a power cut "
                        "before then loses them", message.stream, error, self._held_max_bytes // 1024)
        if front:
            self._held.appendleft(message)
        else:
            self._held.append(message)
        self._held_bytes += message.size
        self._schedule_retry()
        return True

    def _schedule_retry(self) -> None:
        """Under the held lock: the next try of the oldest kept message in HELD_RETRY_S."""
        if self._held and self._held_timer is None and not self._trying and not self._closed:
            self._held_timer = threading.Timer(HELD_RETRY_S, self._try_held)
            self._held_timer.daemon = True
            self._held_timer.start()

    def _try_held(self, *, after_success: bool = False) -> None:
        """The oldest message kept in memory, tried again (each success tries the next at once)."""
        with self._held_lock:
            self._held_timer = None
            if self._closed or self._trying or not self._held:
                if after_success and not self._held and not self._closed:
                    log.info("outbox: the messages kept in memory while the disk refused them are stored")
                return
            message = self._held.popleft()
            self._held_bytes -= message.size
            self._trying = True
        message.locked_until = time.monotonic() + LOCKED_RETRY_S
        try:
            self._attempt(message, said=True, held=True)
        except BaseException:  # never left "trying" with nothing tried: nothing would be written again
            with self._held_lock:
                self._trying = False
                self._keep(message, front=True)
            raise

    def close(self, timeout: float = 3.0) -> int:
        """At stop, before the database closes: the messages still kept in memory are tried once more, in
        order (the disk may have been freed since the last try: a review lost 21 to a stop right after
        IT freed space), and those the disk still refuses are lost, counted in the file and said. Returns
        how many were lost."""
        deadline = time.monotonic() + timeout
        with self._held_lock:
            self._closed = True
            if self._held_timer is not None:
                self._held_timer.cancel()
                self._held_timer = None
        self._wait(lambda: not self._trying, deadline)  # the one being tried settles first
        with self._held_lock:
            waiting, self._held = list(self._held), collections.deque()
            self._held_bytes = 0
        stored = 0
        for message in waiting:
            try:
                seq = chain(self.db.write(message.insert, alone=True), self._after_write).result(
                    max(0.0, deadline - time.monotonic()))
            except Exception:  # the disk refuses still (or the time is up): this one and the rest are lost
                break
            message.result.set_result(seq)
            stored += 1
        lost = waiting[stored:]
        if stored:
            self.new_rows.set()
            log.info("outbox: %d messages kept in memory while the disk refused them are stored", stored)
        if lost:
            self._lose("store_error", len(lost))
            for message in lost:
                message.result.set_exception(StoreError("the daemon stopped before the disk took it"))
        self._wait(self._counts_saved, deadline)  # in the file before the database closes
        if lost:
            with self._unstored_lock:
                unsaved = sum(self._unstored.values())
            # round 3: "counted" was said when the full disk had refused the count too: the cloud then saw
            # no gap (no seq was used) and no count
            log.error("outbox: %d messages kept in memory while the disk refused them are lost with this "
                      "stop (%s)", len(lost), "counted as store_error" if not unsaved else
                      "the disk refused their count too: neither the heartbeat nor doctor will show them")
        return len(lost)

    @staticmethod
    def _wait(condition: Callable[[], bool], deadline: float) -> None:
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _counts_saved(self) -> bool:
        with self._unstored_lock:
            saving, left = self._saving_unstored, bool(self._unstored)
        if left and not saving:
            self._save_unstored()  # a save of earlier losses was under way when these were counted
            return False
        return not left and not saving

    def _refused(self, message: str, field: str) -> InputRejected:
        """Counted like every other loss (no seq is used, so the cloud sees no gap for it)."""
        self._lose("rejected")
        log.warning("outbox: refused a message: %s", message)
        return InputRejected(message, field=field)

    def _on_enqueued(self, future: Future[int], stream: str) -> None:
        error = future.exception()
        if error is None:
            self.new_rows.set()
            return
        if isinstance(error, StoreQueueFull):  # refused before touching anything
            self._lose("queue_full")
        else:  # the batch rolled back (e.g. a full disk) after our totals moved: count again from the file
            self._lose("store_error")
            self.db.write(self._recount)
        log.warning("outbox: a %s message was not stored: %s", stream, error)

    def _lose(self, reason: str, count: int = 1) -> None:
        """Count messages lost before the writer could count them with its own change."""
        metrics.OUTBOX_DROPS.labels(reason=reason).inc(count)
        with self._unstored_lock:
            self._unstored[reason] += count
        self._save_unstored()

    def _save_unstored(self) -> None:
        """Add the uncounted losses to the file; kept in memory until that commits (a full queue or disk
        refuses this write too: the next write that commits tries again)."""
        with self._unstored_lock:
            if self._saving_unstored or not self._unstored:
                return
            self._saving_unstored = True
            counts = collections.Counter(self._unstored)

        moved = threading.Event()  # run() took the counts out of memory (a refused write never runs it)

        def run(conn: sqlite3.Connection) -> None:
            for reason, n in counts.items():
                _add_drops(conn, reason, n)
            # Moved from memory to the totals at once, as the file has them: a _recount later in the same
            # batch reads them too, and adding the counts again once committed counted them twice.
            totals = _drop_totals(conn)
            with self._unstored_lock:
                self._drops = totals
                self._unstored -= counts
            moved.set()

        def saved(future: Future[None]) -> None:
            rolled_back = future.exception() is not None and moved.is_set()
            with self._unstored_lock:
                self._saving_unstored = False
                if rolled_back:  # back in memory; the totals are read again from the file
                    self._unstored += counts
            if rolled_back:
                self.db.write(self._recount)

        self.db.write(run).add_done_callback(saved)

    def _after_write(self, result: tuple[T, dict[str, int]]) -> T:
        value, drops = result
        for reason, n in drops.items():
            if n:
                metrics.OUTBOX_DROPS.labels(reason=reason).inc(n)
                self._unlogged_drops[reason] += n
        # A full outbox drops on every write: the term audit counted 470 such log lines a day.
        if self._unlogged_drops and time.monotonic() - self._drops_logged >= DROP_LOG_EVERY_S:
            self._drops_logged = time.monotonic()
            log.warning("outbox: dropped %s messages since the last report (%s); edge-agent doctor shows the "
                        "totals", sum(self._unlogged_drops.values()),
                        ", ".join(f"{k} {v}" for k, v in sorted(self._unlogged_drops.items())))
            self._unlogged_drops.clear()
        self.refresh_metrics()
        if self._unstored:  # this write committed: the disk takes writes again
            self._save_unstored()
        return value

    def _enforce_limits(self, conn: sqlite3.Connection) -> dict[str, int]:
        max_rows, max_bytes = self.settings.max_rows, self.settings.max_bytes
        if self._rows <= max_rows and self._bytes <= max_bytes:
            return {}
        drops: dict[str, int] = {}
        for keep_last in (False, True):  # aggregates first, then the streams kept longest
            over = max(self._rows - max_rows, 1)
            plan = rules.plan_drops(self._rows, self._bytes, max_rows, max_bytes,
                                    self._candidates(conn, keep_last, over + 64))
            self._delete_dropped(conn, plan, drops)
            if self._rows <= max_rows and self._bytes <= max_bytes:
                break
        return drops

    def _candidates(self, conn: sqlite3.Connection, priority: bool, limit: int) -> list[rules.DropCandidate]:
        marks = ",".join("?" * len(self._priority)) or "''"
        negate = "" if priority else "NOT"
        rows = conn.execute(
            f"SELECT id, bytes, stream FROM outbox WHERE state = ? AND stream {negate} IN ({marks}) "
            "ORDER BY id LIMIT ?",
            (rules.PENDING, *sorted(self._priority), limit),
        ).fetchall()
        return [rules.DropCandidate(int(i), int(b), str(s)) for i, b, s in rows]

    def _delete_dropped(
        self, conn: sqlite3.Connection, plan: list[tuple[int, str]], drops: dict[str, int]
    ) -> None:
        if not plan:
            return
        ids = [row_id for row_id, _ in plan]
        self._delete(conn, ids)
        for _, reason in plan:
            drops[reason] = drops.get(reason, 0) + 1
        for reason in {r for _, r in plan}:
            self._count_drop(conn, reason, sum(1 for _, r in plan if r == reason))

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> int:
        deleted = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            n, size = conn.execute(
                f"SELECT count(*), coalesce(sum(bytes), 0) FROM outbox WHERE id IN ({marks})", chunk
            ).fetchone()
            conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            self._rows -= int(n)
            self._bytes -= int(size)
            deleted += int(n)
        if deleted:
            oldest = conn.execute("SELECT min(created_at) FROM outbox").fetchone()[0]  # indexed
            self._oldest = None if oldest is None else float(oldest)
        return deleted

    def _count_drop(self, conn: sqlite3.Connection, reason: str, n: int) -> None:
        _add_drops(conn, reason, n)
        self._drops = self._drops | {reason: self._drops.get(reason, 0) + n}

    # -- expiry --------------------------------------------------------------------------------------

    def expire(self) -> Future[int]:
        """Delete pending rows past their expiry or older than max_age_days; gives how many went."""
        now = self._clock()

        def run(conn: sqlite3.Connection) -> tuple[int, dict[str, int]]:
            self._last_expire = time.monotonic()
            drops = self._expire(conn, now)
            return sum(drops.values()), drops

        return chain(self.db.write(run), self._after_write)

    def _expire(self, conn: sqlite3.Connection, now: float) -> dict[str, int]:
        if not self._clock_synced():
            return {}  # the row and size limits still bound the disk
        max_age_s = self.settings.max_age_days * 86400.0
        drops: dict[str, int] = {}
        for reason, where, arg in (
            ("expired", "expires_at IS NOT NULL AND expires_at <= ?", now),
            ("max_age", "created_at < ?", now - max_age_s),
        ):
            # Rows stamped before the clock was set keep going until sent (or pushed out by the limits), and
            # so do rows queued while it was not known to be right: a board booted on the time saved 70
            # days before, then NTP stepped it, and 5 rows seconds old went as max_age.
            # "+state": not through the state index, which walked every unsent row (243-293 ms a minute at
            # 500,000, answers waiting) where the time indexes read only the rows due (0.1 ms).
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM outbox WHERE +state = ? AND {where} AND created_at >= ? "
                "AND clock_unsynced IS NULL",
                (rules.PENDING, arg, rules.CLOCK_FLOOR),
            )]
            if ids:
                self._delete(conn, ids)
                self._count_drop(conn, reason, len(ids))
                drops[reason] = len(ids)
        return drops

    def clock_synced(self) -> bool:
        """Whether the board's clock is known to be right now (the flag rows are stamped with)."""
        return self._clock_synced()

    # -- publishing ----------------------------------------------------------------------------------

    def claim(self, limit: int) -> Future[list[OutboxRow]]:
        """Mark up to ``limit`` of the oldest pending rows in flight and return them."""

        def run(conn: sqlite3.Connection) -> list[OutboxRow]:
            rows = [
                OutboxRow(*r)
                for r in conn.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY id LIMIT ?",
                    (rules.PENDING, limit),
                )
            ]
            for start in range(0, len(rows), 500):
                chunk = [r.id for r in rows[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"UPDATE outbox SET state = ?, attempts = attempts + 1 WHERE id IN ({marks})",
                    (rules.INFLIGHT, *chunk),
                )
            return rows

        return self.db.write(run)

    def ack(self, ids: list[int]) -> Future[int]:
        """The broker acknowledged these rows: delete them (the outbox is the MQTT session), pending ones too:
        a PUBACK that raced a disconnect finds its row back in pending, and the broker has the message."""

        def run(conn: sqlite3.Connection) -> int:
            return self._delete(conn, ids)

        future = self.db.write(run)
        future.add_done_callback(lambda _f: self.refresh_metrics())
        return future

    def discard(self, ids: list[int], reason: str) -> Future[int]:
        """Drop rows that can never be delivered (larger than the broker takes), counted under ``reason``."""

        def run(conn: sqlite3.Connection) -> tuple[int, dict[str, int]]:
            drops: dict[str, int] = {}
            self._delete_dropped(conn, [(i, reason) for i in ids], drops)
            return len(ids), drops

        return chain(self.db.write(run), self._after_write)

    def release(self, ids: list[int] | None = None) -> Future[int]:
        """Return in-flight rows (all when ``ids`` is None) to pending, e.g. after a lost connection."""

        def run(conn: sqlite3.Connection) -> int:
            if ids is None:
                return conn.execute(
                    "UPDATE outbox SET state = ? WHERE state = ?", (rules.PENDING, rules.INFLIGHT)
                ).rowcount
            total = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                total += conn.execute(
                    f"UPDATE outbox SET state = ? WHERE state = ? AND id IN ({marks})",
                    (rules.PENDING, rules.INFLIGHT, *chunk),
                ).rowcount
            return total

        future = self.db.write(run)
        future.add_done_callback(lambda _f: self.new_rows.set())
        return future

    # -- status --------------------------------------------------------------------------------------

    def drop_counts(self) -> dict[str, int]:
        """Every loss since the store was created (a damaged database's successor carries them on), by
        reason: those in the file and those not yet."""
        with self._unstored_lock:
            return dict(collections.Counter(self._drops) + self._unstored)

    def refresh_metrics(self) -> None:
        metrics.OUTBOX_BACKLOG.set(self._rows)
        metrics.OUTBOX_BYTES.set(self._bytes)

    def status(self) -> dict[str, Any]:
        """Backlog, bytes, age of the oldest row and drops by reason (persisted across restarts), as the
        writer thread last counted them: no read of the file, so no wait on the disk."""
        oldest = self._oldest
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        metrics.OUTBOX_OLDEST_AGE.set(age or 0.0)
        self.refresh_metrics()
        return {"backlog": self._rows, "bytes": self._bytes, "oldest_age_s": age, "drops": self.drop_counts(),
                "held": self.held, "last_seq": self._last_seq}

    @property
    def held(self) -> int:
        """Messages kept in memory while the disk refuses them."""
        with self._held_lock:
            return len(self._held) + self._trying

    @property
    def backlog(self) -> int:
        return self._rows


def _add_drops(conn: sqlite3.Connection, reason: str, n: int) -> None:
    conn.execute(
        "INSERT INTO drop_counters (reason, count) VALUES (?, ?) "
        "ON CONFLICT(reason) DO UPDATE SET count = count + excluded.count",
        (reason, n),
    )


def _drop_totals(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(r): int(n) for r, n in conn.execute("SELECT reason, count FROM drop_counters")}


def _stored_next_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    return int(row[0]) if row else 1


def _next_seq(conn: sqlite3.Connection) -> int:
    seq = _stored_next_seq(conn)
    set_meta(conn, "next_seq", str(seq + 1))
    return seq

