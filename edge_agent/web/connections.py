"""Connection limits for the board's HTTP ports (teacher view and answer API, metrics).

aiohttp holds a connection that never finishes its request head for as long as the client likes, and
checks the token only once the head is complete. One phone on the classroom Wi-Fi held 2,000 such
sockets with no token (security audit); at the systemd default of 1,024 files that stopped every request,
the MQTT reconnect and the model inbox. :class:`GuardedTCPSite` therefore closes a connection whose first
request head is not complete within ``head_timeout_s``, allows ``per_peer`` open connections per remote
address and ``total`` from other hosts in all (loopback, the board itself, is not limited), and counts
what it refuses. Idle keep-alive connections close after ``KEEPALIVE_S``. With HTTPS a connection is counted
and timed from its accept, its TLS handshake within the head's deadline: served by asyncio's ``ssl=``, the
guard saw it only once its handshake was done, and one address held 650 unfinished handshakes, past the
process's open-file limit, while the limits counted none (a review).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import collections
import errno
import logging
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge_agent.errors import ConfigError
from edge_agent.telemetry import metrics
from edge_agent.web.access import is_loopback

HEAD_TIMEOUT_S = 10.0
KEEPALIVE_S = 75.0  # an idle keep-alive connection closes after this (aiohttp's default is an hour)
PER_PEER = 32  # a browser opens about 6; a clicker base station a few
TOTAL = 1024  # the units allow 16,384 open files
_HEAD_END = b"\r\n\r\n"


class _ClientFaults(logging.Filter):
    """Drops aiohttp's ERROR tracebacks for requests it refused itself as malformed (400-499, before any
    handler: a head it cannot parse, Content-Encoding: br or zstd it cannot decode). It answers them 400;
    logged, they were 0.9 KB each, with no token needed (round 2: 183 KB in 2.9 s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)
        return not (isinstance(exc, HttpProcessingError) and isinstance(code, int) and 400 <= code < 500)


# both sites (web and metrics) log through aiohttp's one logger
logging.getLogger("aiohttp.server").addFilter(_ClientFaults())


def server_tls_context(cert_file: Path | None, key_file: Path | None, key: str) -> ssl.SSLContext | None:
    """The TLS context to serve HTTPS with, or None for plain HTTP (no files); ConfigError, under the
    config ``key`` that names the certificate, for files that cannot serve (unreadable, not PEM, a key
    that does not belong to the certificate)."""
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([(
            key,
            f"cannot serve HTTPS with {cert_file} and {key_file}: "
            f"{getattr(exc, 'strerror', None) or exc} (both PEM, the key belonging to the certificate; "
            "re-run provisioning, or empty both keys for plain HTTP)",
        )]) from exc
    return context


def listen_failure(section: str, host: str, port: int, exc: OSError) -> tuple[str, str]:
    """The config key and message for a listener that could not start: the fix depends on why (every
    failure said "does another program use it? change web.port", a host that is not this board's too)."""
    said = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    port_key = f"{section}.port"
    if exc.errno == errno.EACCES:
        return port_key, f"{said} (ports below 1024 need root, which edge-agent lacks: use 1024 or more)"
    if exc.errno == errno.EADDRINUSE:
        return port_key, f"{said} (another program uses it: change {port_key} or stop that program)"
    # not an address of this board (an old DHCP lease, a typo) or a name that does not resolve
    return f"{section}.host", f"{said} (is {host!r} an address of this board? 0.0.0.0 listens on all of them)"


class ConnectionLimits:
    def __init__(self, port_name: str, per_peer: int = PER_PEER, total: int = TOTAL,
                 head_timeout_s: float = HEAD_TIMEOUT_S, *, limit_loopback: bool = False) -> None:
        self.port_name = port_name
        self.per_peer = per_peer
        self.limit_loopback = limit_loopback
        self.total = total
        self.head_timeout_s = head_timeout_s
        self.open: collections.Counter[str] = collections.Counter()
        self._others = 0  # open connections that count towards ``total``

    def admit(self, peer: str) -> str | None:
        """Count a new connection from ``peer``; the reason it is refused, or None. The board's own
        loopback is refused by neither limit: its screen and tools stay in when the network is noisy."""
        limited = self._limited(peer)
        if limited and self._others >= self.total:
            return "total"
        if limited and self.open[peer] >= self.per_peer:
            return "per_peer"
        self.open[peer] += 1
        self._others += limited
        return None

    def release(self, peer: str) -> None:
        self.open[peer] -= 1
        self._others -= self._limited(peer)
        if self.open[peer] <= 0:
            del self.open[peer]

    def _limited(self, peer: str) -> bool:
        return self.limit_loopback or not is_loopback(peer)


class _Guard(asyncio.Protocol):
    """Stands between the event loop and aiohttp's protocol for one connection. With ``tls``, between
    asyncio's TLS layer and aiohttp's: the accepted socket is counted first, then its handshake starts."""

    def __init__(self, inner: Any, limits: ConnectionLimits, tls: ssl.SSLContext | None = None) -> None:
        self._inner = inner
        self._limits = limits
        self._tls = tls
        self._peer: str | None = None
        self._head = b""  # the last bytes of the first request head, until its end is seen; empty: not begun
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._peer is not None:  # the TLS session over the counted socket, its handshake done
            self._transport = transport
            self._inner.connection_made(transport)
            return
        address = transport.get_extra_info("peername")
        peer = str(address[0]) if isinstance(address, tuple) and address else "unknown"
        refused = self._limits.admit(peer)
        if refused is not None:
            metrics.HTTP_CONNECTIONS_REFUSED.labels(port=self._limits.port_name, reason=refused).inc()
            transport.abort()  # before aiohttp sees it: connection_lost below then has nothing to tell it
            return
        self._peer = peer
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._limits.head_timeout_s, self._too_slow)
        if self._tls is None:
            self._inner.connection_made(transport)
            return
        # What create_server(ssl=...) does at accept, here after the count: the TLS layer calls this
        # protocol's connection_made again once its handshake is done, and its connection_lost only then;
        # a handshake that fails or is cut off (the head's deadline) ends in the waiter.
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(self._handshake_ended)
        deadline: Any = self._limits.head_timeout_s  # typeshed says int; asyncio takes seconds as a float
        layer = asyncio.sslproto.SSLProtocol(loop, self, self._tls, waiter, server_side=True,
                                             ssl_handshake_timeout=deadline)
        transport.set_protocol(layer)
        layer.connection_made(transport)

    def _handshake_ended(self, waiter: asyncio.Future[None]) -> None:
        if (waiter.cancelled() or waiter.exception() is not None) and self._peer is not None:
            self._forget()

    def _too_slow(self) -> None:
        if self._transport is not None and self._timer is not None:
            metrics.HTTP_CONNECTIONS_REFUSED.labels(port=self._limits.port_name, reason="head_timeout").inc()
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            window = self._head + data
            if not self._head:
                # aiohttp skips empty lines before the request line: "\r\n\r\n" sent first is no head's
                # end (a review: such a client then trickled its head for the 75-s keep-alive)
                window = window.lstrip(b"\r\n")
            if _HEAD_END in window:
                self._timer.cancel()
                self._timer, self._head = None, b""
            else:
                self._head = window[-(len(_HEAD_END) - 1):]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None:
            return  # refused in connection_made: aiohttp never saw this connection
        self._forget()
        self._inner.connection_lost(exc)

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._limits.release(self._peer)  # type: ignore[arg-type]
        self._peer = None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through :class:`ConnectionLimits`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner, as TCPSite.start does
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guard(server(), self.limits, self._ssl_context), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
