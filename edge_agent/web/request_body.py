"""Reading a request body within a deadline.

aiohttp waits for a request body for as long as the client takes. A tablet whose battery died, or that
left the Wi-Fi, in the middle of a POST held its connection, and one of the 32 places its address gets,
until TCP keepalive gave up about 2 h 11 min later; a client that sends a byte now and then, for ever.
A handler reads its body through :func:`read_within`; the web app's error middleware answers
:class:`BodyTooSlow` with 408 and closes the connection (aiohttp first reads on for at most 10 s, so that
a client still sending is not reset before it reads the answer).

aiohttp answers ``Expect: 100-continue`` before the middlewares run, so a client without a token was told
to send its body, up to 1 MiB, only to get 401. A route given ``expect_handler=defer_continue`` sends it
from its handler, past the token, with :func:`send_continue` just before it reads the body. A response
sent without it (401, 413, 415, 503) closes the connection (:func:`close_if_body_unasked`): the client may
send the body anyway, and on a kept-alive connection it was read as the next request (400 "Invalid method");
and at once (:func:`close_at_once_if_body_unasked`), not after aiohttp's 10 s wait for that body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import HttpVersion11, hdrs, web

from edge_agent import json_input
from edge_agent.errors import InputRejected

# Request key: the client was asked to wait for "100 Continue", not yet sent it (aiohttp 3.14 warns about
# plain string keys; earlier releases, which Python 3.10 may get, have no RequestKey)
_CONTINUE_DEFERRED: Any = (web.RequestKey("continue_deferred", bool) if hasattr(web, "RequestKey")
                           else "edge_agent.continue_deferred")
BODY_TIMEOUT_S = 30.0  # 1 MiB (the largest body taken) in 30 s is 35 KB/s: Wi-Fi at its weakest manages more
T = TypeVar("T")


class BodyTooSlow(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not all arrive within {timeout_s:g} s; nothing of it was "
                         "applied: send it again")


def _expects_continue(request: web.Request) -> bool:
    return request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"


async def defer_continue(request: web.Request) -> None:
    """A route's expect_handler that sends nothing: the handler calls :func:`send_continue` (aiohttp's
    default sends it before the token is checked). Another Expect gets 417, as by default."""
    if request.version == HttpVersion11 and not _expects_continue(request):
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers[hdrs.EXPECT][:40]}")
    request[_CONTINUE_DEFERRED] = True


async def send_continue(request: web.Request) -> None:
    """"100 Continue" where the client waits for it before sending the body (a route with
    ``expect_handler=defer_continue``)."""
    if request.get(_CONTINUE_DEFERRED) and _expects_continue(request):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own: the response proper has not started
    request[_CONTINUE_DEFERRED] = False


async def close_if_body_unasked(request: web.Request, response: web.StreamResponse) -> None:
    """An on_response_prepare hook: a final answer to a client still waiting for "100 Continue" closes the
    connection (RFC 9110 10.1.1), so a body it sends anyway is never read as its next request."""
    if request.get(_CONTINUE_DEFERRED):
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"  # aiohttp set this header before its hooks ran


@web.middleware
async def close_at_once_if_body_unasked(request: web.Request, handler: Any) -> web.StreamResponse:
    """The outermost middleware: a final answer to a client still waiting for "100 Continue" (401, 403, 413,
    415, 503) is sent and the connection closed at once. The client sends no body, yet aiohttp waited up to
    10 s for the one announced (lingering close), and the connection held one of its address's 32 places
    that long (a review). A client that asked for no "100 Continue" gets the usual close, after its body,
    so that it reads the answer instead of a reset."""
    response: web.StreamResponse = await handler(request)
    if request.get(_CONTINUE_DEFERRED) and _expects_continue(request) and not response.prepared:
        await response.prepare(request)  # with Connection: close (close_if_body_unasked)
        await response.write_eof()
        request.protocol.force_close()  # the transport sends what it holds, then closes
    return response


async def read_within(request: web.Request, read: Awaitable[T]) -> T:
    """``read`` (a read of ``request``'s body), or BodyTooSlow once BODY_TIMEOUT_S has passed."""
    if request.content.is_eof():  # all there already, as a clicker's small JSON nearly always is
        return await read  # (asyncio.wait_for costs 17 us a request on Python 3.11)
    try:
        return await asyncio.wait_for(read, BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BodyTooSlow(BODY_TIMEOUT_S) from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON (within the deadline, by the board's one parser); InputRejected says what is wrong
    with it. A body over the size limit raises aiohttp's HTTPRequestEntityTooLarge."""
    try:
        return await read_within(request, request.json(loads=json_input.loads))
    except LookupError:  # an unknown charset in Content-Type
        raise InputRejected(f"unknown charset {request.charset!r}; send UTF-8 JSON") from None
    except json_input.JSONRefused as exc:  # a name twice, NaN, nested deeper than the board parses
        raise InputRejected(f"the request body is not accepted: {exc}") from None
    except UnicodeDecodeError:  # a GBK or Latin-1 body read as "not valid JSON", leaving clients guessing
        raise InputRejected("the request body is not UTF-8 text; send UTF-8 JSON (or name its charset in "
                            "Content-Type)") from None
    except json.JSONDecodeError as exc:
        raise InputRejected(f"the request body is not valid JSON {json_input.where_invalid(exc)}") from None
    except ValueError:
        raise InputRejected("the request body is not valid JSON") from None
