"""Signing out, and a sign-in that ends, seen from the other tabs of the teacher view, in real Chromium
against a real server; then the board's record of sign-outs itself."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent.live import LiveBoard
from edge_agent.web import access
from edge_agent.web.access import COOKIE_NAME, session_valid
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, TeacherViewPage, non_loopback_ipv4
from tests.web.sample import attention_section, learning_section

PageFactory = Callable[..., TeacherViewPage]


def _status(host: str, port: int, path: str, cookie: str) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture()
def remote_ip() -> str:
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    return address


@pytest.fixture()
def lan_server(live_board: LiveBoard) -> Iterator[ServerThread]:
    server = ServerThread(live_board, token=WEB_TOKEN, host="0.0.0.0").start()  # keepalive 15 s, as a board
    yield server
    server.stop()


def _signed_in_tabs(view: TeacherViewPage) -> tuple[Any, str]:
    """Sign in on ``view``'s page; a second tab of the same browser, live. Returns it and the cookie."""
    view.open()
    view.page.fill("input[name=token]", WEB_TOKEN)
    view.page.click("button[type=submit]")
    view.wait_live()
    other = view.context.new_page()
    other.goto(view.base_url + "/")
    other.wait_for_selector('#conn[data-state="live"]', timeout=5000)
    [cookie] = view.context.cookies()
    return other, cookie["value"]


@pytest.mark.browser
def test_signing_out_in_one_tab_ends_the_live_view_in_the_others_at_once(
    lan_server: ServerThread, live_board: LiveBoard, teacher_page: PageFactory, remote_ip: str
) -> None:
    # A review on a shared classroom PC: the sign-out deleted the cookie, but the other tabs' streams went
    # on showing the class's figures and answers to the next user for the rest of the 12 h
    view = teacher_page(f"http://{remote_ip}:{lan_server.port}")
    other, cookie = _signed_in_tabs(view)
    signed_out = time.monotonic()
    view.page.click("#sign-out button")
    view.page.wait_for_selector("main input[name=token]", timeout=5000)
    # at once, not at the next keepalive (15 s) nor the end of the sign-in
    other.wait_for_selector("#sign-in", state="visible", timeout=5000)
    assert time.monotonic() - signed_out < 5.0
    assert other.get_attribute("#conn", "data-state") != "live"
    live_board.publish("learning", learning_section() | {"answers": 2999})
    time.sleep(1.0)
    assert other.text_content("#learn-answers") != "2,999"
    # the cookie's value, copied before the sign-out, opens nothing any more
    assert _status(remote_ip, lan_server.port, "/api/v1/live", cookie) == 401
    assert _status(remote_ip, lan_server.port, "/api/v1/events", cookie) == 401


