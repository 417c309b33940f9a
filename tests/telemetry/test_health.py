"""/healthz and /readyz over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import ClientSession, ClientTimeout, web

from edge_agent.web.health import health_routes


def _get_all(readiness: Callable[[], tuple[bool, list[str]]]) -> dict[str, tuple[int, dict]]:
    async def scenario() -> dict[str, tuple[int, dict]]:
        app = web.Application()
        app.add_routes(health_routes(readiness))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        answers = {}
        try:
            async with ClientSession(timeout=ClientTimeout(total=5)) as session:
                for path in ("/healthz", "/readyz"):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        answers[path] = (response.status, await response.json())
        finally:
            await runner.cleanup()
        return answers

    return asyncio.run(scenario())


def test_ready_daemon_answers_200_on_both() -> None:
    answers = _get_all(lambda: (True, []))
    assert answers["/healthz"] == (200, {"status": "alive"})
    assert answers["/readyz"] == (200, {"status": "ready", "reasons": []})


def test_not_ready_daemon_answers_503_with_reasons_and_is_still_alive() -> None:
    answers = _get_all(
        lambda: (False, ["camera /dev/video0 cannot be opened", "engine fsanet-1x1 not loaded"])
    )
    assert answers["/healthz"][0] == 200
    status, body = answers["/readyz"]
    assert status == 503
    assert body == {
        "status": "not ready",
        "reasons": ["camera /dev/video0 cannot be opened", "engine fsanet-1x1 not loaded"],
    }


def test_a_crashing_readiness_function_reads_as_not_ready() -> None:
    def broken() -> tuple[bool, list[str]]:
        raise RuntimeError("registry lock poisoned")

    status, body = _get_all(broken)["/readyz"]
    assert status == 503 and body["reasons"] == ["readiness check failed: registry lock poisoned"]
