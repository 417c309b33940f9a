"""A broker name whose addresses all drop connections, as behind a school firewall that drops packets.

Each address is a loopback address (127.0.0.2, ...) with a listener whose backlog is full and which never
accepts: further SYNs get no answer, so a connect there times out, as it does to a black-holed address.
There is no DNS server here: only the name's lookup (socket.getaddrinfo) is stood in for; every connect is
a real one.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def name_of_silent_addresses(
    monkeypatch: pytest.MonkeyPatch, silent: list[str], answering: tuple[str, ...] = ()
) -> Iterator[tuple[str, int]]:
    """(name, port): the name resolves to ``silent`` then ``answering``, all on one port; the ``answering``
    addresses get listeners that take connections."""
    name = "broker.school.invalid"
    opened: list[socket.socket] = []
    try:
        opened.extend(_listeners_on_one_port(silent, answering))
        port = opened[0].getsockname()[1]
        for address in silent:  # fill the backlog: connect until one gets no answer
            for _ in range(8):
                probe = socket.socket()
                probe.settimeout(0.1)
                try:
                    probe.connect((address, port))
                except TimeoutError:
                    probe.close()
                    break
                opened.append(probe)
            else:
                pytest.skip(f"{address}: a full listen backlog still answers here")
        real = socket.getaddrinfo

        def resolve(host: object, *args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
            if host != name:
                return real(host, *args, **kwargs)  # type: ignore[arg-type]
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
                    for a in [*silent, *answering]]

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        yield name, port
    finally:
        for sock in opened:
            sock.close()


def _listeners_on_one_port(
    silent: list[str], answering: tuple[str, ...], tries: int = 20
) -> list[socket.socket]:
    """A listener on each address, all on one port: the first's free port may be taken on another address
    (the suite runs on two Pythons at once; CI: "[Errno 98] Address already in use"), then all go again."""
    for _ in range(tries):
        listeners: list[socket.socket] = []
        port = 0  # the first listener's free port, then that one for the others
        try:
            for address in [*silent, *answering]:
                listener = socket.socket()
                listeners.append(listener)
                listener.bind((address, port))
                listener.listen(0 if address in silent else 8)
                port = listener.getsockname()[1]
            return listeners
        except OSError as exc:
            for listener in listeners:
                listener.close()
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port free on all of {[*silent, *answering]} in {tries} tries")
