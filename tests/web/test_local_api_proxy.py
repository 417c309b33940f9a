"""Commands that reach the daemon on this board (`edge-agent kt erase`) go to it directly: never through
the school's proxy of the environment, and with the web token only where the daemon needs it."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from edge_agent.config import WebSettings
from edge_agent.live import LiveBoard
from edge_agent.web.local_api import post_local
from tests.proxies import PROXY_502, RecordingListener
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, non_loopback_ipv4

ECHO_PATH = "/api/v1/test-echo"


def _echo_routes() -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post(ECHO_PATH)
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"sent_a_token": "Authorization" in request.headers,
                                  "body": await request.json()})

    return routes


@pytest.fixture()
def school_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingListener]:
    """http_proxy and https_proxy as a school's /etc/environment sets them, no no_proxy."""
    proxy = RecordingListener(PROXY_502)
    with proxy.running():
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        # urlopen keeps the opener it built first, with the environment of then: a fresh one sees this one
        urllib.request.install_opener(None)  # type: ignore[arg-type]
        yield proxy
        urllib.request.install_opener(None)  # type: ignore[arg-type]


@pytest.fixture()
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "web.token"
    path.write_text(WEB_TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_a_command_reaches_the_daemon_on_loopback_directly_and_sends_it_no_token(
    school_proxy: RecordingListener, token_file: Path
) -> None:
    # A review: with http_proxy set, the proxy got the request, the web token in its Authorization header,
    # and the command said the daemon answered 502. Loopback needs no token: none leaves the command.
    server = ServerThread(LiveBoard(), token=WEB_TOKEN, route_tables=[_echo_routes()]).start()
    try:
        settings = WebSettings(host="127.0.0.1", port=server.port, token_file=token_file)
        reply = post_local(settings, ECHO_PATH, {"student_ids": ["stu-1"]})
    finally:
        server.stop()
    assert school_proxy.heads == []
    assert reply == {"sent_a_token": False, "body": {"student_ids": ["stu-1"]}}


def test_a_command_reaches_the_daemon_on_its_lan_address_directly_with_the_token(
    school_proxy: RecordingListener, token_file: Path
) -> None:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = ServerThread(LiveBoard(), token=WEB_TOKEN, host=address, route_tables=[_echo_routes()]).start()
    try:
        settings = WebSettings(host=address, port=server.port, token_file=token_file)
        reply = post_local(settings, ECHO_PATH, {"student_ids": []})
    finally:
        server.stop()
    assert school_proxy.heads == []
    assert reply["sent_a_token"] is True


def test_the_demo_classroom_posts_its_answers_to_the_board_directly(school_proxy: RecordingListener) -> None:
    # The demo's simulated clicker went through http_proxy too: every answer got the proxy's 502
    from edge_agent.demo import SimulatedClassroom
    from edge_agent.kt.package import load_package

    server = ServerThread(LiveBoard(), token=WEB_TOKEN, route_tables=[_echo_routes()]).start()
    classroom = SimulatedClassroom(f"http://127.0.0.1:{server.port}{ECHO_PATH}", load_package(), students=3,
                                   question_every_s=60.0)
    try:
        classroom.start()
        deadline = time.monotonic() + 10
        while classroom.sent + classroom.failed < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        classroom.stop()
        server.stop()
    assert school_proxy.heads == []
    assert classroom.sent == 3 and classroom.failed == 0
