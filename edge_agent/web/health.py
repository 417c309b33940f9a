"""Liveness and readiness endpoints for load balancers, systemd checks and the fleet's probes.

``/healthz`` answers 200 whenever the event loop runs (a hung loop cannot answer, which is the point).
``/readyz`` asks the daemon's readiness function, the same one behind the systemd STATUS line, and
answers 503 with the reasons while the board cannot do its job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, list[str]]]


def health_routes(readiness: Readiness) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    @routes.get("/readyz")
    async def readyz(_request: web.Request) -> web.Response:
        try:
            ready, reasons = readiness()
        except Exception as exc:  # a broken readiness function must read as "not ready", not as a 500
            log.warning("readiness check failed: %s", exc)
            ready, reasons = False, [f"readiness check failed: {exc}"]
        body = {"status": "ready" if ready else "not ready", "reasons": list(reasons)}
        return web.json_response(body, status=200 if ready else 503)

    return routes
