"""Fixtures for the web tests: a filled LiveBoard, a real server in a thread, and headless Chromium."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from edge_agent.live import LiveBoard
from tests.web.harness import CHROMIUM, CHROMIUM_ARGS, ServerThread, TeacherViewPage
from tests.web.sample import fill_board

WEB_TOKEN = "correct-horse-battery-staple-7f3a"


@pytest.fixture()
def live_board() -> LiveBoard:
    board = LiveBoard()
    fill_board(board, time.time())
    return board


@pytest.fixture()
def teacher_server(live_board: LiveBoard) -> Iterator[ServerThread]:
    server = ServerThread(live_board, token=WEB_TOKEN).start()
    yield server
    server.stop()


# Module scope, not session: sync Playwright keeps an event loop running in the main thread, which
# would make asyncio.run() fail in every test collected after this module.
@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        path = CHROMIUM or p.chromium.executable_path
        if not os.path.exists(path):
            pytest.skip(f"no Chromium for the browser tests (neither Debian's chromium package nor "
                        f"Playwright's {path}): apt-get install chromium, or "
                        ".venv/bin/python -m playwright install chromium")
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def teacher_page(chromium: object) -> Iterator[Callable[..., TeacherViewPage]]:
    """Factory: ``teacher_page(base_url, width=1920, height=1080, timezone_id=None)`` (None: this machine's
    zone); every page is closed afterwards."""
    pages: list[TeacherViewPage] = []

    def make(base_url: str, width: int = 1920, height: int = 1080,
             timezone_id: str | None = None) -> TeacherViewPage:
        page = TeacherViewPage(chromium, base_url, width, height, timezone_id)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()
