"""Free TCP ports for test servers, chosen outside the kernel's ephemeral range.

A port found by binding port 0 comes from the ephemeral range, which the kernel also hands to outgoing
connections: between the probe and the server's bind, a connection made by the other test run (CI runs
two at once) took the port, and a daemon under test could not listen ("address already in use", CI on
2026-12-02). Below the range, only another test's pick can collide, and picks are random.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_random = random.SystemRandom()
# Ports already handed out in this process: a probed port is not held, and two picks in a row gave one
# daemon the same port for web and metrics (1 in 22,768 a pair; CI 2026-12-04: "web.port and metrics.port
# are both 12836")
_given: set[int] = set()


def _span() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return (10000, low - 1) if low > 12000 else (high + 1, 65535)


def free_port() -> int:
    first, last = _span()
    for _ in range(200):
        port = _random.randint(first, last)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port found between {first} and {last}")
