"""The reference cloud receiver: subscribes ``edge/#``, deduplicates by the item id within its store (whatever
the device id: a renamed board keeps its store) and within its device, stores, finds gaps.

Run it next to a broker to see what boards deliver::

    python -m edge_agent.sync.receiver --host broker.example --port 8883 --db received.db \\
        --ca ca.pem --cert receiver.pem --key receiver.key

It keeps a persistent MQTT session (clean start false, no session expiry, QoS 1: messages published while
it is away wait at the broker, up to the broker's per-client queue caps: past them Mosquitto drops them
silently) under client id ``edge-receiver``, the CN provisioning/mosquitto/acl gives its certificate (the
shipped broker names every session by its certificate's CN, whatever the client asks), and
commits each message before its PUBACK goes out, so nothing acknowledged is lost: a message, or an item of
one, that it cannot take is kept as it came in ``rejected_messages``, with the reason (the board deleted it
once the broker acknowledged it); one over MAX_READ_BYTES as its length, sha256 and first bytes, and the
broker drops one over MAX_RECEIVE_BYTES for it. The test-suite uses it to prove exactly-once delivery
after deduplication.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_agent import json_input
from edge_agent.config import MqttSettings
from edge_agent.errors import InputRejected, SyncError
from edge_agent.sync.mqtt import MqttConnection
from edge_agent.sync.protocol import (
    MAX_READ_BYTES,
    SCHEMA_VERSION,
    STORE_RE,
    STREAM_KINDS,
    DecodedMessage,
    backoff_delay,
    decode_envelope,
    decode_item,
    missing_ranges,
)
from edge_agent.sync.receiver_db import open_receiver_db

log = logging.getLogger(__name__)
_ITEM_COLUMNS = ("device, store, seq, stream, message_id, created_at, received_at, data, clock_unsynced, "
                 "tenant, site")
# into items or conflicts (the same columns): named, so a receiver database with more columns still takes it
_INSERT_ITEM = f"INSERT OR IGNORE INTO {{}} ({_ITEM_COLUMNS}) VALUES ({', '.join('?' * 11)})"
MAX_HEARTBEAT_BYTES = 65536  # a board's is about 2 KB
RECEIVER_RENEWAL = "issue the receiver a new certificate from the fleet CA (--cert, --key)"
# Asked of the broker (MQTT 5 Maximum Packet Size): it drops larger messages for this client unsent. No
# board sends over MAX_MESSAGE_BYTES (256 KiB), and the broker's own default is 256 MiB: a 21 MB message
# took the receiver from 45 to 675 MB and ended its thread under a 640 MiB memory limit (a review).
# Above MAX_READ_BYTES, so what lies between is still seen, in rejected_messages.
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
KEPT_PREFIX_BYTES = 4096  # of a payload over MAX_READ_BYTES: never readable, kept as a trace
_CUT = "only its first"  # in the reason of a payload kept cut: the replay skips it

class Receiver:
    def __init__(self, db_path: Path, settings: MqttSettings, *, client_id: str = "edge-receiver",
                 topic: str = "edge/#") -> None:
        self.db_path = Path(db_path)
        self.settings = settings
        self.client_id = client_id
        self.topic = topic
        self._conn = open_receiver_db(self.db_path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self.messages = 0
        self.rejected = 0
        self._kept_in_take = 0  # rows kept by the take in progress (replay_rejected reads it)

    # -- running -------------------------------------------------------------------------------------

    def start(self, wait_connected_s: float | None = 10.0) -> Receiver:
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()
        if wait_connected_s is not None and not self._connected.wait(wait_connected_s):
            raise SyncError(f"receiver could not connect to {self.settings.host}:{self.settings.port}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self._conn.close()

    def _run(self) -> None:
        attempt = 0
        rng = random.Random()
        last_failure = ""
        while not self._stop.is_set():
            conn: MqttConnection | None = None
            try:
                # Made in the try: a certificate file that cannot be used now (expired, being renewed)
                # must be retried with backoff, not end the thread while the process goes on reporting.
                conn = MqttConnection(self.settings, self.client_id, "", self._ack_ignored, self._on_message,
                                      persistent_session=True, will=False, renewal=RECEIVER_RENEWAL,
                                      max_receive_bytes=MAX_RECEIVE_BYTES)
                conn.connect()
                conn.subscribe(self.topic, qos=1)
                attempt = 0
                last_failure = ""
                self._connected.set()
                while not self._stop.is_set():
                    conn.loop(0.05)
                conn.disconnect()
            except Exception as exc:
                # Any fault, not only a SyncError: one raised out of paho's callback (a MemoryError keeping a
                # message) ended this thread, while the process went on reporting and stored nothing more (a
                # review). Unacknowledged, the message comes again after the reconnect.
                self._connected.clear()
                if conn is not None:
                    conn.close()
                # a warning once per cause (it was INFO only: a receiver that cannot connect went unseen
                # by warning-level monitoring); its retries every second or two stay at INFO
                cause = str(exc) if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
                level = logging.INFO if cause == last_failure else logging.WARNING
                last_failure = cause
                fault = not isinstance(exc, SyncError) and level == logging.WARNING
                log.log(level, "receiver: %s", cause, exc_info=fault)
                self._stop.wait(backoff_delay(attempt, 0.1, 2.0, rng))
                attempt += 1

    def wait_ended(self, timeout: float) -> bool:
        """Whether the MQTT thread has ended, waiting up to ``timeout`` s for it (the CLI exits then)."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @staticmethod
    def _ack_ignored(_mid: int, _ok: bool, _reason: str) -> None:
        return None

    # -- messages ------------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._take(topic, payload)
        except sqlite3.Error as exc:
            # Not acknowledged: raised out of paho's callback before its PUBACK, it ends this connection;
            # the broker redelivers the message after the reconnect (a persistent session, QoS 1).
            message = f"receiver database {self.db_path}: {exc}; the message will be redelivered"
            raise SyncError(message) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One message's writes, all committed (before its PUBACK) or, on an error, none."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # a COMMIT that failed (busy) leaves it open too
                    self._conn.execute("ROLLBACK")
                raise

    def _take(self, topic: str, payload: bytes) -> None:
        with self._transaction():
            self._take_or_keep(topic, payload)

    def _take_or_keep(
        self, topic: str, payload: bytes, now: float | None = None, kept_item: int | None = None
    ) -> None:
        """In the caller's transaction: take the payload, or, when the take raises (a payload no check
        foresaw), keep nothing of the take but the payload as it came, with why. Raised out of paho's
        callback it ended the receiver's thread, and the broker redelivered the same message to every
        restart (a 401-digit "at", a lone surrogate in an id, 2026-12-02). An sqlite3.Error goes to the
        caller: not acknowledged, the message comes again."""
        self._kept_in_take = 0
        self._conn.execute("SAVEPOINT take")
        try:
            self._take_in_transaction(topic, payload, now, kept_item)
        except sqlite3.Error:
            raise
        except Exception as exc:
            self._conn.execute("ROLLBACK TO take")
            self.rejected -= self._kept_in_take
            self._kept_in_take = 0
            parts = topic.split("/")
            self._keep_rejected(topic, payload, parts[3] if len(parts) == 5 else None,
                                f"{type(exc).__name__}: {exc}", kept_item, at=now)
        self._conn.execute("RELEASE take")

    def replay_rejected(self) -> tuple[int, int]:
        """Take the kept data messages and items again, once the cause is fixed (this receiver upgraded to
        read them, a board's fault mended): each in a transaction of its own, deleted as it is taken, with
        its first receive time (the report orders stores by it) and its place in its message. What still
        fails is kept again as it was, with the new reason; a take that raises leaves nothing of itself.
        Heartbeats are not replayed (an old one would replace the newer), nor payloads kept cut (over
        MAX_READ_BYTES: none of it can be read). Returns (taken: rows of which
        nothing is kept again, kept again: rows of which something is, all of it or a bad item of a message
        now read); each device's rejected count is then its kept rows."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, digest, received_at, topic, item, payload FROM rejected_messages "
                "WHERE topic NOT LIKE '%/heartbeat' AND instr(reason, ?) = 0 ORDER BY rowid", (_CUT,)
            ).fetchall()
        taken = again = 0
        for rowid, digest, received_at, topic, item, payload in rows:
            with self._transaction():
                # by its digest too: a rowid freed by another replay may hold another row now (a review:
                # two replays at once deleted the only copy of a row the first had kept again)
                if not self._conn.execute("DELETE FROM rejected_messages WHERE rowid = ? AND digest = ?",
                                          (rowid, digest)).rowcount:
                    continue  # another replay took it
                self._take_or_keep(topic, bytes(payload), received_at, item)
                if self._kept_in_take:
                    again += 1
                else:
                    taken += 1
        with self._transaction():  # what is kept now, also where an older release's count was off
            self._conn.execute("UPDATE devices SET rejected = (SELECT count(*) FROM rejected_messages AS r "
                               "WHERE r.device = devices.device)")
        return taken, again

    def _take_in_transaction(
        self, topic: str, payload: bytes, now: float | None = None, kept_item: int | None = None
    ) -> None:
        """``now``: the receive time to store (a replay: the first one); ``kept_item``: a replayed item kept
        alone, its place in its message (kept so again if its envelope still does not read)."""
        parts = topic.split("/")
        now = time.time() if now is None else now
        first_item = kept_item or 0
        if len(parts) != 5 or parts[0] != "edge":
            self._keep_rejected(topic, payload, None, f"unexpected topic {topic!r}", at=now)
            return
        device, stream = parts[3], parts[4]
        if stream == "status" and not payload:
            # An empty retained message clears the retained status at the broker (docs/sync-protocol.md:
            # how an operator clears the old topic of a board moved to another site), and the broker
            # forwards the clear: it is no status. Stored, a board online at its new site showed ''.
            return
        if stream == "cmd":
            # the cloud's commands to boards, to any device id (a typo, a retired board): no device of ours
            return
        self._conn.execute("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
        if stream == "status":
            self._conn.execute("UPDATE devices SET status = ?, status_at = ? WHERE device = ?",
                               (payload.decode("utf-8", "replace")[:32], now, device))
            return
        if stream == "hello":
            return  # a hello only proves enrollment: nothing to store
        if stream == "heartbeat":
            heartbeat = _heartbeat_text(payload)
            if heartbeat is None:
                why = f"heartbeat is not a JSON object of up to {MAX_HEARTBEAT_BYTES} bytes"
                self._keep_rejected(topic, payload, device, why, at=now)
                return
            doc = json.loads(heartbeat)
            if doc.get("device") != device:  # another board's backlog and last_seq filed under this one
                why = f"heartbeat names device {str(doc.get('device'))[:64]!r}, its topic {device!r}"
                self._keep_rejected(topic, payload, device, why, at=now)
                return
            self._conn.execute("UPDATE devices SET heartbeat = ?, heartbeat_at = ? WHERE device = ?",
                               (heartbeat, now, device))
            self._note_last_seq(device, doc, now)
            return
        try:
            message, items = decode_envelope(payload)
        except InputRejected as exc:
            self._keep_rejected(topic, payload, device, str(exc), kept_item, at=now)
            return
        if (message.tenant, message.site, message.device, message.stream) != tuple(parts[1:]):
            why = "topic and payload disagree on tenant, site, device or stream"
            self._keep_rejected(topic, payload, device, why, kept_item, at=now)
            return
        self._store(topic, message, items, now, first_item)

    def _store(
        self, topic: str, message: DecodedMessage, items: list[Any], now: float, first_item: int = 0
    ) -> None:
        """The message's items, each checked on its own: a bad one is kept apart, the others stored."""
        device, store, stream = message.device, message.store, message.stream
        repeats = 0
        for index, raw in enumerate(items, first_item):
            try:
                item = decode_item(raw)
                _check_kind(stream, item.data)
            except InputRejected as exc:
                self._keep_rejected(topic, _item_alone(message, raw), device, f"item {index}: {exc}", index,
                                    at=now, digest=_item_digest(topic, store, raw))
                continue
            if self._stored_before(device, store, item.message_id):
                repeats += 1
                continue
            where = self._continued_store(device, item.seq) if store == "" else store
            row = (device, where, item.seq, stream, item.message_id, item.created_at, now,
                   json.dumps(item.data, separators=(",", ":")), None if item.clock_synced else 1,
                   message.tenant, message.site)
            added = self._conn.execute(_INSERT_ITEM.format("items"), row)
            if added.rowcount:
                continue
            # The same seq with another id is new data from a board whose sequence started again
            # without a new store id (a release before store ids, re-imaged or replaced under its
            # device id): kept apart, never taken for a repeat.
            self._conn.execute(_INSERT_ITEM.format("conflicts"), row)
            log.warning("receiver: %s seq %s arrived again with another id", device, item.seq)
        if repeats:
            self._conn.execute("UPDATE devices SET duplicates = duplicates + ? WHERE device = ?",
                               (repeats, device))
        self.messages += 1

    def _note_last_seq(self, device: str, heartbeat: dict[str, Any], now: float) -> None:
        last_seq, store = heartbeat.get("last_seq"), heartbeat.get("store", "")
        # none from boards before 2026-12-04; 0 before a store's first item
        if not (isinstance(last_seq, int) and not isinstance(last_seq, bool) and 0 < last_seq < 2**63
                and isinstance(store, str) and STORE_RE.fullmatch(store)):
            return
        self._conn.execute(
            "INSERT INTO heartbeat_seqs (device, store, last_seq, first_at, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (device, store) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), "
            "at = excluded.at", (device, store, last_seq, now, now))

    def _keep_rejected(
        self, topic: str, payload: bytes, device: str | None, why: str, item: int | None = None, *,
        at: float | None = None, digest: str | None = None,
    ) -> None:
        """Keep what cannot be taken, in the message's transaction: acknowledged, it exists nowhere else.
        Once: a message redelivered (its PUBACK lost after the commit) or re-sent by its board is the same
        row (its digest: ``digest``, an item's, or the message's, _message_digest)."""
        if digest is None:
            digest = _message_digest(topic, item, payload)
        if len(payload) > MAX_READ_BYTES:  # never readable: kept whole, a 21 MB one took 42 MB of database
            sha256 = hashlib.sha256(payload).hexdigest()
            why = (f"{why}: {len(payload)} bytes (sha256 {sha256}), over the {MAX_READ_BYTES} this receiver "
                   f"reads; {_CUT} {KEPT_PREFIX_BYTES} bytes are kept")
            payload = payload[:KEPT_PREFIX_BYTES]
        if not self._conn.execute(
            "INSERT OR IGNORE INTO rejected_messages (received_at, topic, device, item, reason, payload, "
            "digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time() if at is None else at, topic, device, item, why, payload, digest),
        ).rowcount:
            return
        self.rejected += 1
        self._kept_in_take += 1
        if device is not None:  # the device's row too: the catch-all's transaction had none
            self._conn.execute("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
            self._conn.execute("UPDATE devices SET rejected = rejected + 1 WHERE device = ?", (device,))
        what = "a message" if item is None else f"item {item} of a message"
        log.warning("receiver rejected %s on %s: %s; kept as it came in table rejected_messages of %s, "
                    "to replay once the cause is fixed", what, topic, why, self.db_path)

    def _stored_before(self, device: str, store: str, message_id: str) -> bool:
        """Whether the item is a repeat, by its id: within its store whatever the device id, as a board
        renamed keeps its store and re-sends under the new name what lost its PUBACK at the rename (the
        cloud review: seq 5 stored twice, 0 duplicates); within its device whatever the store, as a
        rolled-back board (a release before store ids) re-sends under store "" what is stored under the
        database's id."""
        if self._conn.execute(
            "SELECT 1 FROM items WHERE device = ? AND message_id = ?", (device, message_id)
        ).fetchone():
            return True
        return store != "" and self._conn.execute(
            "SELECT 1 FROM items WHERE store = ? AND message_id = ?", (store, message_id)
        ).fetchone() is not None

    def _continued_store(self, device: str, seq: int) -> str:
        """Where an item without a store id belongs: a board whose database has an id, rolled back to a
        release before store ids, goes on with that database's sequence, so under its latest store where
        the seq is still free there. Not only above its last seq: each stream drains on its own, and the
        kt_class 18 and 21 after attention 16-22 were filed under "" and shown lost (a review). Anything
        else (a seq taken there, a device whose latest store is "") is a board of such a release."""
        store = self._current_store(device)
        if store and not self._conn.execute(
            "SELECT 1 FROM items WHERE device = ? AND store = ? AND seq = ?", (device, store, seq)
        ).fetchone():
            return store
        return ""

    # -- queries -------------------------------------------------------------------------------------

    def seqs(self, device: str, store: str | None = None) -> list[int]:
        """The device's seqs, of one store or (by default) of its current one: the store of the item
        received last. A store's seqs under every device id it was sent under: a board renamed (provisioned
        again under a new id) keeps its database and goes on with its seq, and its first items under the
        new name showed the ones sent under the old as a gap, a loss that was none (fleet review)."""
        with self._lock:
            if store is None:
                store = self._current_store(device)
            # 32 random hex digits: one database, whatever it was called, when the other ids' items all came
            # before this one's first (a rename); else each board's own, or one's seqs filled the other's
            # holes and hid its losses: a database copied onto a second board (round 3), another board
            # sending under this one's store id (a review: boardB's lost 3-4 shown as none). Also unless
            # one seq came under two device ids as two items (a copy). The same item re-sent under the new
            # name (its PUBACK lost at the rename) is no copy (round 4).
            if store and not self._conn.execute(
                "SELECT 1 FROM items WHERE store = ? AND device != ? AND received_at >= "
                "(SELECT min(received_at) FROM items WHERE store = ? AND device = ?) LIMIT 1",
                (store, device, store, device),
            ).fetchone() and not self._conn.execute(
                "SELECT 1 FROM items AS a JOIN items AS b ON a.store = b.store AND a.seq = b.seq "
                "AND a.device < b.device AND a.message_id != b.message_id WHERE a.store = ? LIMIT 1", (store,)
            ).fetchone():
                select = "SELECT seq FROM items WHERE store = ? ORDER BY seq"
                rows = self._conn.execute(select, (store,))
            else:  # no store id (releases before them): only the device id tells them apart
                rows = self._conn.execute(
                    "SELECT seq FROM items WHERE device = ? AND store = ? ORDER BY seq", (device, store)
                )
            return [int(r[0]) for r in rows]

    def _current_store(self, device: str) -> str:
        row = self._conn.execute(
            "SELECT store FROM items WHERE device = ? ORDER BY received_at DESC, rowid DESC LIMIT 1",
            (device,),
        ).fetchone()
        return "" if row is None else str(row[0])

    def count(self, device: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM items WHERE device = ?", (device,)).fetchone()
            return int(row[0])

    def items(self, device: str) -> list[tuple[int, str, Any]]:
        """Every store's items, oldest store first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, stream, data FROM items WHERE device = ? "
                "ORDER BY (SELECT min(received_at) FROM items AS i WHERE i.device = items.device "
                "AND i.store = items.store), store, seq",
                (device,),
            ).fetchall()
        return [(int(seq), str(stream), json.loads(data)) for seq, stream, data in rows]

    def report(self, device: str) -> dict[str, Any]:
        """Delivery per device. ``places``: each (tenant, site) its items came under, oldest first (more
        than one: its config moved it, or two boards use its device id). ``unique``, ``gaps``, ``max_seq``
        and ``tail`` are those of its current store (the database it sends from now); ``stores`` lists
        each one it has used, oldest first, a store known only from its heartbeats too. ``gaps`` are the
        seqs missing below ``max_seq``, ``tail`` those above it up to ``last_seq``, the highest its
        heartbeats gave (null before any): not yet arrived, or, still missing after a heartbeat with
        ``backlog`` 0, lost at the broker."""
        with self._lock:
            row = self._conn.execute(
                "SELECT status, duplicates, rejected, heartbeat FROM devices WHERE device = ?", (device,)
            ).fetchone()
            conflicts = self._conn.execute(
                "SELECT count(*) FROM conflicts WHERE device = ?", (device,)
            ).fetchone()[0]
            unsynced = self._conn.execute(
                "SELECT count(*) FROM items WHERE device = ? AND clock_unsynced = 1", (device,)
            ).fetchone()[0]
            places = [
                {"tenant": tenant, "site": site, "items": int(n), "first_at": first, "last_at": last}
                for tenant, site, n, first, last in self._conn.execute(
                    "SELECT tenant, site, count(*), min(received_at), max(received_at) FROM items "
                    "WHERE device = ? AND tenant IS NOT NULL GROUP BY tenant, site ORDER BY min(received_at)",
                    (device,))
            ]
            stores = self._conn.execute(
                "SELECT store, max(last_seq) FROM (SELECT store, min(received_at) AS since, NULL AS last_seq "
                "FROM items WHERE device = ? GROUP BY store UNION ALL SELECT store, first_at, last_seq "
                "FROM heartbeat_seqs WHERE device = ?) GROUP BY store ORDER BY min(since)", (device, device)
            ).fetchall()
            current = self._current_store(device)
            shared: dict[str, list[str]] = {}
            for store, other in self._conn.execute(
                "SELECT DISTINCT store, device FROM items WHERE store IN (SELECT store FROM items WHERE "
                "device = ? AND store != '') AND device != ? ORDER BY store, device", (device, device)
            ):
                shared.setdefault(store, []).append(other)
        per_store = [_store_report(store, self.seqs(device, store), last_seq, shared.get(store, []))
                     for store, last_seq in stores]
        latest = next((s for s in per_store if s["store"] == current),
                      {"store": current, "unique": 0, "max_seq": 0, "gaps": [], "tail": []})
        status, duplicates, rejected, heartbeat = row if row else (None, 0, 0, None)
        return {
            "device": device, "store": current, "unique": latest["unique"], "max_seq": latest["max_seq"],
            "gaps": latest["gaps"], "tail": latest["tail"], "stores": per_store,
            "duplicates": int(duplicates), "rejected": int(rejected), "conflicts": int(conflicts),
            "clock_unsynced": int(unsynced),
            "status": status, "heartbeat": _heartbeat_doc(heartbeat), "places": places,
        }

    def devices(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._conn.execute("SELECT device FROM devices ORDER BY device")]

    def wait_for_count(self, device: str, count: int, timeout: float) -> bool:
        """Until the device has ``count`` items in all its stores together."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(device) >= count:
                return True
            time.sleep(0.05)
        return self.count(device) >= count


def _check_kind(stream: str, data: Any) -> None:
    """Refuse a record of one stream sent on another's (filed under the wrong stream, a cloud would read
    an attention window as a lesson's). A record without "kind" is taken: only one naming another stream's
    kind is known to be wrong."""
    expected = STREAM_KINDS.get(stream)
    if expected is None:  # a stream of its own (a tool's, a later release's)
        return
    if not isinstance(data, dict):  # 7, [1, 2], "x", null: no record of the stream, and none names a kind
        what = "null" if data is None else "an array" if isinstance(data, list) else json.dumps(data)[:32]
        raise InputRejected(f"item data on stream {stream!r} is {what}, not a JSON object")
    if (kind := data.get("kind", expected)) != expected:
        raise InputRejected(f"item kind {str(kind)[:64]!r} on stream {stream!r}, which carries {expected!r}")


def _store_report(store: str, seqs: list[int], last_seq: int | None, also_under: list[str]) -> dict[str, Any]:
    top = seqs[-1] if seqs else 0
    tail = [(top + 1, last_seq)] if last_seq is not None and last_seq > top else []
    return {"store": store, "unique": len(seqs), "max_seq": top, "gaps": missing_ranges(seqs),
            "last_seq": last_seq, "tail": tail, "also_under": also_under}


def _item_alone(message: DecodedMessage, item: Any) -> bytes:
    """A rejected item as a message of its own, in its message's envelope: the form the receiver takes,
    so it can be replayed on its own once its fault is understood."""
    doc = {"v": SCHEMA_VERSION, "tenant": message.tenant, "site": message.site, "device": message.device,
           "stream": message.stream, "store": message.store, "sent_at": message.sent_at, "items": [item]}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _message_digest(topic: str, item: int | None, payload: bytes) -> str:
    """A kept message's digest: of its topic, its item's place (a replayed item kept alone) and what it
    says, without its "sent_at", which the board sets anew at every send: a message re-sent after a lost
    PUBACK was kept and counted again (a review: "rejected" grew with each re-send). A payload that is not
    JSON, by its bytes."""
    head = f"{topic}\0{item}\0".encode()
    if len(payload) > MAX_READ_BYTES:  # not parsed: never read, and parsing 21 MB took 600 MB (a review)
        return hashlib.sha256(head + b"raw\0" + payload).hexdigest()
    try:
        doc = json_input.loads(payload)
        if isinstance(doc, dict):
            doc.pop("sent_at", None)
        return hashlib.sha256(head + b"json\0" + _canonical(doc)).hexdigest()
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONRefused are ValueErrors
        return hashlib.sha256(head + b"raw\0" + payload).hexdigest()


def _item_digest(topic: str, store: str, item: Any) -> str:
    """A kept item's digest: of its topic, its store and the item, not its place in its message (a re-send
    may batch the board's rows otherwise) nor the message's "sent_at"."""
    return hashlib.sha256(f"{topic}\0item\0{store}\0".encode() + _canonical(item)).hexdigest()


def _heartbeat_text(payload: bytes) -> str | None:
    """The heartbeat to store, or None when it is not a JSON object within MAX_HEARTBEAT_BYTES (stored as
    it came, one such ended every later report, as the receiver stores what it reports from)."""
    if len(payload) > MAX_HEARTBEAT_BYTES:
        return None
    try:
        text = payload.decode("utf-8")
        return text if isinstance(json_input.loads(text), dict) else None
    except ValueError:  # UnicodeDecodeError and JSONRefused (nested too deep) are ones
        return None


def _heartbeat_doc(text: str | None) -> dict[str, Any] | None:
    """A stored heartbeat; None for one stored by an older receiver that is not JSON."""
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def places_warning(report: dict[str, Any]) -> str | None:
    """What to check when a device's items came under more than one tenant or site; None when not."""
    places = report["places"]
    if len(places) < 2:
        return None
    seen = ", then ".join(f"{p['tenant']}/{p['site']} ({p['items']} items)" for p in places)
    return (f"{report['device']} sent as {seen}: either its config moved it (check the board's "
            "/etc/edge-agent/config.toml and the inventory) or two boards use this device id (the broker's "
            "ACL checks only the device id, not the tenant or site)")


def stores_warning(report: dict[str, Any]) -> str | None:
    """What to check when a store of the device's also came under other device ids; None when not."""
    shared = [f"{s['store']} also came under {', '.join(s['also_under'])}"
              for s in report["stores"] if s["also_under"]]
    if not shared:
        return None
    return (f"{report['device']}: store {'; store '.join(shared)}: a board renamed (provisioned again "
            "under a new id: its seqs are counted together when all its old id's items came first), a "
            "database copied onto a second board, or another board sending under this store id (then gaps "
            "are counted per device id); check the inventory and which certificates sent them")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.sync.receiver", description="The reference edge-agent cloud receiver."
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--ca", type=Path, help="CA file; with --cert and --key enables TLS")
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    # Not the certificate's CN by default: a receiver set up before use_username_as_clientid ran on the
    # fleet-controller certificate as edge-receiver, and a new id is a new, empty session on that broker
    parser.add_argument("--client-id", default="edge-receiver",
                        help="the session's name (default edge-receiver); the shipped broker uses the "
                        "certificate's CN whatever is asked")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between gap reports")
    parser.add_argument("--replay-rejected", action="store_true",
                        help="take the messages and items kept in rejected_messages again (after an upgrade "
                        "that reads them), print what was taken and what was kept again, and exit")
    args = parser.parse_args(argv)
    tls = args.ca is not None
    if tls and (args.cert is None or args.key is None):
        parser.error("--ca needs --cert and --key (the broker requires client certificates)")
    settings = MqttSettings(
        host=args.host, port=args.port, protocol=args.protocol, tls=tls,
        **({"ca_file": args.ca, "cert_file": args.cert, "key_file": args.key} if tls else {}),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = Receiver(args.db, settings, client_id=args.client_id)
    if args.replay_rejected:  # no broker: the database alone
        taken, again = receiver.replay_rejected()
        receiver.stop()
        print(json.dumps({"taken": taken, "kept_again": again}))
        return 0
    warned: dict[tuple[str, str], str] = {}  # each warning once per device until it changes
    try:
        receiver.start(wait_connected_s=None)
        while not receiver.wait_ended(args.report_every):
            for device in receiver.devices():
                report = receiver.report(device)
                log.info("receiver: %s", json.dumps(report))
                for name, check in (("places", places_warning), ("stores", stores_warning)):
                    if (warning := check(report)) and warned.get((device, name)) != warning:
                        warned[device, name] = warning
                        log.warning("receiver: %s", warning)
        # a fault _run does not catch (a BaseException): exit for the service manager to restart it, not
        # report on with nothing stored
        log.error("receiver: its MQTT thread ended (see the error above); exiting")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        receiver.stop()


if __name__ == "__main__":
    raise SystemExit(main())
