"""The teacher's camera switch: ``POST /api/v1/camera/pause`` {"minutes": 1-240} closes the camera for
that long (kept across a restart), ``POST /api/v1/camera/resume`` opens it again.

Who may: whoever may see the teacher view (the board's own screen, or the board's web token); a clicker's
token may not (web/access.py). JSON only, so a web page in the board's browser cannot send it as a
"simple" cross-site form post to loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from edge_agent import json_input
from edge_agent.errors import CameraError
from edge_agent.vision.component import MAX_PAUSE_MINUTES, AttentionComponent
from edge_agent.web.request_body import defer_continue, read_within, send_continue

AttentionSource = Callable[[], AttentionComponent | None]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _not_json(request: web.Request) -> web.Response:
    return _error(415, f"send JSON, Content-Type: application/json (got {request.content_type!r})")


def _too_large(request: web.Request) -> web.Response:
    return _error(413, f'the request body is over {request.client_max_size} bytes; send {{"minutes": 45}}')


def _paused(until: datetime | None) -> web.Response:
    return web.json_response({"paused_until": None if until is None else until.timestamp()})


def camera_routes(attention: AttentionSource) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    # "100 Continue" only past the token (request_body.py): the default sent it to anyone on the LAN
    @routes.post("/api/v1/camera/pause", expect_handler=defer_continue)
    async def pause(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _not_json(request)
        if (request.content_length or 0) > request.client_max_size:  # before "100 Continue": not sent
            return _too_large(request)
        await send_continue(request)
        try:
            body = await read_within(request, request.json(loads=json_input.loads))
        except web.HTTPRequestEntityTooLarge:  # chunked past the limit: JSON, as the other /api/ errors
            return _too_large(request)
        except (ValueError, LookupError):
            return _error(400, 'the request body is not valid JSON; send {"minutes": 45}')
        minutes = body.get("minutes") if isinstance(body, dict) else None
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_PAUSE_MINUTES:
            return _error(400, f"'minutes' must be a whole number from 1 to {MAX_PAUSE_MINUTES} (got "
                               f"{minutes!r}); for whole days use camera.closed_dates")
        return await _set_pause(attention, minutes)

    @routes.post("/api/v1/camera/resume", expect_handler=defer_continue)  # its body is never read
    async def resume(request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # else a page could reopen a paused camera
            return _not_json(request)
        return await _set_pause(attention, None)

    return routes


async def _set_pause(attention: AttentionSource, minutes: int | None) -> web.Response:
    component = attention()
    if component is None:
        return _error(409, "the camera is not in use on this board (camera.enabled = false, or attention "
                           "analysis has not started)")
    try:
        # In a thread: the pause is written to the disk (fsynced), and a slow or stalled one must keep
        # only this request waiting, not every answer on the event loop.
        return _paused(await asyncio.to_thread(component.pause, minutes))
    except CameraError as exc:
        return _error(409, str(exc))
