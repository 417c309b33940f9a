"""Reading a request body within a deadline.

aiohttp waits for a request body for as long as the client takes. A tablet whose battery died, or that
left the Wi-Fi, in the middle of a POST held its connection, and one of the 32 places its address gets,
until TCP keepalive gave up about 2 h 11 min later; a client that sends a byte now and then, for ever.
A handler reads its body through :func:`read_within`; the web app's error middleware answers
:class:`BodyTooSlow` with 408 and closes the connection (aiohttp first reads on for at most 10 s, so that
a client still sending is not reset before it reads the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

BODY_TIMEOUT_S = 30.0  # 1 MiB (the largest body taken) in 30 s is 35 KB/s: Wi-Fi at its weakest manages more
T = TypeVar("T")


class BodyTooSlow(Exception):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not all arrive within {timeout_s:g} s; nothing of it was "
                         "applied: send it again")


async def read_within(request: web.Request, read: Awaitable[T]) -> T:
    """``read`` (a read of ``request``'s body), or BodyTooSlow once BODY_TIMEOUT_S has passed."""
    if request.content.is_eof():  # all there already, as a clicker's small JSON nearly always is
        return await read  # (asyncio.wait_for costs 17 us a request on Python 3.11)
    try:
        return await asyncio.wait_for(read, BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BodyTooSlow(BODY_TIMEOUT_S) from None
