"""``POST /api/v1/students/erase``: erase students' learning data on a parent's request.

Carried out by the running daemon: it holds the states in memory and is the database's only writer, so a
row deleted behind its back came back with the student's next save. The reply comes after the delete has
committed. Access is the server's middleware: loopback or the board's web token, as for the class data;
a clicker's token is refused (it may only post answers). JSON only, as the answer API: a page open in the
board's own browser cannot post a form here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from edge_agent.errors import EdgeAgentError, InputRejected
from edge_agent.kt.erasure import id_forms, parse_student_ids
from edge_agent.kt.persistence import EVENT_KEEP_S
from edge_agent.kt.service import KTService
from edge_agent.telemetry import metrics
from edge_agent.web.request_body import defer_continue, read_json, send_continue

log = logging.getLogger(__name__)

ERASE_PATH = "/api/v1/students/erase"
ERASE_TIMEOUT_S = 30.0
KEPT = (
    "Class aggregates already computed or sent to the school's cloud hold no student and stay. The board "
    "keeps the answers' idempotency keys (keyed hashes of student and client event id, so that a client's "
    "retry is not counted again), without what each answer said or whose it was, for up to "
    f"{EVENT_KEEP_S / 86400:.0f} days; keys stored before this release have no student to find them by "
    "and keep what the answer said until they expire. The class roster file is the school's: `edge-agent "
    "kt roster remove` takes a student off it."
)


def kept_text(database: Path | None) -> str:
    """KEPT, and the copies of a damaged database moved aside beside ``database`` where there are any:
    they keep students' states, which no erase reaches (a review: the reply, all `edge-agent kt erase`
    prints, never said so, and only the README did)."""
    if database is None:
        return KEPT
    try:
        copies = sorted(p.name for p in database.parent.glob(f"{database.name}.corrupt-*"))
    except OSError as exc:  # said all the same: a copy may be there
        return (f"{KEPT} Not erased: any copy of a damaged database moved aside ({database.name}.corrupt-*, "
                f"not listed: {exc}) in {database.parent}; delete those files once nothing is to be "
                "recovered from them.")
    if not copies:
        return KEPT
    return (f"{KEPT} Not erased: {len(copies)} files of a damaged database moved aside in "
            f"{database.parent} ({', '.join(copies)}) keep students' learning states as they were then; "
            "delete them (sudo rm) once nothing is to be recovered from them.")


def _error(status: int, message: str, field: str | None = None, retry_after_s: int = 5) -> web.Response:
    body: dict[str, Any] = {"error": message} | ({"field": field} if field else {})
    headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


def _too_large(request: web.Request) -> web.Response:
    return _error(413, f"the request body is over {request.client_max_size} bytes; send fewer ids; nothing "
                       "was erased")


def erase_routes(service: Callable[[], KTService | None]) -> web.RouteTableDef:
    """The erase route over the running service (None while knowledge tracing starts)."""
    routes = web.RouteTableDef()

    @routes.post(ERASE_PATH, expect_handler=defer_continue)  # 100 Continue only past the token
    async def erase(request: web.Request) -> web.Response:
        svc = service()
        if svc is None or not svc.running:
            return _error(503, "knowledge tracing is not running (starting or stopping); nothing was erased: "
                               "retry shortly")
        if request.content_type != "application/json":
            return _error(415, 'send {"student_ids": [...]} as JSON with Content-Type: application/json')
        if (request.content_length or 0) > request.client_max_size:  # before "100 Continue": not sent
            return _too_large(request)
        await send_continue(request)
        try:
            body = await read_json(request)
            ids = parse_student_ids(body)
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request)
        except InputRejected as exc:
            return _error(400, f"{exc}; nothing was erased", exc.field)
        # each student with the pseudonyms of every form of its id an earlier release may have stored
        students = [{svc.pseudonymize(f) for f in forms} for forms in id_forms(body, ids).values()]
        try:
            erased = await asyncio.wait_for(asyncio.wrap_future(svc.erase(set().union(*students))),
                                            ERASE_TIMEOUT_S)
        except asyncio.TimeoutError:  # still queued: withdrawn; under way: it completes
            return _error(503, f"the erase was not confirmed within {ERASE_TIMEOUT_S:g} s (a slow or stalled "
                               "disk?); send the same request again: erasing twice is harmless")
        except EdgeAgentError as exc:  # ServiceBusy, StoreError (a full or read-only disk)
            return _error(503, f"nothing was erased: {exc}")
        # per student, not per form: one stored under two forms of its id counts once
        had_data = erased.students_with_data(students)
        metrics.KT_STUDENTS_ERASED.labels(reason="request").inc(had_data)
        log.info("erased the learning data of %s students on request (%s more had none on this board)",
                 had_data, len(ids) - had_data)
        kept = await asyncio.to_thread(kept_text, svc.database)  # a directory listing: the card may be slow
        return web.json_response({"students": len(ids), "erased": had_data,
                                  "without_data": len(ids) - had_data, "kept": kept})

    return routes
