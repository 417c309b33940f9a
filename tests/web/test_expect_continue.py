"""``Expect: 100-continue`` on the answer API, over a real socket from the board's LAN address: the
"go ahead, send the body" comes only once the token has been checked."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.config import KTSettings
from edge_agent.kt.package import load_package
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService
from edge_agent.live import LiveBoard
from edge_agent.web.answers import answer_routes
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, non_loopback_ipv4


@pytest.fixture()
def lan() -> Iterator[dict[str, Any]]:
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    package = load_package()
    settings = KTSettings()
    svc = KTService(package, OnnxRuntimeEngine(package.step_model), settings, Pseudonymizer(b"e" * 32))
    svc.start()
    server = ServerThread(LiveBoard(), token=WEB_TOKEN, host="0.0.0.0",
                          route_tables=[answer_routes(svc, settings)]).start()
    yield {"address": address, "port": server.port, "package": package}
    server.stop()
    svc.stop()


def _head(lan: dict[str, Any], body: bytes, token: str | None) -> tuple[socket.socket, bytes]:
    """Send a POST's head with Expect: 100-continue and no body; the socket and what came back first."""
    sock = socket.create_connection((lan["address"], lan["port"]), timeout=5)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"POST /api/v1/answers HTTP/1.1\r\nHost: board\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n{auth}\r\n").encode())
    return sock, sock.recv(65536)


def test_a_client_without_a_token_is_refused_before_it_is_told_to_send_its_body(lan: dict[str, Any]) -> None:
    # aiohttp sent "100 Continue" before the token was checked: the client sent its body (up to 1 MiB)
    # and only then got 401.
    answer = {"student_id": "stu-1", "item_id": lan["package"].items[0].id, "correct": True,
              "answered_at": time.time(), "client_event_id": "expect-1"}
    body = json.dumps(answer).encode()
    sock, first = _head(lan, body, token=None)
    sock.close()
    assert first.startswith(b"HTTP/1.1 401"), first[:80]

    sock, first = _head(lan, body, token=WEB_TOKEN)
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:80]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["status"] == "applied"


def _rest(sock: socket.socket, first: bytes) -> bytes:
    """The whole response (head and Content-Length body)."""
    reply = first
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    length = re.search(rb"(?i)\r\ncontent-length: (\d+)", reply)
    assert length is not None, reply
    while len(reply.partition(b"\r\n\r\n")[2]) < int(length[1]):
        reply += sock.recv(65536)
    return reply


def test_a_refusal_before_the_body_was_asked_for_closes_the_connection(lan: dict[str, Any]) -> None:
    # Round 2: the 401 kept the connection open, aiohttp then read the body the client sent anyway as
    # the next request, and the client's real next request got 400 "Invalid method"
    sock, first = _head(lan, b"{}", token=None)
    try:
        reply = _rest(sock, first)
    finally:
        sock.close()
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head, reply[:300]


def test_a_body_over_the_limit_is_refused_before_it_is_sent(lan: dict[str, Any]) -> None:
    # Round 2: "100 Continue" came for a 5 MB body too, which the client uploaded only to get 413
    sock = socket.create_connection((lan["address"], lan["port"]), timeout=5)
    try:
        sock.sendall((f"POST /api/v1/answers HTTP/1.1\r\nHost: board\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {5 * 1024 * 1024}\r\nExpect: 100-continue\r\n"
                      f"Authorization: Bearer {WEB_TOKEN}\r\n\r\n").encode())
        reply = _rest(sock, sock.recv(65536))
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 413") and b"connection: close" in head.lower(), reply[:300]
    assert "send smaller batches" in json.loads(body)["error"]


def test_a_body_that_cannot_be_decoded_is_a_400_without_a_traceback_with_or_without_a_token(
    lan: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A review: "Content-Encoding: gzip" over a body that is not gzip answered 500 and logged two ERROR
    # tracebacks per request, with no token (11 MB of log in 15 s from 2,000 requests)
    body = b"token=abc"
    bearer = f"Authorization: Bearer {WEB_TOKEN}\r\n"
    for path, auth, kind in (("/login", "", "application/x-www-form-urlencoded"),
                             ("/api/v1/answers", bearer, "application/json")):
        head = (f"POST {path} HTTP/1.1\r\nHost: board\r\nContent-Type: {kind}\r\nContent-Encoding: gzip\r\n"
                f"Content-Length: {len(body)}\r\n{auth}\r\n")
        with socket.create_connection((lan["address"], lan["port"]), timeout=5) as sock:
            sock.sendall(head.encode() + body)
            reply = sock.recv(65536)
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (path, reply[:200])
        assert b"the request body could not be read: Can not decode content-encoding: gzip" in rest, rest
    # ... nor one that aiohttp refuses before any handler (round 2: br and zstd, 0.9 KB of traceback each)
    for encoding in ("br", "zstd"):
        head = (f"POST /api/v1/answers HTTP/1.1\r\nHost: board\r\nContent-Type: application/json\r\n"
                f"Content-Encoding: {encoding}\r\nContent-Length: 2\r\n\r\nxx")
        with socket.create_connection((lan["address"], lan["port"]), timeout=5) as sock:
            sock.sendall(head.encode())
            assert sock.recv(65536).startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), encoding
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
