"""The board's web server: one aiohttp app with the access rule, the teacher view and mounted routes.

:func:`build_app` assembles the app (tests and the daemon share it); :class:`WebComponent` runs it as a
daemon component. It never installs signal handlers: the daemon owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from edge_agent.config import WebSettings
from edge_agent.errors import ConfigError
from edge_agent.lifecycle import Health
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.web.access import PUBLIC_PATHS, access_middleware, login_routes
from edge_agent.web.clients import Clients, watch_clients
from edge_agent.web.connections import (
    KEEPALIVE_S,
    ConnectionLimits,
    GuardedTCPSite,
    listen_failure,
    server_tls_context,
)
from edge_agent.web.request_body import BodyTooSlow, close_at_once_if_body_unasked, close_if_body_unasked
from edge_agent.web.view import StatusFn, TeacherView

log = logging.getLogger(__name__)

VIEW_KEY = web.AppKey("teacher_view", TeacherView)
SHUTDOWN_TIMEOUT_S = 3.0
MAX_BODY_BYTES = 1024 * 1024  # answer batches are small; anything bigger is a mistake or an attack


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # The page loads only its own files; nothing may frame it or sniff types.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # No address leaves the board for another site; the board's own posts carry their Origin (with
    # no-referrer its sign-out form said "Origin: null", as a page of another site can: a review)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/api/"):  # class and student data: never kept by a browser or proxy
        response.headers.setdefault("Cache-Control", "no-store")
    elif request.path.startswith("/static/"):
        # Asked again each time (a 304 while unchanged): without it browsers kept app.js for a tenth of
        # its age, and after an upgrade the new page ran the old script for days (a review).
        response.headers.setdefault("Cache-Control", "no-cache")
    response.headers["Server"] = "edge-agent"  # not the Python and aiohttp versions


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A bug in a handler answers JSON 500 that says where to look, not aiohttp's plain-text page; under
    /api/ a wrong path or method answers JSON too, naming what exists (a vendor's client parses JSON)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except BodyTooSlow as exc:
        metrics.HTTP_CONNECTIONS_REFUSED.labels(port="web", reason="body_timeout").inc()
        slow = web.json_response({"error": str(exc)}, status=408)
        slow.force_close()  # Connection: close; aiohttp reads on for at most 10 s, then closes
        return slow
    except RequestPayloadError as exc:
        # A body aiohttp cannot decode (Content-Encoding: gzip over bytes that are not): the client's fault,
        # answered 400, not logged (a review: 500 and two tracebacks, 5.6 KB of log per request without a
        # token: 11 MB in 15 s)
        metrics.HTTP_CONNECTIONS_REFUSED.labels(port="web", reason="bad_body").inc()
        # "400, message:\n  Can not decode content-encoding: gzip": the words after "message:"
        why = " ".join(str(exc).partition("message:")[2].split()) or str(exc)
        refused = web.json_response({"error": f"the request body could not be read: {why}"}, status=400)
        refused.force_close()  # what is left of the body on the connection is not a next request
        request.content.feed_eof()  # else aiohttp reads on after the answer, meets the error again, logs it
        return refused
    except ConnectionResetError:
        # The client went away mid-body (a tablet closed, an app killed): nobody to answer, nothing applied,
        # and no failure of the board's (a review: a traceback logged as ERROR for each)
        metrics.HTTP_CONNECTIONS_REFUSED.labels(port="web", reason="client_gone").inc()
        gone = web.json_response({"error": "the connection closed before the request body was all there"},
                                 status=400)
        gone.force_close()
        return gone
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status in (404, 405) and exc.content_type == "text/plain":
            return _api_route_error(request, exc)
        raise
    except Exception:
        if request.writer.output_size:  # a stream already under way: nothing else can be sent on it
            raise
        log.exception("the web server failed on %s %s", request.method, request.path)
        body = {"error": "internal error on the board; its log has the details (journalctl -u edge-agent)"}
        return web.json_response(body, status=500)


def _api_route_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        body = {"error": f"{request.path} does not take {request.method}; use {allowed or 'another method'}"}
        return web.json_response(body, status=405, headers={"Allow": allowed})
    body = {"error": f"no endpoint {request.method} {request.path} on this board; the answer API is "
                     "POST /api/v1/answers (see docs/answer-api.md)"}
    return web.json_response(body, status=404)


async def _close_streams(app: web.Application) -> None:
    app[VIEW_KEY].close()


def build_app(
    live: LiveBoard,
    settings: WebSettings,
    token: str | None,
    route_tables: Sequence[web.RouteTableDef] = (),
    status: StatusFn | None = None,
    *,
    public_paths: Collection[str] = PUBLIC_PATHS,
    keepalive_s: float = 15.0,
    clients: Clients | None = None,
    timezone: str = "",
    board_name: str = "",
) -> web.Application:
    """The web app: access middleware, teacher view, and every table in ``route_tables``; the view shows
    times in ``timezone`` (device.timezone; empty: the browser's zone) and names the class ``board_name``
    (device.display_name, else device.class_id) in its header and title."""
    app = web.Application(
        middlewares=[close_at_once_if_body_unasked, _json_errors,
                     access_middleware(token, public_paths, clients)],
        client_max_size=MAX_BODY_BYTES,
    )
    view = TeacherView(live, settings.default_language, status=status, keepalive_s=keepalive_s,
                       timezone=timezone, board_name=board_name)
    app[VIEW_KEY] = view
    app.add_routes(view.routes())
    app.add_routes(login_routes())
    for table in route_tables:
        app.add_routes(table)
    app.on_response_prepare.append(_security_headers)
    app.on_response_prepare.append(close_if_body_unasked)
    app.on_shutdown.append(_close_streams)
    return app



def local_host(host: str) -> str:
    """Where a program on the board reaches a port listening on ``host``, as a URL's host: loopback for a
    wildcard, the address itself otherwise (bound to one LAN or VPN address, 127.0.0.1 is refused). '::'
    is IPv6 only (asyncio sets IPV6_V6ONLY), so its loopback is ::1; a review found 127.0.0.1 refused."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host

class WebComponent:
    """Serves :func:`build_app` on ``settings.host:settings.port``; ``port`` is the bound one (for port 0)."""

    name = "web"
    essential = False  # the board keeps collecting and syncing without its teacher view

    def __init__(
        self,
        settings: WebSettings,
        live: LiveBoard,
        token: str | None,
        route_tables: Sequence[web.RouteTableDef] = (),
        status: StatusFn | None = None,
        *,
        port: int | None = None,
        keepalive_s: float = 15.0,
        timezone: str = "",
        board_name: str = "",
    ) -> None:
        self._settings = settings
        self._timezone = timezone
        self._board_name = board_name
        self._live = live
        self._token = token
        self._route_tables = tuple(route_tables)
        self._status = status
        self._port_override = port  # tests pass 0; WebSettings forbids it
        self._keepalive_s = keepalive_s
        # Read here, not at start: the daemon shows the file's health among its components from the start.
        tokens = settings.client_tokens_file
        self.clients = None if tokens is None else watch_clients(tokens)
        self._runner: web.AppRunner | None = None
        self._error: str | None = None
        self._scheme = "http"
        self.port: int | None = None

    async def start(self) -> None:
        self._live.bind_loop(asyncio.get_running_loop())
        app = build_app(self._live, self._settings, self._token, self._route_tables, self._status,
                        keepalive_s=self._keepalive_s, clients=self.clients, timezone=self._timezone,
                        board_name=self._board_name)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None,
            keepalive_timeout=KEEPALIVE_S,
        )
        await runner.setup()
        port = self._settings.port if self._port_override is None else self._port_override
        try:
            settings = self._settings
            tls = server_tls_context(settings.tls_cert_file, settings.tls_key_file, "web.tls_cert_file")
        except ConfigError as exc:
            await runner.cleanup()
            self._error = exc.problems[0][1]
            raise
        self._scheme = "http" if tls is None else "https"
        site = GuardedTCPSite(runner, self._settings.host, port, ConnectionLimits("web"), tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            key, self._error = listen_failure("web", self._settings.host, port, exc)
            raise ConfigError([(key, self._error)]) from exc
        self._runner = runner
        self.port = _bound_port(runner.addresses)
        self._error = None
        remote = "token required" if self._token else "loopback only"
        log.info("teacher view listening on %s://%s:%s (%s)", self._scheme, self._settings.host, self.port,
                 remote)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=SHUTDOWN_TIMEOUT_S + 2.0)
        except asyncio.TimeoutError:
            log.warning("web server did not stop within %.0f s; leaving it", SHUTDOWN_TIMEOUT_S + 2.0)
        log.info("teacher view stopped")

    @property
    def local_url(self) -> str:
        """The address a browser on the board itself would open."""
        return f"{self._scheme}://{local_host(self._settings.host)}:{self.port}"

    def health(self) -> Health:
        if self._runner is not None:
            return Health(True, f"serving on port {self.port}")
        return Health(False, self._error or "not started")


def _bound_port(addresses: list[Any]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return address[1]
    return None