@pytest.mark.browser
def test_a_page_whose_sign_in_ended_says_not_connected_not_reconnecting(
    live_board: LiveBoard, teacher_page: PageFactory, remote_ip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: the page stops trying once its sign-in has ended, yet its pill said "Reconnecting…" for
    # ever beside "sign in again"
    monkeypatch.setattr(access, "COOKIE_MAX_AGE_S", 3)  # 12 h on a board
    server = ServerThread(live_board, token=WEB_TOKEN, host="0.0.0.0", keepalive_s=0.5).start()
    try:
        view = teacher_page(f"http://{remote_ip}:{server.port}")
        view.open(f"/?token={WEB_TOKEN}")
        view.wait_live()
        view.page.wait_for_selector("#sign-in", state="visible", timeout=15000)
        view.page.wait_for_function(
            "() => document.getElementById('conn').textContent === '未连接'", timeout=5000)
        view.switch_language()
        assert view.text("#conn") == "Not connected"
        assert view.text("#conn-lost-text").startswith("Your sign-in on this board has ended")
    finally:
        server.stop()


_FOOTER = """() => [document.getElementById("att-footer").innerText,
  ["att-camera", "att-pose", "att-updated"].map((id) => document.getElementById(id).textContent)]"""


@pytest.mark.browser
def test_the_attention_cards_last_line_has_no_separator_beside_an_empty_part(
    teacher_server: ServerThread, live_board: LiveBoard, teacher_page: PageFactory
) -> None:
    # A review: with camera.enabled = false the line read "摄像头已在配置中关闭 · ·"
    view = teacher_page(teacher_server.url)
    view.open()
    view.wait_live()
    line, parts = view.page.evaluate(_FOOTER)  # at once: "updated" is written again every 5 s
    assert parts[:2] == ["摄像头正常 · 每秒分析 5 帧", "头部姿态：神经网络估计"] and parts[2] != ""
    assert line == " · ".join(parts)
    live_board.publish("attention", attention_section() | {"pose_method": None})
    view.page.wait_for_function("() => document.getElementById('att-pose').textContent === ''", timeout=2000)
    line, parts = view.page.evaluate(_FOOTER)
    assert line == f"{parts[0]} · {parts[2]}" and parts[2] != ""
    live_board.publish("attention", attention_section(current=None, faces=0) | {
        "camera": {"state": "disabled", "fps": 0.0, "detail": "the camera is switched off in the config"},
        "pose_method": None})
    view.page.wait_for_function("() => document.getElementById('att-updated').textContent === ''",
                                timeout=2000)
    footer = view.page.locator("#att-footer")
    assert footer.inner_text() == "摄像头已在配置中关闭"
    view.switch_language()
    assert footer.inner_text() == "Camera switched off in the config"
    assert view.console_errors == []


def test_a_cookie_of_the_release_before_sign_in_ids_still_counts_and_its_sign_out_ends_it(
    lan_server: ServerThread, remote_ip: str
) -> None:
    # A board upgraded mid-lesson: the teachers' cookies are "issued.mac", without a sign-in id
    import hashlib
    import hmac

    from edge_agent.web.access import SignIn, session_signed

    issued = int(time.time()) - 60
    mac = hmac.new(WEB_TOKEN.encode(), f"edge-agent teacher view session {issued}".encode(), hashlib.sha256)
    old = f"{issued}.{mac.hexdigest()}"
    assert session_valid(old, WEB_TOKEN, time.time())
    assert _status(remote_ip, lan_server.port, "/api/v1/live", old) == 200
    conn = http.client.HTTPConnection(remote_ip, lan_server.port, timeout=5)
    try:
        conn.request("POST", "/logout",
                     headers={"Cookie": f"{COOKIE_NAME}={old}", "Sec-Fetch-Site": "same-origin"})
        assert conn.getresponse().status == 303
    finally:
        conn.close()
    assert _status(remote_ip, lan_server.port, "/api/v1/live", old) == 401
    # an id that is no id, or one the token did not sign, is no sign-in
    new = access.session_value(WEB_TOKEN, issued)
    stamp, sign_in, tag = new.split(".")
    assert session_signed(new, WEB_TOKEN) == SignIn(issued, sign_in)
    assert session_signed(f"{stamp}.{'0' * 16}.{tag}", WEB_TOKEN) is None
    assert session_signed(f"{stamp}.{sign_in.upper()}.{tag}", WEB_TOKEN) is None
    assert session_signed(f"{stamp}.{sign_in}.{tag}.x", WEB_TOKEN) is None


def test_signed_out_sign_ins_are_kept_only_until_they_would_have_ended_and_at_most_a_cap(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.web.access import SignIn, SignOuts

    monkeypatch.setattr(access, "MAX_SIGNED_OUT", 3)
    now = 1_800_000_000
    sign_outs = SignOuts()
    early = SignIn(now - access.COOKIE_MAX_AGE_S + 10, "a" * 16)  # ends in 10 s
    sign_outs.end(early, now)
    assert sign_outs.ended(early)
    later = [SignIn(now - i, f"{i:016x}") for i in range(3)]
    sign_outs.end(later[0], now + 11)  # past the early one's end: forgotten (its cookie is refused anyway)
    assert not sign_outs.ended(early) and sign_outs.ended(later[0])
    for sign_in in later[1:]:
        sign_outs.end(sign_in, now + 12)
    sign_outs.end(SignIn(now + 5, "f" * 16), now + 13)  # one over the cap: the one that ends soonest goes
    assert [sign_outs.ended(s) for s in later] == [True, True, False]  # issued 2 s before the others
    assert sign_outs.ended(SignIn(now + 5, "f" * 16))
