"""The teacher view: the page, its bundled assets and translations, and the live data behind it.

``/`` is the page with the current board state and the default language's strings inlined, so the first
paint needs no further request; ``/api/v1/events`` then streams every LiveBoard update as a server-sent
event. Everything the page loads comes from this board: no CDN, no outside fonts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import json
import logging
import math
import numbers
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.live import RESYNC, LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.web.access import EVENTS_PATH, SESSION_KEY, Session, is_loopback

log = logging.getLogger(__name__)

WEB_DIR = Path(str(resources.files("edge_agent.web")))
STATIC_DIR = WEB_DIR / "static"
I18N_DIR = WEB_DIR / "i18n"
LANGUAGES = ("zh-CN", "en")
LANG_COOKIE = "edge_agent_lang"  # app.js sets it; not a secret, so readable by the page
_LANG_RE = re.compile(r"^[A-Za-z]{2}(-[A-Za-z]{2})?$")
SSE_RETRY_MS = 3000
REFUSED_RETRY_S = 10  # a browser refused a stream (503) tries again after this long; app.js reads it
MAX_STREAMS_PER_PEER = 4  # a teacher's laptop, a phone, and a tab or two
STALL_KEEPALIVES = 2  # a browser that takes no data for this many keepalive periods is gone or frozen

StatusFn = Callable[[], dict[str, Any]]


def sse_event(data: Any, event: str | None = None, event_id: int | None = None) -> bytes:
    """One server-sent event; JSON never contains a raw newline, so one ``data:`` line suffices."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def script_json(data: Any) -> str:
    """JSON safe to inline in <script type="application/json">: no '</script>' or '<!--' can break out."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def load_messages(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    data = json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"i18n file {lang}.json must hold one JSON object")
    return data


def _json_safe(data: Any) -> Any:
    """A copy with NaN/inf as None and odd types as str, so one bad producer value cannot break the page."""
    if data is None or isinstance(data, (str, bool)):
        return data
    if isinstance(data, numbers.Integral):
        return int(data)
    if isinstance(data, numbers.Real):
        value = float(data)
        return value if math.isfinite(value) else None
    if isinstance(data, dict):
        return {str(key): _json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_json_safe(value) for value in data]
    return str(data)


class TeacherView:
    """Request handlers for the view; one per app. ``close()`` ends every open event stream."""

    def __init__(
        self,
        live: LiveBoard,
        default_language: str,
        status: StatusFn | None = None,
        keepalive_s: float = 15.0,
        max_streams: int = 32,
        *,
        timezone: str = "",
        board_name: str = "",
    ) -> None:
        if default_language not in LANGUAGES:
            raise ValueError(f"web.default_language must be one of {', '.join(LANGUAGES)}")
        self._live = live
        self._default_language = default_language
        self._status = status
        self._keepalive_s = keepalive_s
        self._stall_s = STALL_KEEPALIVES * keepalive_s
        self._max_streams = max_streams
        # device.timezone (IANA): the page shows times in it, not in the browser's zone. Boards are often
        # left on UTC, and so is the board's own screen; empty: the browser's zone.
        self._timezone = timezone
        # device.display_name (else class_id): two boards open in two tabs looked the same (a review)
        self._board_name = board_name
        self._closing = asyncio.Event()
        self.open_streams = 0
        self._streams_of: collections.Counter[str] = collections.Counter()  # open streams per address
        self.refused_streams = 0  # streams over max_streams, answered 503
        self.stalled_streams = 0  # streams ended because the browser stopped taking data
        self._template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        self._messages = {lang: load_messages(lang) for lang in LANGUAGES}

    def routes(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        routes.get("/")(self.index)
        routes.get("/i18n/{lang}.json")(self.i18n)
        routes.get("/api/v1/live")(self.snapshot)
        # no HEAD: its answer was the endless stream, written after a head that promised no body (a
        # review: the next request on the connection read "retry: 3000" as its status line)
        routes.get(EVENTS_PATH, allow_head=False)(self.events)
        routes.get("/api/v1/status")(self.status)
        routes.static("/static", STATIC_DIR, append_version=False)
        return routes

    def close(self) -> None:
        self._closing.set()

    def _snapshot(self) -> dict[str, Any]:
        snap = self._live.snapshot()
        snap["server_time"] = time.time()
        snap["timezone"] = self._timezone
        return _json_safe(snap)

    async def index(self, request: web.Request) -> web.Response:
        # The language this browser chose last (app.js keeps it in a cookie): the page starts in it instead
        # of flashing the board's default while the other translation loads.
        chosen = request.cookies.get(LANG_COOKIE, "")
        lang = chosen if chosen in LANGUAGES else self._default_language
        boot = {
            "default_language": self._default_language,
            "language": lang,
            "languages": list(LANGUAGES),
            "messages": {lang: self._messages[lang]},
            "snapshot": self._snapshot(),
            "retry_refused_s": REFUSED_RETRY_S,
            "board_name": self._board_name,
            "keepalive_s": self._keepalive_s,  # app.js reconnects after 2.5 of these without a byte
            # signed in from another computer: the page offers to sign out (a shared classroom PC)
            "signed_in": request.get(SESSION_KEY) is not None,
        }
        # One pass: a class named "{{BOOT_JSON}}" must stay a name
        fills = {"LANG": lang, "TITLE": html.escape(self.page_title(lang)), "BOOT_JSON": script_json(boot)}
        page = re.sub(r"\{\{(LANG|TITLE|BOOT_JSON)\}\}", lambda m: fills[m.group(1)], self._template)
        return web.Response(
            text=page, content_type="text/html", headers={"Cache-Control": "no-store"}, charset="utf-8"
        )

    def page_title(self, lang: str) -> str:
        """The browser tab's title (app.js writes the same): the class first, as tabs cut the end off."""
        messages = self._messages[lang]
        if self._board_name:
            return messages["page_title_named"].replace("{name}", self._board_name)
        return messages["page_title"]

    async def i18n(self, request: web.Request) -> web.Response:
        lang = request.match_info["lang"]
        if not _LANG_RE.match(lang) or lang not in self._messages:
            raise web.HTTPNotFound(text=f"no translation {lang!r}; available: {', '.join(LANGUAGES)}")
        return web.json_response(self._messages[lang])

    async def snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self._snapshot(), headers={"Cache-Control": "no-store"})

    async def status(self, request: web.Request) -> web.Response:
        data: dict[str, Any] = {
            "sse_clients": self.open_streams,
            "sse_refused": self.refused_streams,
            "sse_stalled": self.stalled_streams,
            "live_dropped_updates": self._live.dropped_updates,
        }
        if self._status is not None:
            data.update(self._status())
        return web.json_response(_json_safe(data))

    async def events(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or "unknown"
        # One computer may not hold every place: a token holder opened all 32 and the teacher got 503
        # (security audit). The board's own screen (loopback) is not limited.
        crowded = not is_loopback(peer) and self._streams_of[peer] >= MAX_STREAMS_PER_PEER
        if self.open_streams >= self._max_streams or crowded:
            self.refused_streams += 1
            metrics.TEACHER_VIEW_DROPS.labels(reason="stream_refused").inc()
            where = f"this computer has {MAX_STREAMS_PER_PEER}" if crowded else "there are too many"
            raise web.HTTPServiceUnavailable(
                text=f"{where} open teacher views on this board; close a browser tab and retry",
                headers={"Retry-After": str(REFUSED_RETRY_S)},
            )
        self._streams_of[peer] += 1
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        queue = self._live.subscribe()
        self.open_streams += 1
        metrics.TEACHER_VIEW_STREAMS.inc()
        try:
            await response.prepare(request)
            # A reconnecting browser may have missed updates: start every stream with the whole board.
            first = f"retry: {SSE_RETRY_MS}\n\n".encode() + sse_event(self._snapshot(), "snapshot")
            await self._send(response, first)
            await self._pump(response, queue, request.get(SESSION_KEY))
        except ConnectionError:
            pass  # the browser went away (a reset, or lost while we waited to send); the finally forgets it
        except asyncio.TimeoutError:
            # Its socket buffers are full: the write would wait until TCP gives up, which a client that
            # keeps the connection open but never reads can put off for ever, holding one of the places.
            self.stalled_streams += 1
            metrics.TEACHER_VIEW_DROPS.labels(reason="stream_stalled").inc()
            log.info("ended a teacher-view stream that took no data for %g s", self._stall_s)
            if request.transport is not None:
                request.transport.abort()  # drop what is buffered; closing would wait to send it
        finally:
            self._live.unsubscribe(queue)
            self.open_streams -= 1
            self._streams_of[peer] -= 1
            if self._streams_of[peer] <= 0:
                del self._streams_of[peer]
            metrics.TEACHER_VIEW_STREAMS.dec()
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        await asyncio.wait_for(response.write(data), self._stall_s)

    async def _pump(
        self, response: web.StreamResponse, queue: asyncio.Queue[dict[str, Any]],
        session: Session | None = None,
    ) -> None:
        """Send updates, and a keepalive when there is none, until the view closes or the sign-in the
        stream was opened with (``session``) ends or is signed out of, in whichever tab: the browser's
        reconnect then hears 401 and the page asks to sign in again."""
        event_id = 0
        closing = asyncio.ensure_future(self._closing.wait())
        signed_out: asyncio.Future[None] | None = None  # the board's next sign-out, of any sign-in
        try:
            while not self._closing.is_set():
                if session is not None and session.over(time.time()):
                    return
                if session is not None and (signed_out is None or signed_out.done()):
                    signed_out = asyncio.ensure_future(session.sign_outs.next_sign_out())
                getter = asyncio.ensure_future(queue.get())
                waits: set[asyncio.Future[Any]] = {getter, closing}
                if signed_out is not None:
                    waits.add(signed_out)
                done, _ = await asyncio.wait(waits, timeout=self._keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if closing in done:
                        return
                    if signed_out in done:
                        continue  # this stream's sign-in, or another's: the top of the loop tells
                    # A named event, not an SSE comment: EventSource never hands a comment to the page,
                    # and the page needs the tick to tell a quiet board from a dead link (no FIN/RST),
                    # behind which it said "Live" for as long as the drop lasted. Also keeps NAT open.
                    # With the board's time, as every event has it: app.js follows a clock NTP steps.
                    await self._send(response, sse_event({"server_time": time.time()}, "keepalive"))
                    continue
                event_id += 1
                if getter.result() is RESYNC:  # it fell behind: the whole board, as a reconnect gets
                    await self._send(response, sse_event(self._snapshot(), "snapshot", event_id))
                    continue
                update = _json_safe(getter.result()) | {"server_time": time.time()}
                await self._send(response, sse_event(update, "update", event_id))
        finally:
            closing.cancel()
            if signed_out is not None:
                signed_out.cancel()
