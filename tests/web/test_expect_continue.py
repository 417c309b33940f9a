"""``Expect: 100-continue`` on the routes that take a body (answers, erase, the camera switch, the sign-in
form), over a real socket from the board's LAN address: the "go ahead, send the body" comes only once the
token has been checked, and a body over the limit is refused, as JSON, before it is sent."""

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
from edge_agent.web.camera_pause import camera_routes
from edge_agent.web.erase import ERASE_PATH, erase_routes
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
    tables = [answer_routes(svc, settings), erase_routes(lambda: svc), camera_routes(lambda: None)]
    server = ServerThread(LiveBoard(), token=WEB_TOKEN, host="0.0.0.0", route_tables=tables).start()
    yield {"address": address, "port": server.port, "package": package}
    server.stop()
    svc.stop()


def _head(lan: dict[str, Any], body: bytes, token: str | None, path: str = "/api/v1/answers",
          content_type: str = "application/json") -> tuple[socket.socket, bytes]:
    """Send a POST's head with Expect: 100-continue and no body; the socket and what came back first."""
    sock = socket.create_connection((lan["address"], lan["port"]), timeout=5)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: board\r\nContent-Type: {content_type}\r\n"
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
    """The whole response (head and Content-Length body), which must be a final one."""
    assert not first.startswith(b"HTTP/1.1 100"), "told to send the body: " + repr(first[:80])
    reply = first
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    length = re.search(rb"(?i)\r\ncontent-length: (\d+)", reply)
    assert length is not None, reply
    while len(reply.partition(b"\r\n\r\n")[2]) < int(length[1]):
        reply += sock.recv(65536)
    return reply


def _final_reply(lan: dict[str, Any], body: bytes, token: str | None, path: str = "/api/v1/answers",
                 content_type: str = "application/json") -> bytes:
    """Send a POST's head with Expect: 100-continue and no body; the final response it gets (not a 100)."""
    sock, first = _head(lan, body, token, path, content_type)
    try:
        return _rest(sock, first)
    finally:
        sock.close()


def test_a_refusal_before_the_body_was_asked_for_closes_the_connection(lan: dict[str, Any]) -> None:
    # Round 2: the 401 kept the connection open, aiohttp then read the body the client sent anyway as
    # the next request, and the client's real next request got 400 "Invalid method"
    reply = _final_reply(lan, b"{}", token=None)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head, reply[:300]


@pytest.mark.parametrize(("path", "body", "status"), [
    (ERASE_PATH, b'{"student_ids": ["never-answered"]}', 200),
    ("/api/v1/camera/pause", b'{"minutes": 45}', 409),  # read, then: no camera on this board
])
def test_erase_and_the_camera_pause_are_refused_without_a_token_before_the_body_is_asked_for(
    lan: dict[str, Any], path: str, body: bytes, status: int
) -> None:
    # A review: every route but the answers' sent "100 Continue" to a client without a token, which then
    # sent its body (up to 1 MiB) only to get 401
    reply = _final_reply(lan, body, token=None, path=path)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head, reply[:300]

    sock, first = _head(lan, body, token=WEB_TOKEN, path=path)
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first[:80]
        sock.sendall(body)
        reply = _rest(sock, sock.recv(65536))
    finally:
        sock.close()
    assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:300]


def test_a_camera_resume_is_refused_without_a_token_and_answered_with_one_without_asking_for_a_body(
    lan: dict[str, Any],
) -> None:
    for token, status in ((None, b"401"), (WEB_TOKEN, b"409")):  # 409: no camera on this board
        reply = _final_reply(lan, b"{}", token=token, path="/api/v1/camera/resume")
        head = reply.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 " + status) and b"connection: close" in head, reply[:300]


