"""A slow network link on loopback, for sync tests: a TCP relay that carries at most ``rate`` bytes a second
each way (a rural school's shared uplink), with small socket buffers so that, as on a real slow link, the
sender learns of the slowness within a few kilobytes instead of after megabytes of loopback buffering.

``SlowLink(target_port, rate).start()`` listens on ``.port``; ``.sent`` counts the bytes it carried
upstream. With ``cut_after_s`` it resets each connection that long after it opened (flaky 4G, a firewall
that cuts long connections). ``latency_s`` delays every byte that long each way, and ``queue_bytes`` is a
modem's queue in front of the bottleneck (4G modems hold megabytes: bufferbloat), which takes what the
sender writes at once and lets it out at ``rate``. No netem needed (the test machines' kernels have no
sch_netem); lost and reordered packets show up above TCP only as such delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

from tests.brokers import free_port

CHUNK = 1024
BUFFER = 16 * 1024


class SlowLink:
    def __init__(
        self, target_port: int, rate: float, cut_after_s: float | None = None, latency_s: float = 0.0,
        queue_bytes: int = 0,
    ) -> None:
        self.target_port = target_port
        self.rate = rate
        self.cut_after_s = cut_after_s
        self.latency_s = latency_s
        self.queue_bytes = queue_bytes
        self.port = free_port()
        self.sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SlowLink:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="slow-link", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the slow link did not start listening within 5 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))  # which cancels the relays left at the end

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)  # accepted sockets inherit it
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        server = await asyncio.start_server(self._relay, sock=listener)
        ready.set()
        async with server:
            await self._stopping.wait()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        upstream_w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        pumps = asyncio.gather(self._pump(client_r, upstream_w, count=True), self._pump(upstream_r, client_w))
        try:
            await asyncio.wait_for(pumps, self.cut_after_s)
        except asyncio.TimeoutError:
            for writer in (client_w, upstream_w):
                writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool = False
    ) -> None:
        queued: asyncio.Queue[bytes] = asyncio.Queue(max(1, self.queue_bytes // CHUNK))
        landing: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()  # through the bottleneck, in flight
        tasks = [asyncio.create_task(self._take(reader, queued)),
                 asyncio.create_task(self._squeeze(queued, landing, count)),
                 asyncio.create_task(self._deliver(landing, writer))]
        try:
            await asyncio.gather(*tasks)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _take(self, reader: asyncio.StreamReader, queued: asyncio.Queue[bytes]) -> None:
        while data := await reader.read(CHUNK):
            await queued.put(data)
        await queued.put(b"")

    async def _squeeze(
        self, queued: asyncio.Queue[bytes], landing: asyncio.Queue[tuple[float, bytes]], count: bool
    ) -> None:
        tokens, last = 0.0, time.monotonic()
        while data := await queued.get():
            while data:
                now = time.monotonic()
                tokens, last = min(self.rate / 10, tokens + (now - last) * self.rate), now
                n = min(int(tokens), len(data))
                if n == 0:
                    await asyncio.sleep(0.01)
                    continue
                await landing.put((now + self.latency_s, data[:n]))
                tokens -= n
                data = data[n:]
                if count:
                    self.sent += n
        await landing.put((0.0, b""))

    async def _deliver(
        self, landing: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await landing.get()
            if not data:
                return
            await asyncio.sleep(due - time.monotonic())
            writer.write(data)
            await writer.drain()
