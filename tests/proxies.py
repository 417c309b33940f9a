"""A loopback listener that records the head of each request it gets and answers one fixed reply: a
school's web proxy (http_proxy in /etc/environment, answering 502), or another program on a port the
config names (an SSH server's banner)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

PROXY_502 = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
SSH_BANNER = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n"


def json_reply(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class RecordingListener:
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.heads: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="recording-listener", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    data = connection.recv(65536)
                    self.heads.append(data.decode("latin-1").split("\r\n\r\n")[0])
                    connection.sendall(self.reply)

    @contextlib.contextmanager
    def running(self) -> Iterator[RecordingListener]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self._sock.close()
