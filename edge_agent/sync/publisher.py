"""Drains the outbox to the broker: the outbox is the MQTT session.

One thread owns everything here: it connects (with exponential backoff and jitter), claims pending rows,
publishes them QoS 1 with at most ``inflight_max`` messages unacknowledged, and deletes a row only when
its PUBACK arrives. When the connection drops, rows in flight return to pending and are sent again on the
next connection; the receiver deduplicates them by their ids within a store (docs/sync-protocol.md).
Every wait is bounded, the wait for a PUBACK too (PUBACK_KEEPALIVES).
"""

from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from edge_agent import __build__, __version__
from edge_agent.config import DeviceSettings, MqttSettings
from edge_agent.errors import StoreError, SyncError
from edge_agent.lifecycle import Heartbeat, HeartbeatRegistry
from edge_agent.store import outbox_state as rules
from edge_agent.store.outbox import Outbox, OutboxRow, topic_prefix
from edge_agent.sync.commands import CommandDispatcher
from edge_agent.sync.message_size import STALLED_S, MessageSizer
from edge_agent.sync.mqtt import (
    SIZE_REFUSALS,
    MqttConnection,
    SyncConnectError,
    SyncPublishError,
    address_count,
    connect_allowance_s,
)
from edge_agent.sync.protocol import (
    UNSYNCED_FIELD,
    Envelope,
    Item,
    backoff_delay,
    encode_message,
)
from edge_agent.telemetry import metrics
from edge_agent.vision.camera_hours import board_clock, zone_name

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 10.0
DRAIN_ON_STOP_S = 2.0
SETTLE_S = 2.0  # after a refused message, the wait for the PUBACKs of the rest of the window
# No PUBACK for this many keepalives while messages are in flight: the broker is not acknowledging. Over a
# link too slow for the messages paho cuts the session after two (its PINGREQ waits behind them); past
# that, its PINGRESPs came back, so the broker has the messages and did not answer them.
PUBACK_KEEPALIVES = 3
EXPIRE_EVERY_S = 60.0
HEARTBEAT_NAME = "mqtt-publisher"
COMMAND_REPLY_GAP_S = 1.0  # a heartbeat answers each command at once, but at most one a second
STABLE_SESSION_S = 30.0  # a session that ended sooner counts as a failed connection for the backoff
# Sessions the broker ended in a row, every reconnect accepted: two boards with one device id (a cloned SD
# card) take each other's session at every connect, and the log said only "Unspecified error" (a review).
# The backoff stays as it is: one board soon waits backoff_max_s between its tries, and a Wi-Fi link that
# drops every few minutes must still reconnect at once.
TAKEN_OVER_HINT_AFTER = 5
T = TypeVar("T")

ConnectionFactory = Callable[..., MqttConnection]
# The board receives commands alone: the largest its client takes from the broker (MQTT 5). A command over
# commands.MAX_COMMAND_BYTES is refused, and the cloud told, up to this size; a larger one the broker drops
# (a review: a 64 MiB message was read whole before the size check, and the daemon's peak memory went from
# 128 MB to 335 MB, over the fleet's 300 MB alert)
COMMANDS_RECEIVED_MAX = 1024 * 1024


class BrokerNotAcknowledging(SyncError):
    """The broker answers keepalives but acknowledged no message for PUBACK_KEEPALIVES of them."""


def mqtt_expiry_s(rows: list[OutboxRow], now: float, message_expiry_days: float) -> float:
    """How long the broker may hold a message: ``mqtt.message_expiry_days`` from its sending (a backlog
    sent after weeks offline gets the whole time, not what is left of it), or less where a row was queued
    with an expiry of its own."""
    own = [r.expires_at - now for r in rows if r.expires_at is not None]
    return max(1.0, min([message_expiry_days * 86400.0, *own]))


@dataclass
class _Message:
    stream: str
    row_ids: list[int]
    size: int
    sent_at: float  # monotonic


