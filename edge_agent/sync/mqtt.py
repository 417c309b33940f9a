"""The paho-mqtt adapter: the only module that imports paho.

One :class:`MqttConnection` is one network session; after a loss it is thrown away and the publisher
makes a new one, so paho's own retry queue never holds anything: the outbox is the session. The
connection is driven by :meth:`MqttConnection.loop` from the caller's thread (no paho thread), which keeps
callbacks on that thread and every wait bounded by an explicit timeout.

Errors are translated here into :class:`SyncError` subclasses whose messages say what to fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.config import MqttSettings
from edge_agent.errors import SyncError

log = logging.getLogger(__name__)

# what paho says of a connection the TLS layer ended
_TLS_MARKERS = re.compile(r"ssl|tls|certificate|alert|eof occurred|connection reset", re.IGNORECASE)

AckCallback = Callable[[int, bool, str], None]  # mid, accepted, reason
# PUBACK reasons (paho's names of 0x95, 0x97) that say the message was too large for the broker, not refused
SIZE_REFUSALS = frozenset({"Packet too large", "Quota exceeded"})
MessageCallback = Callable[[str, bytes], None]  # topic, payload

BOARD_RENEWAL = "re-provision this board (edge-agent provision) to get a new certificate"


class SyncConnectError(SyncError):
    """The broker cannot be reached or refused the connection."""


class SyncTlsError(SyncConnectError):
    """TLS failed: certificate expired, signed by the wrong CA, missing, or the key does not match."""


class SyncAuthError(SyncConnectError):
    """The broker accepted TLS but refused this device (not authorised)."""


class SyncPublishError(SyncError):
    """A publish could not be handed to the connection."""


def publish_packet_bytes(
    topic: str, payload_bytes: int, *, v5: bool, qos: int = 1, expiry: bool = False
) -> int:
    """The exact size of the PUBLISH packet paho sends: what a broker's Maximum Packet Size is checked on.

    Fixed header (1 byte and the remaining length), topic (2 + its UTF-8 bytes), packet id (QoS > 0) and,
    in MQTT 5, the properties: their length and, with an expiry, the Message Expiry Interval (1 + 4).
    """
    properties = (1 + (5 if expiry else 0)) if v5 else 0
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + properties + payload_bytes
    return 1 + _varint_bytes(remaining) + remaining


def _varint_bytes(value: int) -> int:
    """Bytes of an MQTT variable byte integer: 7 bits a byte."""
    size = 1
    while value >= 128:
        value >>= 7
        size += 1
    return size


def address_count(host: str, port: int) -> int:
    """How many addresses ``host`` resolves to (1 when it does not resolve: connect() says why)."""
    try:
        return max(1, len(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
    except (OSError, UnicodeError):
        return 1


def connect_allowance_s(settings: MqttSettings, addresses: int) -> float:
    """The longest one connect attempt may take: socket.create_connection (paho) tries each address in turn
    with the whole connect_timeout_s, then the TLS handshake and CONNACK may each take it too. A host of 8
    addresses behind a firewall that drops the SYNs takes 8 x 10 s; the publisher's heartbeat allows this
    much (not less: the daemon was restarted on every attempt; and the timeout is not split between the
    addresses: that cut the TLS handshake short over a slow uplink)."""
    # at least the 30 s of slack a one-address board always had (a slow DNS lookup comes before all this)
    return max(settings.connect_timeout_s + 30.0, settings.connect_timeout_s * (addresses + 2) + 10.0)


def check_certificate_dates(
    cert_file: Path, now: dt.datetime | None = None, *, renewal: str = BOARD_RENEWAL
) -> None:
    """Refuse an expired or not-yet-valid device certificate before the broker does, with its dates.

    ``renewal`` says how this client gets a new certificate (a receiver is not a board to re-provision).
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise SyncTlsError(f"device certificate {cert_file} cannot be read: {exc}") from exc
    moment = now or dt.datetime.now(dt.timezone.utc)
    not_after, not_before = _utc(cert, "not_valid_after"), _utc(cert, "not_valid_before")
    if not_after < moment:
        raise SyncTlsError(
            f"device certificate {cert_file} expired on {not_after:%Y-%m-%d %H:%M} UTC; "
            f"{renewal}"
        )
    if not_before > moment:
        raise SyncTlsError(
            f"device certificate {cert_file} is valid only from {not_before:%Y-%m-%d %H:%M} "
            "UTC; check the board's clock (timedatectl)"
        )


