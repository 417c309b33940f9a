"""The teacher view's HTTP side: snapshot, server-sent events, translations, assets and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_agent.config import WebSettings
from edge_agent.errors import ConfigError
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.web.server import WebComponent
from edge_agent.web.view import I18N_DIR, LANGUAGES, STATIC_DIR, script_json, sse_event
from tests.web.harness import ServerThread, run_async
from tests.web.sample import attention_section


def _get(url: str | urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _drops(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("edge_teacher_view_drops_total", {"reason": reason}) or 0.0


async def _read_events(url: str, count: int, timeout: float = 5.0) -> list[tuple[str, Any, float]]:
    """(event name or 'comment'/'retry', data, monotonic arrival) for the first ``count`` SSE blocks."""
    out: list[tuple[str, Any, float]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
            session.get(url) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        buffer = ""
        async for chunk in response.content.iter_any():
            buffer += chunk.decode()
            while "\n\n" in buffer and len(out) < count:
                block, buffer = buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                if block.startswith(":"):
                    out.append(("comment", block, time.monotonic()))
                elif "retry" in fields and "data" not in fields:
                    out.append(("retry", int(fields["retry"]), time.monotonic()))
                else:
                    out.append((fields.get("event", "message"), json.loads(fields["data"]), time.monotonic()))
            if len(out) >= count:
                break
    return out


def test_snapshot_api_returns_the_board_with_nan_as_null() -> None:
    board = LiveBoard()
    board.publish("device", {"source": "none", "gpu_load": float("nan"), "gpu_memory_bytes": None,
                             "temperatures": {}, "power_w": {}, "detail": "no telemetry source"})
    server = ServerThread(board).start()
    try:
        status, headers, body = _get(server.url + "/api/v1/live")
        assert status == 200 and headers["Cache-Control"] == "no-store"
        data = json.loads(body)
        assert data["sections"]["device"]["gpu_load"] is None
        assert data["sections"]["attention"] is None
        assert "device" in data["updated"]
    finally:
        server.stop()


def test_event_stream_starts_with_snapshot_and_delivers_updates_fast() -> None:
    board = LiveBoard()
    board.publish("attention", attention_section(current=0.7))
    server = ServerThread(board).start()
    try:
        async def scenario() -> tuple[list[tuple[str, Any, float]], float]:
            reader = asyncio.ensure_future(_read_events(server.url + "/api/v1/events", 3))
            await asyncio.sleep(0.5)  # the stream is open and subscribed
            sent = time.monotonic()
            board.publish("attention", attention_section(current=0.33, low=True))
            return await reader, sent

        events, sent = run_async(scenario())
        assert events[0][0] == "retry" and events[0][1] > 0
        assert events[1][0] == "snapshot" and events[1][1]["sections"]["attention"]["current_share"] == 0.7
        name, update, arrived = events[2]
        assert name == "update" and update["section"] == "attention"
        assert update["data"]["current_share"] == 0.33 and update["data"]["low_attention"] is True
        assert arrived - sent < 1.0
    finally:
        server.stop()


def test_idle_event_stream_sends_keepalive_events_the_page_can_see() -> None:
    # Named events with data: EventSource hides comments from the page, which needs the ticks to notice a
    # dead link (test_teacher_view_browser: a silent server leaves "Live").
    server = ServerThread(LiveBoard(), keepalive_s=0.2).start()
    try:
        events = run_async(_read_events(server.url + "/api/v1/events", 4))
        assert [e[0] for e in events] == ["retry", "snapshot", "keepalive", "keepalive"]
    finally:
        server.stop()


def test_stop_ends_open_event_streams_within_seconds() -> None:
    server = ServerThread(LiveBoard()).start()

    async def hold_stream() -> float:
        async with aiohttp.ClientSession() as session, session.get(server.url + "/api/v1/events") as response:
            await response.content.readuntil(b"\n\n")
            server.loop.call_soon_threadsafe(
                lambda: asyncio.ensure_future(server.component.stop()))
            started = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError):  # a reset instead of a clean end is fine too
                while await response.content.readany():
                    pass
            return time.monotonic() - started

    took = run_async(asyncio.wait_for(hold_stream(), timeout=10))
    assert took < 5.0
    server.stop()  # already stopped: only ends the thread


def test_a_33rd_teacher_view_is_told_to_retry_and_a_closed_one_frees_its_place() -> None:
    server = ServerThread(LiveBoard(), keepalive_s=0.2).start()

    async def scenario() -> tuple[int, str | None, str, int]:
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(server.url + "/api/v1/events") for _ in range(32)]
            for stream in streams:
                await stream.content.readuntil(b"\n\n")
            async with session.get(server.url + "/api/v1/events") as refused:
                status, retry, text = refused.status, refused.headers.get("Retry-After"), await refused.text()
            streams.pop().close()
            await asyncio.sleep(1.0)  # the server notices a closed stream at its next write (keepalive)
            async with session.get(server.url + "/api/v1/events") as again:
                reopened = again.status
            for stream in streams:
                stream.close()
            return status, retry, text, reopened

    try:
        status, retry, text, reopened = run_async(asyncio.wait_for(scenario(), timeout=20))
        assert status == 503 and retry == "10" and "close a browser tab" in text
        assert reopened == 200
        assert json.loads(_get(server.url + "/api/v1/status")[2])["sse_refused"] == 1
    finally:
        server.stop()


def test_one_computer_on_the_lan_holds_at_most_four_teacher_views() -> None:
    from tests.web.conftest import WEB_TOKEN
    from tests.web.harness import non_loopback_ipv4

    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    server = ServerThread(LiveBoard(), token=WEB_TOKEN, host="0.0.0.0", keepalive_s=0.2).start()
    url = f"http://{address}:{server.port}/api/v1/events"

    async def scenario() -> tuple[int, str, int]:
        headers = {"Authorization": f"Bearer {WEB_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            streams = [await session.get(url) for _ in range(4)]
            async with session.get(url) as refused:
                status, text = refused.status, await refused.text()
            async with session.get(server.url + "/api/v1/events") as local:  # the board's own screen
                local_status = local.status
            for stream in streams:
                stream.close()
            return status, text, local_status

    try:
        status, text, local_status = run_async(asyncio.wait_for(scenario(), timeout=20))
        assert status == 503 and "this computer has 4 open teacher views" in text and local_status == 200
    finally:
        server.stop()


def _events_with_a_small_buffer(port: int) -> socket.socket:
    """An event stream asked for on a socket with a 4 KiB receive buffer, full as soon as it stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return sock