def test_the_sign_in_form_is_asked_for_only_within_its_limit(lan: dict[str, Any]) -> None:
    # A review: /login sent "100 Continue" for any size, and the client sent up to 1 MiB to get 413
    form = "application/x-www-form-urlencoded"
    reply = _final_reply(lan, b"token=" + b"A" * 10_000, token=None, path="/login", content_type=form)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 413") and b"connection: close" in head.lower(), reply[:300]
    assert json.loads(body)["error"] == "bad_form"

    signing_in = f"token={WEB_TOKEN}&next=/".encode()
    sock, first = _head(lan, signing_in, token=None, path="/login", content_type=form)
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first[:80]
        sock.sendall(signing_in)
        reply = _rest(sock, sock.recv(65536))
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 303") and b"edge_agent_session=" in reply, reply[:300]


def test_a_camera_pause_over_the_body_limit_is_refused_as_json(lan: dict[str, Any]) -> None:
    # A review: the pause answered a body over 1 MiB with aiohttp's plain-text 413, where every other /api/
    # error is JSON (a vendor's client parses it). Chunked, so that only reading the body finds it too large
    body = b" " * (1024 * 1024 + 100)
    with socket.create_connection((lan["address"], lan["port"]), timeout=5) as sock:
        sock.sendall((f"POST /api/v1/camera/pause HTTP/1.1\r\nHost: board\r\nContent-Type: application/json"
                      f"\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer {WEB_TOKEN}\r\n\r\n"
                      f"{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n")
        reply = _rest(sock, sock.recv(65536))
    head, _, text = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head, reply[:300]
    assert "over 1048576 bytes" in json.loads(text)["error"]


@pytest.mark.parametrize(("path", "says"), [
    ("/api/v1/answers", "send smaller batches"), (ERASE_PATH, "send fewer ids"),
    ("/api/v1/camera/pause", "over 1048576 bytes"),
])
def test_a_body_over_the_limit_is_refused_before_it_is_sent(
    lan: dict[str, Any], path: str, says: str
) -> None:
    # Round 2: "100 Continue" came for a 5 MB body too, which the client uploaded only to get 413
    sock = socket.create_connection((lan["address"], lan["port"]), timeout=5)
    try:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: board\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {5 * 1024 * 1024}\r\nExpect: 100-continue\r\n"
                      f"Authorization: Bearer {WEB_TOKEN}\r\n\r\n").encode())
        reply = _rest(sock, sock.recv(65536))
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 413") and b"connection: close" in head.lower(), reply[:300]
    assert says in json.loads(body)["error"]


@pytest.mark.parametrize(("path", "content_type", "length", "token", "status", "says"), [
    ("/api/v1/answers", "application/json", 5 * 1024 * 1024, WEB_TOKEN, b"413", b"send smaller batches"),
    ("/api/v1/answers", "application/json", 100, None, b"401", b"need_token"),
    ("/api/v1/answers", "text/plain", 100, WEB_TOKEN, b"415", b"Content-Type: application/json"),
    (ERASE_PATH, "application/json", 100, None, b"401", b"need_token"),
    (ERASE_PATH, "text/plain", 100, WEB_TOKEN, b"415", b"Content-Type: application/json"),
    ("/api/v1/camera/pause", "application/json", 100, None, b"401", b"need_token"),
])
def test_a_refusal_before_the_body_was_asked_for_closes_its_connection_at_once(
    lan: dict[str, Any], path: str, content_type: str, length: int, token: str | None, status: bytes,
    says: bytes,
) -> None:
    # A review: the refusal said "Connection: close", but aiohttp waited 10 s for the body it had not asked
    # for (lingering close), and the connection held one of its address's 32 places all that time
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock = socket.create_connection((lan["address"], lan["port"]), timeout=5)
    try:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: board\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {length}\r\nExpect: 100-continue\r\n{auth}\r\n").encode())
        asked = time.monotonic()
        reply = b""
        try:
            while chunk := sock.recv(65536):  # until the board closes
                reply += chunk
        except TimeoutError:
            pytest.fail(f"the connection was still open 5 s after the refusal: {reply[:60]!r}")
        closed_after = time.monotonic() - asked
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:300]
    assert says in reply.partition(b"\r\n\r\n")[2], reply
    assert closed_after < 1.0, f"closed {closed_after:.1f} s after the head"


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
