"""The HTTP ports' connection limits, on a real aiohttp server and real sockets."""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from edge_agent.telemetry import metrics
from edge_agent.web.connections import ConnectionLimits, GuardedTCPSite


async def _serve(limits: ConnectionLimits, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    """A real aiohttp app answering "ok" on /, behind the guard (with HTTPS where ``tls``)."""
    app = web.Application()
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedTCPSite(runner, "127.0.0.1", 0, limits, tls)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), within) == b""
    except ConnectionResetError:
        return True


def _refused(reason: str) -> float:
    return metrics.sample("edge_http_connections_refused_total", {"port": "web", "reason": reason})


def test_a_request_head_that_never_ends_is_closed_and_normal_requests_still_work() -> None:
    # The security audit held 2,000 such sockets open from one phone, with no token, for 200 s.
    async def run() -> None:
        before = _refused("head_timeout")
        runner, port = await _serve(ConnectionLimits("web", head_timeout_s=0.5))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
            assert b"200 OK" in await _get(port)
            assert await _closed_by_server(reader, 3)
            writer.close()
            assert _refused("head_timeout") == before + 1
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_one_address_gets_at_most_per_peer_connections_and_its_closed_ones_come_back() -> None:
    async def run() -> None:
        before = _refused("per_peer")
        limits = ConnectionLimits("web", per_peer=3, limit_loopback=True)
        runner, port = await _serve(limits)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await _closed_by_server(reader, 3) and limits.open["127.0.0.1"] == 3
            assert _refused("per_peer") == before + 1
            for _, held_writer in [*held, (reader, writer)]:
                held_writer.close()
            await asyncio.sleep(0.2)
            assert b"200 OK" in await _get(port) and limits.open["127.0.0.1"] == 0
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_the_limits_leave_the_boards_own_loopback_in_and_count_other_hosts() -> None:
    limits = ConnectionLimits("web", per_peer=2, total=3)
    assert [limits.admit("10.0.0.5") for _ in range(3)] == [None, None, "per_peer"]
    assert [limits.admit("10.0.0.6"), limits.admit("10.0.0.7")] == [None, "total"]
    assert [limits.admit("127.0.0.1") for _ in range(5)] == [None] * 5  # the board's screen still gets in
    limits.release("10.0.0.5")
    assert limits.admit("10.0.0.7") is None