def test_a_browser_that_stops_reading_loses_its_stream_and_frees_its_place() -> None:
    # A frozen tab or a half-dead Wi-Fi client keeps its TCP connection open but takes no data; without
    # a deadline on each write its stream (one of 32) would be held until the connection dies.
    live = LiveBoard()
    server = ServerThread(live, keepalive_s=0.2).start()
    stalled_before = _drops("stream_stalled")
    stuck = _events_with_a_small_buffer(server.port)
    try:
        big = {"note": "x" * 100_000}
        status: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            live.publish("health", big)  # about 100 KB per event: the socket buffers fill within seconds
            time.sleep(0.02)
            status = json.loads(_get(server.url + "/api/v1/status")[2])
            if status["sse_stalled"]:
                break
        assert status["sse_stalled"] == 1
        assert status["sse_clients"] == 0
        assert _drops("stream_stalled") == stalled_before + 1  # on /metrics for the school's monitoring
    finally:
        stuck.close()
        server.stop()


def test_a_browser_that_falls_behind_gets_the_whole_board_and_so_the_latest_of_every_section() -> None:
    # Weak Wi-Fi: the reader takes nothing for a while and its 64 queued updates fill. The update that
    # did not fit was dropped alone, and when it was a lesson's last answer the page kept the old count
    # for as long as no other came (a review: 64 dropped, 999,999 answers never shown).
    live = LiveBoard()
    server = ServerThread(live, keepalive_s=30).start()
    drops_before = _drops("slow_subscriber")
    slow = _events_with_a_small_buffer(server.port)
    try:
        time.sleep(0.3)
        for n in range(120):  # about 50 KB each: the socket's buffers fill, then the queue
            live.publish("attention", {"faces": n, "note": "x" * 50_000})
        live.publish("learning", {"answers": 999_999})  # the last update of its section
        deadline = time.monotonic() + 10
        while live.dropped_updates == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.dropped_updates > 0 and _drops("slow_subscriber") > drops_before
        slow.settimeout(3)
        received = b""
        while b"999999" not in received:  # now it reads, as a link that recovered does
            chunk = slow.recv(1 << 20)
            assert chunk, "the stream ended"
            received += chunk
        # the first, then the whole board in place of what it missed
        assert received.count(b"event: snapshot") >= 2
    finally:
        slow.close()
        server.stop()


