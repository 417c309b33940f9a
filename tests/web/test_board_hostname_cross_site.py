"""The board's own hostname is no loopback exemption, and leading empty lines do not end a first head.

A review with Chromium: over plain http to ``http://<hostname>:8080`` (127.0.1.1 in /etc/hosts, the
hostname often the guessable device id) a no-cors GET of another site's page carries neither Sec-Fetch
nor Origin, so only the Host said it came from the board: the page took all 32 teacher-view streams
and made /metrics afresh 180-250 times a second. The requests below are the bytes such a browser sent.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.telemetry.exporter import MetricsServer
from edge_agent.web.access import is_local_host
from edge_agent.web.connections import ConnectionLimits
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread
from tests.web.test_connections import _closed_by_server, _refused, _serve

HOSTNAME = socket.gethostname()


def _status(port: int, path: str, host: str, extra: str = "") -> int:
    """The status a GET from loopback with ``host`` as its Host gets, as a no-cors fetch sends it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{extra}\r\n".encode())
        return int(sock.recv(65536).split(b" ", 2)[1])  # a stream's head comes before its events


def test_the_boards_hostname_is_not_the_board_itself() -> None:
    assert not is_local_host(HOSTNAME) and not is_local_host(f"{HOSTNAME}:8080")
    assert not is_local_host(HOSTNAME.upper())
    assert is_local_host("localhost:8080") and is_local_host("127.0.0.1:8080") and is_local_host("[::1]:8080")


def test_a_page_on_the_boards_hostname_opens_no_teacher_view_stream_without_the_token() -> None:
    server = ServerThread(LiveBoard(), token=WEB_TOKEN).start()
    try:
        port = server.port
        for host in (HOSTNAME, f"{HOSTNAME}:{port}"):
            assert _status(port, "/api/v1/events", host) == 401, host  # fetch(..., {mode: "no-cors"})
            assert _status(port, "/api/v1/events", host, "Origin: null\r\n") == 401, host  # sandboxed iframe
            assert _status(port, "/api/v1/live", host) == 401, host
        token = f"Authorization: Bearer {WEB_TOKEN}\r\n"
        assert _status(port, "/api/v1/events", f"{HOSTNAME}:{port}", token) == 200  # a teacher still may
        # the board's own screen opens 127.0.0.1 or localhost: still no token
        assert _status(port, "/api/v1/events", f"127.0.0.1:{port}") == 200
        assert _status(port, "/api/v1/events", f"localhost:{port}") == 200
    finally:
        server.stop()


def test_metrics_for_the_boards_hostname_come_from_the_cache() -> None:
    server = MetricsServer("127.0.0.1", 0)

    def forgotten(host: str) -> float:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics", headers={"Host": host})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("edge_kt_students_forgotten_total ")))

    async def scenario() -> tuple[float, float, float]:
        await server.start()
        try:
            first = await asyncio.to_thread(forgotten, f"{HOSTNAME}:9108")
            metrics.KT_STUDENTS_FORGOTTEN.inc()
            cached = await asyncio.to_thread(forgotten, f"{HOSTNAME}:9108")
            fresh = await asyncio.to_thread(forgotten, "localhost:9108")  # the board itself
            return first, cached, fresh
        finally:
            await server.stop()

    first, cached, fresh = asyncio.run(scenario())
    assert cached == first and fresh == first + 1


def test_empty_lines_before_a_trickled_first_head_do_not_stop_its_deadline() -> None:
    # A review: "\r\n\r\n" first (aiohttp skips empty lines before the request line) ended the guard's
    # watch, and a head trickled a byte every 2 s was closed only by the 75-s keep-alive
    async def run() -> None:
        before = _refused("head_timeout")
        runner, port = await _serve(ConnectionLimits("web", head_timeout_s=1.0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n")
            await asyncio.sleep(0.1)
            writer.write(b"\r\n")  # in two pieces, as a slow sender's may come
            started = time.monotonic()
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)
                if time.monotonic() - started > 3:
                    break
            try:
                closed = await _closed_by_server(reader, 1.5)
            except asyncio.TimeoutError:
                closed = False
            assert closed, "a head trickled after empty lines outlived its 1-s deadline"
            writer.close()
            assert _refused("head_timeout") == before + 1

            # a whole head after empty lines is a request as any other, its connection kept alive after it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"ok"), 5)
            await asyncio.sleep(1.5)  # past the first head's deadline
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"200 OK" in await asyncio.wait_for(reader.read(), 5)
            writer.close()
        finally:
            await runner.cleanup()

    asyncio.run(run())
