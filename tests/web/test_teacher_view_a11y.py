"""The teacher view for a teacher with a screen reader, a keyboard, browser zoom or Windows high contrast:
in real headless Chromium against a real server, with axe-core for the rules a program can check (the
axe.min.js that the PyPI package axe-playwright-python ships, installed with the dev extra like Playwright;
only that file is used)."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import pytest

from edge_agent.live import LiveBoard
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, TeacherViewPage
from tests.web.sample import attention_section

pytestmark = pytest.mark.browser

PageFactory = Callable[..., TeacherViewPage]
AXE = files("axe_playwright_python") / "axe.min.js"


def _axe_violations(page: Any) -> list[str]:
    """axe-core's violations on the page as it is now: 'rule: element (why)', one per element."""
    # evaluate, not a <script> tag: the page's Content-Security-Policy allows only its own scripts
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    return list(page.evaluate("""async () => (await axe.run(document)).violations.flatMap((v) =>
        v.nodes.map((n) => v.id + ': ' + n.target.join(' ') + ' ('
          + n.failureSummary.replace(/\\s+/g, ' ').trim() + ')'))"""))


def test_axe_finds_no_violation_in_either_language_while_live_paused_or_cut_off(
        live_board: LiveBoard, teacher_page: PageFactory) -> None:
    # Low attention: the card's tinted background is where the grey text has the least contrast.
    live_board.publish("attention", attention_section(current=0.3, low=True))
    server = ServerThread(live_board, token=WEB_TOKEN, board_name="初一（2）班").start()
    try:
        view = teacher_page(server.url)
        view.open()
        view.wait_live()
        assert _axe_violations(view.page) == [], "zh-CN, live"
        view.page.click("#pause")
        assert _axe_violations(view.page) == [], "zh-CN, updates paused"
        view.page.click("#pause")
        view.switch_language()
        assert _axe_violations(view.page) == [], "en, live"
        live_board.publish("attention", attention_section(current=None, faces=0) | {"camera": {
            "state": "paused", "fps": 0.0, "detail": "", "opens_at": time.time() + 2700}})
        view.page.wait_for_function("() => document.getElementById('attention').dataset.camera === 'down'")
        assert _axe_violations(view.page) == [], "en, camera paused by the teacher"
        login = teacher_page(server.url)
        login.open("/login")
        assert _axe_violations(login.page) == [], "the sign-in page"
        assert view.console_errors == []  # (once the board is gone, the failed reconnections are errors)
    finally:
        server.stop()
    # Cut off, the last figures stay on screen to be read: they were faded to 92 %, and the grey and orange
    # text fell to 4.2-4.4:1, under the 4.5 of WCAG AA, in 16 places.
    view.page.wait_for_selector("#conn-lost", state="visible", timeout=10000)
    assert _axe_violations(view.page) == [], "en, connection lost"


def test_axe_finds_no_violation_on_a_board_with_no_figures_yet(teacher_page: PageFactory) -> None:
    server = ServerThread(LiveBoard(), token=WEB_TOKEN).start()
    try:
        view = teacher_page(server.url)
        view.open_live_in("zh")
        assert _axe_violations(view.page) == [], "zh-CN, nothing published"
        view.switch_language()
        assert _axe_violations(view.page) == [], "en, nothing published"
    finally:
        server.stop()