def test_head_of_the_event_stream_is_refused_and_the_connection_serves_the_next_request() -> None:
    # HEAD was answered with the stream itself after the head, for ever, and held one of the places.
    import http.client

    server = ServerThread(LiveBoard()).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("HEAD", "/api/v1/events")
        head = connection.getresponse()
        head.read()
        assert head.status == 405 and "GET" in head.headers["Allow"]
        connection.request("GET", "/api/v1/live")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.stop()


def test_a_browser_gone_while_the_board_waits_to_send_is_forgotten_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = LiveBoard()
    server = ServerThread(live).start()  # 15-s keepalive: the stall deadline (30 s) does not come first
    stuck = _events_with_a_small_buffer(server.port)
    try:
        for _ in range(150):  # about 15 MB: more than the socket buffers hold, so the board waits to send
            live.publish("health", {"note": "x" * 100_000})
            time.sleep(0.01)
        # Closing with unread data sends a reset: the board's pending write fails with "Connection lost".
        stuck.close()
        deadline = time.monotonic() + 10
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads(_get(server.url + "/api/v1/status")[2])
            if status["sse_clients"] == 0:
                break
            time.sleep(0.1)
        assert status["sse_clients"] == 0 and status["sse_stalled"] == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        stuck.close()
        server.stop()