def _utc(cert: x509.Certificate, name: str) -> dt.datetime:
    """A validity date as an aware datetime (``*_utc`` needs cryptography 42; JetPack may have 41)."""
    value = getattr(cert, f"{name}_utc", None)
    if isinstance(value, dt.datetime):
        return value
    naive: dt.datetime = getattr(cert, name)
    return naive.replace(tzinfo=dt.timezone.utc)


def tls_context(settings: MqttSettings, renewal: str = BOARD_RENEWAL) -> ssl.SSLContext:
    check_certificate_dates(settings.cert_file, renewal=renewal)
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise SyncTlsError(f"CA file {settings.ca_file} cannot be loaded: {exc}") from exc
    try:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise SyncTlsError(
            f"device certificate {settings.cert_file} and key {settings.key_file} cannot be used together: "
            f"{exc}"
        ) from exc
    return context


def _explain_tls(text: str, settings: MqttSettings, renewal: str = BOARD_RENEWAL) -> str:
    lowered = text.lower()
    # Validity is judged by the board's clock: one behind (no clock battery, NTP not reached yet) takes a
    # freshly renewed broker certificate for one not yet valid, one running ahead for one expired.
    if "not yet valid" in lowered:
        return (f"the broker's certificate is not valid yet by this board's clock ({text}); the board's "
                "clock is most likely behind: check it (timedatectl) and that it reaches an NTP server")
    if "certificate has expired" in lowered:
        return (f"the broker's certificate has expired ({text}); the broker's administrator must renew it, "
                "unless the board's clock is ahead: check it (timedatectl)")
    if "certificate verify failed" in lowered:
        return (f"the broker's certificate is not signed by the CA in {settings.ca_file} or does not name "
                f"{settings.host} ({text})")
    if "expired" in lowered:
        # This client's certificate is in date by its own clock (checked before connecting): the broker's
        # CRL is out of date (it refuses every client then), or a clock is wrong. "Re-provision" sent IT
        # to re-provision the whole fleet for nothing (a review).
        return (f"the broker rejected this client's certificate {settings.cert_file} as expired ({text}), "
                "yet it is in date by this board's clock: most likely the broker's CRL has expired (on the "
                "CA computer: edge-agent-ca crl, copy it to the broker, reload mosquitto; every board is "
                "refused until then), else the broker's clock or this board's is wrong (timedatectl)")
    if "eof occurred" in lowered or "connection reset" in lowered:
        return (f"the broker closed the TLS connection during set-up ({text}); it most likely rejected "
                f"this client's certificate {settings.cert_file} (not signed by the fleet CA it trusts, or "
                "revoked), or the broker's CRL has expired (then it refuses every board: on the CA computer "
                "edge-agent-ca crl, copy it to the broker, reload mosquitto)")
    if "unknown ca" in lowered or "bad certificate" in lowered or "certificate required" in lowered:
        return (f"the broker rejected this client's certificate {settings.cert_file} ({text}); it is "
                f"not signed by the fleet CA the broker trusts: {renewal}")
    return f"TLS with {settings.host}:{settings.port} failed: {text}"


def not_tls(exc: OSError) -> bool:
    """Whether a TLS handshake failed because the other end does not speak TLS on this port: a plain
    MQTT listener takes the ClientHello for a bad packet and resets or closes the connection, and a
    plain-text reply is no TLS record (WRONG_VERSION_NUMBER)."""
    reason = getattr(exc, "reason", None)
    return isinstance(exc, (ConnectionResetError, ssl.SSLEOFError)) or reason in (
        "WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING",
    )


STOP_CHECK_S = 0.1  # how often a connect in progress looks at the stop request


def _wait_ready(
    sock: socket.socket, *, write: bool, deadline: float, should_stop: Callable[[], bool], what: str
) -> None:
    """Wait until ``sock`` is writable (``write``) or readable, in slices of STOP_CHECK_S: TimeoutError
    (``what``: as a socket timeout says it) at ``deadline``, SyncConnectError once ``should_stop()``."""
    while True:
        if should_stop():
            raise SyncConnectError("stopped while connecting to the broker")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        wait = min(left, STOP_CHECK_S)
        readable, writable, _x = select.select([] if write else [sock], [sock] if write else [], [], wait)
        if readable or writable:
            return


def _connect_stoppable(
    host: str, port: int, timeout_s: float, should_stop: Callable[[], bool]
) -> socket.socket:
    """socket.create_connection (each address in turn, each with the whole ``timeout_s``, the last error
    raised), but non-blocking and in slices that check ``should_stop``: a firewall dropping the SYNs held
    a SIGTERM for the whole connect_timeout_s, the daemon's whole stop budget (a review)."""
    failure: OSError | None = None
    for family, kind, proto, _name, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                deadline = time.monotonic() + timeout_s
                _wait_ready(sock, write=True, deadline=deadline, should_stop=should_stop, what="timed out")
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))  # ConnectionRefusedError etc., as connect() raises
            return sock
        except OSError as exc:  # TimeoutError too: the next address
            sock.close()
            failure = exc
        except BaseException:  # the stop
            sock.close()
            raise
    raise failure or OSError(f"{host} resolves to no address")