class Publisher:
    def __init__(
        self,
        outbox: Outbox,
        device: DeviceSettings,
        settings: MqttSettings,
        *,
        commands: CommandDispatcher | None = None,
        health_summary: Callable[[], dict[str, Any]] | None = None,
        heartbeats: HeartbeatRegistry | None = None,
        connection_factory: ConnectionFactory = MqttConnection,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.device = device
        self.settings = settings
        # in every heartbeat: a restart shows as a new one (and a smaller uptime_s); moved with the clock
        # when it steps, as NTP's first sync after a boot without a clock does (a review: a board up for a
        # minute said it had run 62 h, with clock_synced true)
        self._started_at, self._started_mono = time.time(), time.monotonic()
        # the system's zone (no device.timezone) is looked up at each heartbeat, as the camera's hours do:
        # read once, a `timedatectl set-timezone` under a running board sent the old zone until a restart
        self._local_now = board_clock(device.timezone)
        self._commands = commands
        self._health_summary = health_summary
        self._heartbeats = heartbeats
        self._beat: Heartbeat | None = None
        self._factory = connection_factory
        self._rng = rng or random.Random()
        self._prefix = topic_prefix(device)
        self._inflight: dict[int, _Message] = {}
        self._unsent: collections.deque[tuple[str, list[OutboxRow]]] = collections.deque()
        self._acked: list[int] = []
        self._ack_failures: list[str] = []
        self._more_pending = True
        self._sizer = MessageSizer(settings.max_message_bytes)
        self._refused: _Message | None = None  # refused as too large this session
        self._last_ack_at = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # what the first attempt says while it waits (a slow DNS: 53 s of "not started" in a review)
        self._state: dict[str, Any] = {"connected": False, "last_success": None,
                                       "detail": "connecting (the first attempt since the start)"}
        self._next_heartbeat = 0.0
        self._last_heartbeat = -COMMAND_REPLY_GAP_S  # monotonic
        self._next_expire = 0.0
        self._lost_in_a_row = 0  # sessions the broker ended, every reconnect between them accepted
        self._takeover_said = False

    # -- thread management ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise SyncError("the publisher is already running")
        if self._heartbeats is not None:
            # A connect attempt takes up to connect_allowance_s; _connect widens it for a many-address host
            self._beat = self._heartbeats.register(HEARTBEAT_NAME, connect_allowance_s(self.settings, 1))
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the loop to finish (drain in-flight acks briefly, say offline); False if it did not in time."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        if self._heartbeats is not None:
            self._heartbeats.unregister(HEARTBEAT_NAME)
        return thread is None or not thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)

    def _beat_now(self) -> None:
        if self._beat is not None:
            self._beat.beat()

    # -- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            self._beat_now()
            if not first:
                metrics.MQTT_RECONNECTS.inc()
            first = False
            try:
                conn = self._connect()
            except (SyncError, StoreError) as exc:
                delay = self._backoff(attempt)
                if attempt == 0 and not self._stop.is_set():  # not "stopped while connecting" at a stop
                    # neutral: the reason may be on the board (its certificate unreadable), not the broker
                    log.warning("cannot connect to the MQTT broker: %s; retrying with backoff", exc)
                self._set(connected=False, detail=str(exc))
                self._lost_in_a_row = 0  # a broker out of reach is not a session taken by another client
                attempt += 1
                self._sleep(delay)
                continue
            connected_at = time.monotonic()
            log.info("connected to MQTT broker %s:%s", self.settings.host, self.settings.port)
            metrics.MQTT_CONNECTED.set(1)
            self._set(connected=True, detail="connected")
            ended: BaseException | None = None
            try:
                self._session(conn)
                self._drain(conn)
                conn.disconnect()
            except (SyncError, StoreError) as exc:
                ended = exc
                log.warning("MQTT session ended: %s", exc)
                self._set(detail=str(exc) or exc.__class__.__name__)
                conn.close()
                if isinstance(exc, SyncError) and not isinstance(exc, BrokerNotAcknowledging):
                    self._shrink_messages_if_stalled()  # a slow uplink; not a broker that does not answer
            except Exception as exc:  # a bug must not silently end syncing: log it, reconnect
                log.exception("MQTT publisher failed unexpectedly")
                self._set(detail=f"internal error: {exc!r}")
                conn.close()
                self._sleep(self.settings.backoff_min_s)
            finally:
                metrics.MQTT_CONNECTED.set(0)
                self._set(connected=False)
                self._release_all()
            # A broker that accepts and then cuts the session at once (a packet it will not take, an
            # overloaded broker) gets the same backoff as one that refuses: no reconnect storm.
            attempt = self._attempt_after(attempt, time.monotonic() - connected_at, ended)
            if attempt:
                self._sleep(self._backoff(attempt - 1))

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.settings.backoff_min_s, self.settings.backoff_max_s, self._rng)

    def _attempt_after(self, attempt: int, lasted: float, ended: BaseException | None) -> int:
        """The backoff's attempt after a session that lasted ``lasted`` s and ended with ``ended`` (None: a
        clean end): 0 (reconnect at once) after a stable one."""
        lost = isinstance(ended, (SyncConnectError, SyncPublishError)) and not self._stop.is_set()
        self._lost_in_a_row = self._lost_in_a_row + 1 if lost else 0
        if lost:
            self._say_if_taken_over(str(ended))
        return 0 if lasted >= STABLE_SESSION_S else attempt + 1

    def _say_if_taken_over(self, reason: str) -> None:
        """Once: what a session lost again and again likely means. Mosquitto 2.0 closes the old connection
        without a reason (paho: "Unspecified error"), and only its own log says "already connected"."""
        if self._takeover_said:
            return
        device = self.device.device_id
        if "session taken over" in reason.lower():  # MQTT 5 reason 0x8E, from a broker that sends it
            log.warning("the broker gave this board's MQTT session to another client with this device id "
                        "(%s; MQTT reason 0x8E Session taken over): two boards share it (a cloned board?); "
                        "give each board its own device.device_id", device)
        elif self._lost_in_a_row >= TAKEN_OVER_HINT_AFTER:
            log.warning("the broker ended %d MQTT sessions in a row, and accepted every reconnect: another "
                        "client with this device id (%s) may be taking the session (a cloned board?); check "
                        "the broker's log for 'already connected'", self._lost_in_a_row, device)
        else:
            return
        self._takeover_said = True

    def _sleep(self, seconds: float) -> None:
        """Back off without starving the watchdog: a long wait still beats every few seconds."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self._beat_now()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 5.0))

    def _connect(self) -> MqttConnection:
        try:
            return self._connect_once()
        except (SyncError, StoreError):
            raise
        except Exception as exc:  # a bug here ended the thread, and syncing, until the watchdog's restart
            log.exception("MQTT connect failed unexpectedly")
            raise SyncError(f"internal error while connecting: {exc!r}") from exc

    def _connect_once(self) -> MqttConnection:
        # The device id, as the shipped broker config makes it anyway (use_username_as_clientid: the CN)
        conn = self._factory(
            self.settings, self.device.device_id, f"{self._prefix}/status", self._on_ack,
            self._on_message, on_retained=self._on_retained, max_receive_bytes=COMMANDS_RECEIVED_MAX,
        )
        if self._beat is not None:  # one attempt may try every address the broker's name has
            addresses = address_count(self.settings.host, self.settings.port)
            self._beat.max_gap_s = connect_allowance_s(self.settings, addresses)
            self._beat_now()
        try:
            conn.connect(self._stop.is_set)
            if self._commands is not None:
                conn.subscribe(self._commands.topic)
        except BaseException:  # not left open (and online, its status retained) while the next one tries
            conn.close()
            raise
        self._more_pending = True
        self._next_heartbeat = 0.0
        return conn

    def _session(self, conn: MqttConnection) -> None:
        while not self._stop.is_set():
            self._beat_now()
            # Intervals on the monotonic clock: a wall clock stepped back (NTP after a boot in the
            # future) must not stop heartbeats and expiry until it catches up. The heartbeat before the
            # claim, which writes: on a full disk it failed first, ending every session, and the cloud saw
            # the board online without a heartbeat, so without its store's health (a review).
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.settings.heartbeat_s
                self._last_heartbeat = now
                self._send_heartbeat(conn, time.time())
            self._fill_window(conn)
            conn.loop(0.01 if self._inflight else 0.05)
            if self._ack_failures:
                self._settle(conn)
            self._flush_acks()
            self._check_acknowledging(now)
            if now >= self._next_expire:
                self._next_expire = now + EXPIRE_EVERY_S
                self.outbox.expire()

    def _check_acknowledging(self, now: float) -> None:
        """A broker that takes messages and answers pings but acknowledges none (a review: 3 minutes
        "connected" with 47 waiting, no reconnect, until the 24-h backlog alert) ends the session."""
        if not self._inflight:
            return
        waited = now - self._last_ack_at  # since the last PUBACK, or the first message sent after it
        limit = PUBACK_KEEPALIVES * self.settings.keepalive_s
        if waited > limit:
            raise BrokerNotAcknowledging(
                f"the broker answers its keepalives but acknowledged none of the {len(self._inflight)} "
                f"messages in flight for {waited:.0f} s: check the broker (its log, disk and persistence); "
                "they are sent again on the next connection"
            )

    def _settle(self, conn: MqttConnection) -> None:
        """A refused message ends the session (the next one backs off), but the PUBACKs of the others in
        flight are on their way: taken first, for at most SETTLE_S. Else, with a refused message first in
        every window, the accepted ones were sent again at every session and never left the outbox."""
        deadline = time.monotonic() + SETTLE_S
        while self._inflight and time.monotonic() < deadline:
            conn.loop(0.02)

    def _drain(self, conn: MqttConnection) -> None:
        """On a clean stop, send what waits and take the PUBACKs, for at most ``DRAIN_ON_STOP_S``.

        The daemon stops sync after KT and attention, so their last, partial windows are in the outbox
        by now; without this they would wait for the next start (after a weekend, a holiday). Rows
        still unacknowledged at the deadline go back to pending and out at the next start.
        """
        # Always: a command's outcome may still be unsent (a config_reload stops the board within a second
        # of its reply), and the stop itself ends downloads, queued and under way, "not downloaded" in the
        # health this heartbeat carries (sent only after a command within COMMAND_REPLY_GAP_S, it was lost)
        self._send_heartbeat(conn, time.time())
        deadline = time.monotonic() + DRAIN_ON_STOP_S
        while time.monotonic() < deadline:
            self._fill_window(conn)
            if not self._inflight and not self._unsent:
                return
            conn.loop(0.02)
            self._flush_acks()

    # -- sending -------------------------------------------------------------------------------------

    def _fill_window(self, conn: MqttConnection) -> None:
        space = self.settings.inflight_max - len(self._inflight)
        if space <= 0:
            return
        if not self._unsent and (self._more_pending or self.outbox.new_rows.is_set()):
            self.outbox.new_rows.clear()
            limit = space * self.settings.batch_max
            rows = _stored(self.outbox.claim(limit))
            self._more_pending = len(rows) == limit
            self._queue_batches(rows, self._batch_bytes(conn, rows))
        while self._unsent and len(self._inflight) < self.settings.inflight_max:
            stream, rows = self._unsent.popleft()
            self._publish(conn, stream, rows)

    def _batch_bytes(self, conn: MqttConnection, rows: list[OutboxRow]) -> int:
        """How many bytes of rows a message may carry: the uplink's limit, or the broker's less the
        packet's header on the longest topic. The envelope is not counted; a batch it pushes over goes as
        two (``_publish``)."""
        if conn.max_packet_size is None or not rows:
            return self._sizer.limit
        longest = max((r.stream for r in rows), key=len)
        header = conn.packet_bytes(f"{self._prefix}/{longest}", 0, expiry=True)
        return max(1, min(self._sizer.limit, conn.max_packet_size - header))

    def _queue_batches(self, rows: list[OutboxRow], max_bytes: int) -> None:
        by_id = {r.id: r for r in rows}
        sized = [rules.Sized(r.id, r.stream, r.bytes + 96 + (0 if r.clock_synced else len(UNSYNCED_FIELD)))
                 for r in rows]
        for ids in rules.group_batches(sized, self.settings.batch_max, max_bytes):
            batch = [by_id[i] for i in ids]
            self._unsent.append((batch[0].stream, batch))

    def _publish(self, conn: MqttConnection, stream: str, rows: list[OutboxRow]) -> None:
        now = time.time()
        envelope = Envelope(
            self.device.tenant, self.device.site, self.device.device_id, stream, self.outbox.db.store_id
        )
        payload = encode_message(
            envelope, [Item(r.seq, r.message_id, r.created_at, r.payload, r.clock_synced) for r in rows], now
        )
        # The topic of the board as it is now, like the envelope: a row queued before the board was
        # re-provisioned under another id, site or tenant would otherwise go where the payload says it
        # does not belong (the receiver, or the broker's ACL, refuses it).
        topic = f"{self._prefix}/{stream}"
        # Decided on the packet's exact size: the broker's limit counts the header, topic and properties
        # too, and nothing else, so an aggregate it takes is never dropped here.
        packet = conn.packet_bytes(topic, len(payload), expiry=True)
        too_large = conn.max_packet_size is not None and packet > conn.max_packet_size
        # mqtt.max_message_bytes is the broker's limit too: under MQTT 3.1.1 it would take and discard it
        too_large = too_large or len(payload) > self._sizer.ceiling
        if len(rows) > 1 and (too_large or len(payload) > self._sizer.limit):
            # The estimate was short: send it as two.
            half = len(rows) // 2
            self._unsent.appendleft((stream, rows[half:]))
            self._unsent.appendleft((stream, rows[:half]))
            return
        if too_large:
            # One aggregate larger than the broker takes would cut every session; it cannot ever go.
            log.error("dropping a %s message of %s bytes (a %s-byte packet): the broker takes at most %s "
                      "bytes a packet, mqtt.max_message_bytes %s a message", stream, len(payload), packet,
                      conn.max_packet_size, self._sizer.ceiling)
            self.outbox.discard([rows[0].id], "too_large_for_broker")
            return
        expiry_s = mqtt_expiry_s(rows, now, self.settings.message_expiry_days)
        try:
            mid = conn.publish(topic, payload, expiry_s=expiry_s)
        except SyncError:
            self._unsent.appendleft((stream, rows))
            raise
        if not self._inflight:
            self._last_ack_at = time.monotonic()  # the wait for a PUBACK starts now, not at the last one
        self._inflight[mid] = _Message(stream, [r.id for r in rows], len(payload), time.monotonic())

    def _started_on_clock(self, now: float) -> float:
        """When the daemon started, by the clock that says ``now``: re-read only when that clock has stepped
        by over 10 s since (recomputed each time, the value would jitter by milliseconds)."""
        started = now - (time.monotonic() - self._started_mono)
        if abs(started - self._started_at) > 10.0:
            self._started_at = started
        return self._started_at

    def _send_heartbeat(self, conn: MqttConnection, now: float) -> None:
        status = self.outbox.status()
        doc = {
            "v": 1, "device": self.device.device_id, "store": self.outbox.db.store_id, "at": round(now, 3),
            "version": __version__, "build": __build__, "backlog": status["backlog"],
            "oldest_age_s": status["oldest_age_s"], "drops": status["drops"], "last_seq": status["last_seq"],
            "started_at": round(self._started_on_clock(now), 3),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            # False: "at", "started_at" and the items' times come from a clock not known to be right
            "clock_synced": self.outbox.clock_synced(),
            # the school's zone, for the cloud's "day" and "lesson" (every time sent is UTC)
            "timezone": zone_name(self.device.timezone),
            "utc_offset_s": _offset_s(self._local_now()),
            "health": self._health_summary() if self._health_summary else {},
        }
        if self._commands is not None:  # what the board did with the commands of the last 15 minutes
            doc["health"] = {**doc["health"], "commands": self._commands.recent_outcomes()}
        conn.publish(f"{self._prefix}/heartbeat", json.dumps(doc, separators=(",", ":")).encode(), qos=0)

    # -- acknowledgements ----------------------------------------------------------------------------

    def _on_ack(self, mid: int, accepted: bool, reason: str) -> None:
        message = self._inflight.pop(mid, None)
        if message is None:
            return  # status, heartbeat or a message of an earlier session
        if not accepted:
            self._ack_failures.append(reason)
            if reason in SIZE_REFUSALS:
                self._refused = self._refused or message
            self.outbox.release(message.row_ids)
            return
        metrics.MQTT_PUBLISHED.labels(stream=message.stream).inc()
        self._acked.extend(message.row_ids)
        self._last_ack_at = now = time.monotonic()
        if self._sizer.acknowledged(message.size, now - message.sent_at):
            log.info("the uplink carries larger messages again: at most %s KiB each",
                     self._sizer.limit // 1024)

    def _shrink_messages_if_stalled(self) -> None:
        now = time.monotonic()
        refused, self._refused = self._refused, None
        stalled_s = now - self._last_ack_at
        if self._inflight and self._sizer.session_lost(stalled_s):
            log.warning(
                "the session ended %.0f s into a message with no PUBACK: the uplink is too slow or too "
                "flaky for the messages; they are now at most %s KiB each", stalled_s,
                self._sizer.limit // 1024,
            )
            return
        # A broker's size limit cuts the session at once (message_size_limit is not in CONNACK)
        floor = self._sizer.floor
        quick = (m for m in self._inflight.values() if now - m.sent_at < STALLED_S and m.size > floor)
        message = refused or next(quick, None)
        if message is None:
            return
        verdict = self._sizer.cut_quickly(message.row_ids[0], len(message.row_ids), message.size)
        if verdict == "shrunk":
            log.warning(
                "the broker ended the session at once after a %s-byte message twice: it takes no messages "
                "this large (its message_size_limit or max_packet_size); they are now at most %s KiB each. "
                "Set mqtt.max_message_bytes to the broker's limit", message.size, self._sizer.limit // 1024,
            )
        elif verdict == "too_large":
            log.error(
                "dropping a %s message of %s bytes: the broker ends the session at every try (its "
                "message_size_limit or max_packet_size is lower); raise it to at least 262144",
                message.stream, message.size,
            )
            self.outbox.discard(message.row_ids, "too_large_for_broker")

    def _flush_acks(self) -> None:
        if self._acked:
            ids, self._acked = self._acked, []
            self.outbox.ack(ids)
            self._set(last_success=time.time())
        if self._ack_failures:
            reasons, self._ack_failures = self._ack_failures, []
            many = f"{len(reasons)} messages" if len(reasons) > 1 else "1 message"
            too_large = reasons[0] in SIZE_REFUSALS
            advice = "its size limit (message_size_limit)" if too_large else "the device's ACL"
            raise SyncError(f"the broker refused {many} ({reasons[0]}); check {advice}")

    def _release_all(self) -> None:
        ids = [i for m in self._inflight.values() for i in m.row_ids]
        ids += [r.id for _, rows in self._unsent for r in rows]
        self._inflight.clear()
        self._unsent.clear()
        if self._acked:  # PUBACKs that arrived in the same loop turn as the loss: still delete those rows
            self.outbox.ack(self._acked)
            self._acked = []
        self._ack_failures.clear()
        self._refused = None
        # Every row in flight, not only those known here: a claim this thread stopped waiting for (a
        # stalled disk) still runs later and marks its rows, unsent until the next start. The writer is
        # FIFO, so this runs after it; this thread is the outbox's only claimer.
        try:
            _stored(self.outbox.release())
        except StoreError as exc:  # they return to pending at the next start anyway
            log.error("could not return the in-flight messages (%s sent here) to pending: %s", len(ids), exc)

    def _on_message(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        if self._commands is not None:
            self._commands.handle(topic, payload, retained=retained)
            # The outcome goes out now, not up to heartbeat_s later: an accepted config_reload restarts the
            # board, and the outcome (kept in memory) would never be sent
            self._next_heartbeat = min(self._next_heartbeat, self._last_heartbeat + COMMAND_REPLY_GAP_S)
        else:
            metrics.MQTT_REJECTED.labels(reason="unknown_topic").inc()

    def _on_retained(self, topic: str, payload: bytes) -> None:
        self._on_message(topic, payload, retained=True)


def _offset_s(local: datetime) -> int | None:
    offset = local.utcoffset()
    return None if offset is None else round(offset.total_seconds())


def _stored(future: Future[T]) -> T:
    """The store's answer; StoreError when the disk has not given it within STORE_TIMEOUT_S."""
    try:
        return future.result(STORE_TIMEOUT_S)
    except FutureTimeout:
        message = f"the database did not answer within {STORE_TIMEOUT_S:g} s: the disk is slow or stalled"
        raise StoreError(message) from None