def test_a_failing_handler_answers_json_500_and_the_server_keeps_serving() -> None:
    from aiohttp import web

    broken = web.RouteTableDef()

    @broken.get("/api/v1/broken")
    async def fail(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    @broken.get("/api/v1/broken-stream")
    async def fail_mid_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        raise RuntimeError("a bug mid-stream")

    async def read_stream(url: str) -> bytes:
        data = b""
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            with contextlib.suppress(aiohttp.ClientPayloadError):
                async for chunk in response.content.iter_any():
                    data += chunk
        return data

    server = ServerThread(LiveBoard(), route_tables=[broken]).start()
    try:
        # a stream already under way is cut, not followed by a second response
        assert run_async(read_stream(server.url + "/api/v1/broken-stream")) == b"data: 1\n\n"
        status, headers, body = _get(server.url + "/api/v1/broken")
        assert status == 500 and headers["Content-Type"].startswith("application/json")
        assert "journalctl -u edge-agent" in json.loads(body)["error"] and b"a bug" not in body
        assert _get(server.url + "/api/v1/live")[0] == 200
        assert _get(server.url + "/i18n/xx.json")[0] == 404  # HTTP errors pass through unchanged
    finally:
        server.stop()


def test_a_wrong_api_path_or_method_answers_json_that_names_what_exists() -> None:
    server = ServerThread(LiveBoard()).start()
    try:
        status, headers, body = _get(server.url + "/api/v1/answer")  # a vendor's typo
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        assert "POST /api/v1/answers" in json.loads(body)["error"]
        request = urllib.request.Request(server.url + "/api/v1/live", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("POST /api/v1/live was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 405 and exc.headers["Allow"] == "GET,HEAD"
            assert json.loads(exc.read()) == {"error": "/api/v1/live does not take POST; use GET,HEAD"}
        assert _get(server.url + "/no-such-page")[0] == 404  # outside /api/ the framework's page stays
    finally:
        server.stop()


def test_translations_cover_every_key_the_page_uses() -> None:
    tables = {lang: json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8")) for lang in LANGUAGES}
    assert set(tables["zh-CN"]) == set(tables["en"])
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n="([a-z_]+)"', page))
    used |= set(re.findall(r'\bt\("([a-z_]+)"\s*[,)]', script))
    # every state the camera (vision/camera.py) and the attention loop report
    cameras = ("starting", "running", "reconnecting", "stalled", "stopped", "off_hours", "paused", "error")
    for prefix, values in (("camera_state_", cameras),
                           ("health_state_", ("starting", "ok", "degraded", "stopping")),
                           ("ago", ("_s", "_m", "_h", "_d")), ("duration", ("_s", "_m", "_h", "_d"))):
        used |= {prefix + v for v in values}
    assert used - set(tables["en"]) == set()
    for text in tables["zh-CN"].values():
        assert text.strip()


def test_every_component_of_a_fully_configured_board_has_a_name_in_both_languages(tmp_path: Path) -> None:
    # The teacher view names a component that is not working; an untranslated one shows its config name.
    from edge_agent.assembly import build
    from edge_agent.config import Config
    from tests.system.harness import local_config

    data = local_config(tmp_path, faces=tmp_path, mqtt_port=1883)
    data["kt"]["roster_file"] = str(tmp_path / "roster.txt")
    data["web"]["client_tokens_file"] = str(tmp_path / "web-clients")
    data["updates"] = {"public_key_file": str(tmp_path / "updates.pub"), "enabled": True}
    names = build(Config.model_validate(data)).daemon.component_names
    assert {"kt.roster_file", "web.client_tokens_file", "model-updates", "sync", "attention"} <= set(names)
    for lang in LANGUAGES:
        table = json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8"))
        assert {n for n in names if f"component_{n}" not in table} == set(), lang


def test_translation_endpoint_refuses_unknown_and_malformed_names() -> None:
    server = ServerThread(LiveBoard(), default_language="en").start()
    try:
        status, _, body = _get(server.url + "/i18n/en.json")
        assert status == 200 and json.loads(body)["title"] == "Class live view"
        for bad in ("/i18n/fr.json", "/i18n/..%2Fserver.json", "/i18n/en.json.bak", "/static/../server.py",
                    "/static/%2e%2e/server.py", "/static/nothing.js"):
            assert _get(server.url + bad)[0] == 404, bad
        status, _, body = _get(server.url + "/")
        assert b'<html lang="en">' in body
    finally:
        server.stop()


def test_page_and_assets_load_nothing_from_outside() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text), path.name
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), path.name
        assert "@import" not in text and "fetch(\"http" not in text, path.name


def test_the_pages_script_and_style_are_checked_again_on_every_load_so_an_upgrade_is_seen() -> None:
    # With no Cache-Control, browsers kept app.js for a tenth of its age (days for a month-old install)
    # and ran the old script under the upgraded page (a review).
    server = ServerThread(LiveBoard()).start()
    try:
        for name in ("app.js", "app.css"):
            status, headers, _ = _get(f"{server.url}/static/{name}")
            etag = headers["Etag"]  # aiohttp's spelling
            assert status == 200 and headers["Cache-Control"] == "no-cache" and etag
            again = urllib.request.Request(f"{server.url}/static/{name}", headers={"If-None-Match": etag})
            assert _get(again)[0] == 304  # unchanged: nothing sent again
    finally:
        server.stop()


def test_hostile_text_from_a_producer_cannot_break_out_of_the_page() -> None:
    board = LiveBoard()
    evil = "</script><script>alert(1)</script><!--"
    board.publish("health", {"state": "ok", "components": [{"name": evil, "ok": False, "detail": evil}],
                             "engines": []})
    server = ServerThread(board).start()
    try:
        status, headers, body = _get(server.url + "/")
        assert status == 200
        assert evil.encode() not in body and body.count(b"</script>") == 2
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    finally:
        server.stop()
    assert "<" not in script_json({"x": evil})


def test_sse_event_encoding_is_one_data_line() -> None:
    encoded = sse_event({"text": "line1\nline2", "zh": "专注"}, "update", 7).decode()
    assert encoded.endswith("\n\n") and encoded.count("\n") == 4
    assert encoded.startswith("id: 7\nevent: update\ndata: ")


def test_status_api_merges_the_daemon_status() -> None:
    server_board = LiveBoard()
    settings = WebSettings(host="127.0.0.1", token_file=None)
    component = WebComponent(settings, server_board, None, status=lambda: {"state": "ok", "uptime_s": 12.5},
                             port=0)

    async def scenario() -> dict[str, Any]:
        await component.start()
        try:
            assert component.health().ok
            async with aiohttp.ClientSession() as session, \
                    session.get(component.local_url + "/api/v1/status") as response:
                return dict(await response.json())
        finally:
            await component.stop()

    data = run_async(scenario())
    assert data["state"] == "ok" and data["uptime_s"] == 12.5 and data["sse_clients"] == 0
    assert not component.health().ok


def test_port_in_use_is_a_config_error_naming_web_port() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        component = WebComponent(WebSettings(host="127.0.0.1", port=port, token_file=None), LiveBoard(), None)
        with pytest.raises(ConfigError, match=r"web\.port"):
            run_async(component.start())
        assert "cannot listen" in component.health().detail
    # A review: every failure to listen said "does another program use it? change web.port", also for a
    # web.host that is no address of this board (an old DHCP lease)
    elsewhere = WebComponent(WebSettings(host="10.99.99.99", port=port, token_file=None), LiveBoard(), None)
    with pytest.raises(ConfigError, match=r"web\.host") as refused:
        run_async(elsewhere.start())
    assert "is '10.99.99.99' an address of this board?" in refused.value.problems[0][1]


def test_unknown_default_language_is_refused() -> None:
    from edge_agent.web.view import TeacherView

    with pytest.raises(ValueError, match="default_language"):
        TeacherView(LiveBoard(), "fr")


def test_static_dir_is_inside_the_package() -> None:
    assert (Path(STATIC_DIR) / "index.html").is_file() and (Path(I18N_DIR) / "zh-CN.json").is_file()


def test_a_board_with_sync_and_camera_switched_off_says_so_on_its_page(tmp_path: Path) -> None:
    # A review: the page showed "cannot reach the sync server" for ever on a board with mqtt.enabled =
    # false, and "No data yet" for one with camera.enabled = false: what the page reads says it is a choice
    from edge_agent.assembly import build
    from edge_agent.config import Config
    from tests.system.harness import local_config

    data = local_config(tmp_path, faces=tmp_path, mqtt_port=1883)
    data["mqtt"]["enabled"] = False
    data["camera"]["enabled"] = False
    live = build(Config.model_validate(data)).live
    assert live.get("sync")["enabled"] is False
    assert live.get("attention")["camera"]["state"] == "disabled"


def test_a_board_with_knowledge_tracing_switched_off_says_so_on_its_page_and_to_clickers(
    tmp_path: Path,
) -> None:
    # A review: with kt.enabled = false the page said "No answers yet" and "Everything works", and a
    # clicker's POST /api/v1/answers got "no endpoint POST /api/v1/answers; the answer API is POST
    # /api/v1/answers"
    from edge_agent.assembly import build
    from edge_agent.config import Config
    from tests.system.harness import local_config

    data = local_config(tmp_path, faces=None)
    data["kt"]["enabled"] = False
    assembly = build(Config.model_validate(data))
    assert assembly.live.get("learning") == {"enabled": False}
    web = assembly.web
    assert web is not None

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        await web.start()
        try:
            said = []
            async with aiohttp.ClientSession() as session:
                for method, path in (("POST", "/api/v1/answers"), ("GET", "/api/v1/class/mastery"),
                                     ("GET", "/api/v1/students/p1/mastery")):
                    url = web.local_url + path
                    async with session.request(method, url, json={"answers": []}) as response:
                        said.append((response.status, await response.json()))
            return said
        finally:
            await web.stop()

    for status, body in asyncio.run(scenario()):
        assert status == 404 and body["error"].startswith("knowledge tracing is switched off on this board "
                                                          "(kt.enabled = false"), body