class _StoppableClient(paho.Client):
    """paho's client, with the TCP connection and TLS handshake that ``should_stop`` can interrupt.

    paho blocks in both for up to connect_timeout_s (socket.create_connection, do_handshake), where no
    stop request is seen: each stop of a board behind a firewall dropping 8883, or at a port that accepts
    and never speaks TLS, took the daemon's whole stop budget (a review). paho 2.x builds the connection
    with these two methods (edge_agent.provisioning.enroll overrides the first too); no proxy, bind address
    or websockets are used here. The context checks the broker's name itself (tls_context: check_hostname).
    """

    should_stop: Callable[[], bool]  # set by MqttConnection before each connect

    def _create_socket_connection(self) -> socket.socket:
        return _connect_stoppable(self._host, self._port, self._connect_timeout, self.should_stop)

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        if self._ssl_context is None:
            raise ValueError("TLS is on without a TLS context")
        tcp_sock.setblocking(False)
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        deadline = time.monotonic() + self._connect_timeout  # the handshake's own, as paho gave it
        try:
            while True:
                try:
                    ssl_sock.do_handshake()
                    return ssl_sock
                except ssl.SSLWantReadError:
                    write = False
                except ssl.SSLWantWriteError:
                    write = True
                _wait_ready(ssl_sock, write=write, deadline=deadline, should_stop=self.should_stop,
                            what="The handshake operation timed out")
        except BaseException:
            ssl_sock.close()
            raise


