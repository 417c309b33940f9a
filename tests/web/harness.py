"""A real teacher-view server in a background thread, and a Playwright page on any base URL.

The lead's full-daemon test reuses :class:`TeacherViewPage` with the daemon's own URL.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.config import WebSettings
from edge_agent.live import LiveBoard
from edge_agent.web.server import WebComponent

# Debian's chromium; where the system has none (Ubuntu's is a snap), None: Playwright's own, which
# scripts/setup.sh fetches there
CHROMIUM: str | None = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def run_async(coro: Any, timeout: float = 30.0) -> Any:
    """asyncio.run in a fresh thread: safe even when the calling thread already runs an event loop."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="test-async")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"async test scenario did not finish within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


class ServerThread:
    """Runs a WebComponent on its own event loop; ``url`` is the loopback address once started."""

    def __init__(self, live: LiveBoard, token: str | None = None, host: str = "127.0.0.1",
                 route_tables: Sequence[web.RouteTableDef] = (), keepalive_s: float = 15.0,
                 default_language: str = "zh-CN", tls: tuple[Path, Path] | None = None,
                 client_tokens: Path | None = None, port: int = 0, timezone: str = "",
                 board_name: str = "") -> None:
        cert, key = tls or (None, None)
        settings = WebSettings(host=host, port=8080, token_file=None, default_language=default_language,
                               tls_cert_file=cert, tls_key_file=key, client_tokens_file=client_tokens)
        self.component = WebComponent(settings, live, token, route_tables, port=port, keepalive_s=keepalive_s,
                                      timezone=timezone, board_name=board_name)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="web-test-server", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.component.start(), self.loop).result(timeout=10)
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    @property
    def port(self) -> int:
        assert self.component.port is not None
        return self.component.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            self.call(self.component.stop(), timeout=15)
            # as asyncio.run does: a connection's handler task cancelled by the shutdown but not yet run to
            # its end stayed pending in the closed loop, and its garbage collection, in whichever later test,
            # logged "Task was destroyed but it is pending!" at ERROR (CI, 3.10: a test that asserts no
            # error was logged failed on it)
            self.call(_finish_tasks(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            self.loop.close()


async def _finish_tasks() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def non_loopback_ipv4() -> str | None:
    """An address of this machine that is not loopback, so a local request arrives as 'remote'."""
    import ipaddress
    import subprocess

    try:
        result = subprocess.run(["hostname", "-I"], check=False, capture_output=True, text=True, timeout=5)
        out = result.stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in out.split():
        try:
            address = ipaddress.ip_address(word)
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback:
            return word
    return None


class TeacherViewPage:
    """A Playwright page on the teacher view at ``base_url`` (a test server or the full daemon)."""

    def __init__(self, browser: Any, base_url: str, width: int = 1920, height: int = 1080,
                 timezone_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN",
                                           timezone_id=timezone_id)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def open(self, path: str = "/") -> Any:
        response = self.page.goto(self.base_url + path, wait_until="load")
        return response

    def wait_live(self, timeout_ms: float = 5000) -> None:
        self.page.wait_for_selector('#conn[data-state="live"]', timeout=timeout_ms)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.text_content() or "").strip()

    def open_live_in(self, lang: str) -> None:
        """Open the page, wait until it is live, and show it in ``lang`` ("zh", the board's default, or
        "en")."""
        self.open()
        self.wait_live()
        if lang == "en":
            self.switch_language()

    def switch_language(self) -> None:
        before = self.page.evaluate("document.documentElement.lang")
        self.page.click("#lang")
        self.page.wait_for_function("b => document.documentElement.lang !== b", arg=before, timeout=3000)

    def close(self) -> None:
        self.context.close()