class MqttConnection:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        status_topic: str,
        on_ack: AckCallback,
        on_message: MessageCallback | None = None,
        *,
        on_retained: MessageCallback | None = None,
        persistent_session: bool = False,
        will: bool = True,
        renewal: str = BOARD_RENEWAL,
        max_receive_bytes: int | None = None,
    ) -> None:
        """``persistent_session`` keeps subscriptions and queued QoS 1 messages at the broker across
        reconnects (receivers); the board's publisher keeps its session in the outbox instead.
        ``renewal``: how this client gets a new certificate when its own has expired.
        ``max_receive_bytes`` (MQTT 5): the largest packet the broker may deliver to this client; it drops
        larger ones, unread by it.
        ``on_retained`` gets the messages the broker delivers as retained (kept for their topic and given
        again at every subscribe, so at every connect); without it they go to ``on_message``."""
        self.settings = settings
        self._persistent = persistent_session
        self.status_topic = status_topic
        self._on_ack = on_ack
        self._on_message = on_message
        self._on_retained = on_retained
        self._v5 = settings.protocol == "5"
        self._max_receive_bytes = max_receive_bytes
        self._connack: tuple[bool, str] | None = None
        self.max_packet_size: int | None = None  # the broker's limit from CONNACK (MQTT 5), if it set one
        self._lost: str | None = None
        self._last_error = ""
        version = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        kwargs: dict[str, Any] = {} if self._v5 else {"clean_session": not persistent_session}
        self._client = _StoppableClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs
        )
        self._client.should_stop = lambda: False
        self._client.connect_timeout = settings.connect_timeout_s  # each address's, and the handshake's
        self._client.max_inflight_messages_set(settings.inflight_max)
        # 0 leaves paho's own queue unbounded; the publisher never has more than inflight_max messages
        # unacknowledged, so nothing waits there (the outbox in SQLite is the bounded queue)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message
        self._client.on_log = self._handle_log
        self._client.on_socket_close = self._drain_before_close
        self._drain_until: float | None = None  # set by disconnect(): read until the broker closes
        self._offline_mid: int | None = None  # disconnect()'s "offline" until its PUBACK
        if will:
            self._client.will_set(status_topic, b"offline", qos=1, retain=True)
        self._will = will
        self._renewal = renewal
        if settings.tls:
            self._client.tls_set_context(tls_context(settings, renewal))

    # -- paho callbacks (run inside loop(), on the caller's thread) ------------------------------------

    def _handle_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, props: Any) -> None:
        self._connack = (not reason.is_failure, str(reason))
        limit = getattr(props, "MaximumPacketSize", None)
        self.max_packet_size = int(limit) if isinstance(limit, int) and limit > 0 else None

    def _handle_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._lost = str(reason)

    def _handle_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        if mid == self._offline_mid and not reason.is_failure:
            self._offline_mid = None  # the broker holds "offline": a DISCONNECT may now discard the will
        self._on_ack(mid, not reason.is_failure, str(reason))

    def _handle_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        callback = self._on_retained if message.retain and self._on_retained else self._on_message
        if callback is not None:
            callback(message.topic, bytes(message.payload))

    def _drain_before_close(self, _c: Any, _u: Any, sock: Any) -> None:
        """After our DISCONNECT, read (and drop) until the broker closes, then close.

        A socket closed with bytes still unread (a SUBACK, the next PUBLISH) is reset (RST), not closed,
        and Mosquitto then drops what it had not yet read from us: the PUBACKs of the last messages the
        receiver stored, and the DISCONNECT. Its session kept those messages, so the next receiver got
        them again (2.0.11 under load: a test's rejected heartbeats counted twice). What arrives here is
        not acknowledged: the broker's session keeps it for the next connection."""
        if self._drain_until is None:
            return
        while (left := self._drain_until - time.monotonic()) > 0:
            try:
                readable, _w, _x = select.select([sock], [], [], left)
                if not readable or not sock.recv(65536):
                    return  # the deadline, or the broker closed: it has read all we sent
            except ssl.SSLWantReadError:
                continue
            except OSError:  # a reset, a TLS EOF: nothing more to read
                return

    def _handle_log(self, _c: Any, _u: Any, level: int, text: str) -> None:
        # Keep the first error: paho follows a TLS alert with generic "not connected" lines.
        if level == paho.MQTT_LOG_ERR and not self._last_error:
            self._last_error = text

    # -- operations ----------------------------------------------------------------------------------

    def connect(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Open the session and wait for CONNACK (at most connect_timeout_s, or until ``should_stop``).

        A broker that accepts TCP but never answers, a firewall that drops the SYNs, a port that never
        answers the TLS handshake: none may hold up a SIGTERM for the whole timeout.
        """
        s = self.settings
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0xFFFFFFFF if self._persistent else 0
            if self._max_receive_bytes is not None:  # the broker drops larger messages for this client
                props.MaximumPacketSize = self._max_receive_bytes
        clean: Any = not self._persistent if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        started = time.monotonic()
        self._client.should_stop = should_stop
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=clean, properties=props)
        except TimeoutError as exc:  # a wrong port, a proxy or a firewall that swallows the handshake
            what = "connection and TLS handshake" if s.tls else "connection"
            addresses = address_count(s.host, s.port)
            over = f" (its {addresses} addresses, {s.connect_timeout_s:g} s each)" if addresses > 1 else ""
            raise SyncConnectError(
                f"the broker {s.host}:{s.port} did not complete the {what} within "
                f"{time.monotonic() - started:.0f} s{over}: is mqtt.port the broker's port, does a "
                f"firewall let it through, and is the broker itself running (not hung)? ({exc})"
            ) from exc
        except (OSError, ValueError) as exc:
            # The TLS handshake is part of connect(): a reset there was reported as "cannot reach the
            # broker; check the network and mqtt.host", of a broker that answered on a plain port.
            if s.tls and isinstance(exc, OSError) and not_tls(exc):
                raise SyncTlsError(
                    f"the broker's port {s.host}:{s.port} answered, but not with TLS ({exc}): is mqtt.port "
                    "its TLS port (8883), or should mqtt.tls be false?"
                ) from exc
            if isinstance(exc, ssl.SSLError):
                raise SyncTlsError(_explain_tls(str(exc), s, self._renewal)) from exc
            raise SyncConnectError(
                f"cannot reach the MQTT broker {s.host}:{s.port}: {exc}; check the network and mqtt.host"
            ) from exc
        deadline = time.monotonic() + s.connect_timeout_s
        while self._connack is None:
            if should_stop():
                self.close()
                raise SyncConnectError("stopped while waiting for the broker to accept the connection")
            if time.monotonic() > deadline:
                self.close()
                raise SyncConnectError(
                    f"the broker {s.host}:{s.port} did not answer within {s.connect_timeout_s} s"
                )
            rc = self._client.loop(0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._connack is None:
                self.close()
                raise self._connect_failure(time.monotonic() - started)
        accepted, reason = self._connack
        self._last_error = ""
        if not accepted:
            self.close()
            if "authori" in reason.lower() or "password" in reason.lower():
                raise SyncAuthError(
                    f"the broker {s.host} refused this device: {reason}; check its certificate and the ACL"
                )
            raise SyncConnectError(f"the broker {s.host} refused the connection: {reason}")
        if self._will:
            self.publish(self.status_topic, b"online", retain=True)

    def _connect_failure(self, waited: float) -> SyncConnectError:
        """Why the session ended before CONNACK, ``waited`` s after the connection was opened."""
        text = self._last_error or self._lost or "connection closed"
        s = self.settings
        tls_ended = _TLS_MARKERS.search(text)
        if s.tls and tls_ended:
            return SyncTlsError(_explain_tls(text, s, self._renewal))
        if waited >= s.keepalive_s and not tls_ended:
            # paho gave up at its keepalive, before connect_timeout_s: a hung broker was said to have
            # "closed the connection" with advice about TLS (a review, keepalive_s = 5)
            return SyncConnectError(
                f"the broker {s.host}:{s.port} took the connection but did not answer within {waited:.0f} s "
                "(mqtt.keepalive_s): it is hung or overloaded, or something between drops its replies"
            )
        # A TLS listener resets a connection that opens with a plain CONNECT
        advice = "" if self.settings.tls else "; if this port requires TLS, set mqtt.tls = true"
        return SyncConnectError(
            f"the broker {self.settings.host}:{self.settings.port} closed the connection before accepting "
            f"it ({text}){advice}"
        )

    @property
    def connected(self) -> bool:
        return self._connack is not None and self._connack[0] and self._lost is None

    def loop(self, timeout: float) -> None:
        """Exchange network traffic for up to ``timeout`` s; SyncConnectError when the session is lost."""
        if self._lost is None:
            rc = self._client.loop(timeout)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._lost is None:
                self._lost = paho.error_string(rc)
        if self._lost is not None:
            raise SyncConnectError(f"lost the connection to the broker: {self._last_error or self._lost}")

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, expiry_s: float | None = None
    ) -> int:
        """Hand one message to the session; returns its mid (its PUBACK arrives through on_ack)."""
        props = None
        if self._v5 and expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = min(max(1, int(expiry_s)), 0xFFFFFFFF)  # a 32-bit field
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SyncPublishError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def packet_bytes(self, topic: str, payload_bytes: int, *, qos: int = 1, expiry: bool = False) -> int:
        """The size of the PUBLISH packet :meth:`publish` sends for these arguments (``expiry``: an
        ``expiry_s`` is given)."""
        return publish_packet_bytes(topic, payload_bytes, v5=self._v5, qos=qos, expiry=expiry)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Over MQTT 5 with Retain-As-Published: without it the broker clears the retain flag of a message
        published while this client is subscribed, so a retained command reached every board online as a
        live one (and ran) and was refused only by those connecting later. MQTT 3.1.1 has no such option:
        there a retained message is told apart only when given at subscribe (connect)."""
        if self._v5:
            options = SubscribeOptions(qos=qos, retainAsPublished=True)
            rc, _mid = self._client.subscribe(topic, options=options)
        else:
            rc, _mid = self._client.subscribe(topic, qos=qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SyncConnectError(f"subscribe to {topic} failed: {paho.error_string(rc)}")

    def disconnect(self, timeout: float = 2.0) -> None:
        """Say ``offline`` (retained) and close cleanly; bounded by ``timeout``.

        A DISCONNECT makes the broker discard the will, so it is sent only once the broker acknowledged
        "offline": over a slow link the message waited behind a full in-flight window, the DISCONNECT went
        first, and the stopped board stayed "online" (a review). Else the session is dropped (close()).
        """
        if self.connected:
            try:
                deadline = time.monotonic() + timeout
                if self._will:
                    self._offline_mid = self.publish(self.status_topic, b"offline", retain=True)
                    while self._offline_mid is not None and time.monotonic() < deadline:
                        self.loop(0.05)
                if self._offline_mid is None:
                    self._drain_until = deadline
                    self._client.disconnect()
                    while self._lost is None and time.monotonic() < deadline:
                        self._client.loop(0.05)
            except SyncError as exc:
                log.info("clean MQTT disconnect did not complete: %s", exc)
        self.close()

    def close(self) -> None:
        """Drop the session without a DISCONNECT, so that the broker publishes the will ("offline"): after
        an error a DISCONNECT left the board "online" at the broker for good (a review)."""
        self._lost = self._lost or "closed"
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket too; None once paho closed it
            with contextlib.suppress(OSError):  # already reset or closed
                sock.shutdown(socket.SHUT_RDWR)  # a FIN after all that was sent; no DISCONNECT can follow
        try:
            self._client.disconnect()  # paho's own state: its DISCONNECT cannot be sent any more
        except Exception:  # paho raises assorted errors on a half-open socket; we are discarding it
            log.debug("closing the MQTT socket raised", exc_info=True)
        self._client.loop(0)  # releases the socket
