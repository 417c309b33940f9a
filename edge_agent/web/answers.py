"""The answer API: clickers and tablets post answers and get feedback; teachers read class mastery.

``POST /api/v1/answers`` takes one answer object or ``{"answers": [...]}``. The whole batch is validated
before any of it is applied; problems come back as 4xx JSON ``{"error": ..., "field": ...}``. A full
intake returns 503 with ``Retry-After``. Access control is the server's middleware, not this module's.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge_agent.clock_sync import ClockSyncFlag
from edge_agent.config import KTSettings
from edge_agent.errors import ConfigError, InputRejected
from edge_agent.kt.answers import MAX_ZONE_AHEAD_S, NO_ZONE_HINT, Answer, parse_batch, without_zone
from edge_agent.kt.roster import Roster
from edge_agent.kt.service import KTService, ServiceBusy
from edge_agent.telemetry import metrics
from edge_agent.web.request_body import defer_continue, read_json, send_continue

ServiceSource = KTService | Callable[[], KTService | None]
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
log = logging.getLogger(__name__)


def _error(status: int, message: str, field: str | None = None, retry_after_s: int = 1) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
    return web.json_response(body, status=status, headers=headers)


def _content_type_sent(request: web.Request) -> str:
    # aiohttp reads a missing header as application/octet-stream: the 415 named a type never sent
    return repr(request.content_type) if "Content-Type" in request.headers else "no Content-Type header"


def _too_large(request: web.Request) -> web.Response:
    return _rejected(413, f"the request body is over {request.client_max_size} bytes; send smaller batches")


def _rejected(status: int, message: str, field: str | None = None) -> web.Response:
    """A 4xx for bad input, counted: nothing of the request was applied."""
    metrics.ANSWERS.labels(outcome="rejected").inc()
    return _error(status, message, field)


KT_OFF = ("knowledge tracing is switched off on this board (kt.enabled = false in its config): it takes no "
          "answers and has no mastery to show; the school's IT can switch it on")


def switched_off_routes() -> web.RouteTableDef:
    """The answer API's routes on a board with knowledge tracing switched off: a 404 that says so (a review:
    "no endpoint POST /api/v1/answers; the answer API is POST /api/v1/answers")."""
    routes = web.RouteTableDef()

    async def switched_off(request: web.Request) -> web.Response:
        return web.json_response({"error": KT_OFF}, status=404)

    routes.post("/api/v1/answers")(switched_off)
    routes.get("/api/v1/students/{pseudonym}/mastery")(switched_off)
    routes.get("/api/v1/class/mastery")(switched_off)
    routes.post("/api/v1/students/erase")(switched_off)  # no student data is kept then
    return routes


def answer_routes(
    service: ServiceSource,
    settings: KTSettings,
    roster: Roster | None = None,
    clock_synced: Callable[[], bool] | None = None,
    failure: Callable[[], str | None] = lambda: None,
) -> web.RouteTableDef:
    """Routes over ``service`` (or a callable returning it, None while knowledge tracing starts); with
    ``roster``, answers only for the students on it. ``clock_synced`` says whether the board's clock is
    known to be right (default: systemd-timesyncd's flag); only then are future times refused.
    ``failure`` says why knowledge tracing failed to start, if it did."""
    routes = web.RouteTableDef()
    synced = clock_synced or ClockSyncFlag()
    warned = [-float("inf")]  # monotonic time of the last "board clock behind" log line

    def current() -> KTService | None:
        return service if isinstance(service, KTService) else service()

    @routes.post("/api/v1/answers", expect_handler=defer_continue)  # 100 Continue only past the token
    async def post_answers(request: web.Request) -> web.Response:
        svc = current()
        if svc is None or not svc.running:
            # counted here: the service that counts the others is not there yet (the web port opens before
            # the engines load, so on a board building TensorRT plans this is the whole start-up)
            metrics.ANSWERS.labels(outcome="unavailable").inc()
            return _not_running(failure())
        # JSON only: a web page in a browser on the board could otherwise post answers to loopback (which
        # needs no token) as a "simple" cross-site request (text/plain or a form) without asking first.
        if request.content_type != "application/json":
            return _rejected(415, "send the answers as JSON with Content-Type: application/json "
                                  f"(got {_content_type_sent(request)})")
        if (request.content_length or 0) > request.client_max_size:  # before "100 Continue": not sent
            return _too_large(request)
        await send_continue(request)
        body, refused = await _json_body(request)
        if refused is not None:
            return refused
        now, board_synced = svc.now(), synced()
        try:
            answers = parse_batch(body, svc.package, settings, svc.pseudonymize, now,
                                  board_clock_synced=board_synced)
        except InputRejected as exc:
            status = 413 if exc.field == "answers" and "limit" in str(exc) else 400
            return _rejected(status, str(exc), exc.field)
        if roster is not None:
            try:
                students = roster.current()
            except ConfigError as exc:
                return _error(503, f"answers are refused until the class roster can be read: {exc}",
                              retry_after_s=60)
            unknown = [n for n, a in enumerate(answers) if a.student not in students]
            if unknown:
                where = f"answers[{unknown[0]}]" if isinstance(body, dict) and "answers" in body else "answer"
                return _rejected(400, f"{where}: this student is not on the board's class roster "
                                      "(kt.roster_file); nothing was applied. The school's IT adds students "
                                      "with `edge-agent kt roster add`", "student_id")
        try:
            results = await svc.submit_async(answers)
        except ServiceBusy as exc:
            return _error(503, str(exc), retry_after_s=exc.retry_after_s)
        batch = isinstance(body, dict) and "answers" in body
        if not board_synced:
            sent = [a.get("answered_at") for a in (body["answers"] if batch else [body])]
            _note_clock_behind(answers, results, now, settings.max_future_skew_s, warned, sent=sent)
        if batch:
            return web.json_response({"results": results})  # a conflict is that answer's status
        # One answer that reuses another's client event id: 409, with the student's current feedback
        return web.json_response(results[0], status=409 if results[0]["status"] == "conflict" else 200)

    @routes.get("/api/v1/students/{pseudonym}/mastery")
    async def student_mastery(request: web.Request) -> web.Response:
        if not settings.per_student_api:
            return _error(404, "the per-student API is switched off (kt.per_student_api = false)")
        svc = current()
        if svc is None:
            return _not_running(failure())
        pseudonym = request.match_info["pseudonym"]
        if not _PSEUDONYM.match(pseudonym):
            return _error(400, "a student pseudonym is 32 lowercase hex characters", "pseudonym")
        mastery = svc.student_mastery(pseudonym)
        if mastery is None:
            return _error(404, "no answers from this student yet")
        return web.json_response(mastery)

    @routes.get("/api/v1/class/mastery")
    async def class_mastery(_request: web.Request) -> web.Response:
        svc = current()
        if svc is None:
            return _not_running(failure())
        return web.json_response(svc.class_summary())

    return routes


async def _json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    """The body as JSON, or the refusal that says what is wrong with it."""
    try:
        return await read_json(request), None
    except web.HTTPRequestEntityTooLarge:
        return None, _too_large(request)
    except InputRejected as exc:
        return None, _rejected(400, str(exc))


def _not_running(failure: str | None) -> web.Response:
    if failure is None:
        return _error(503, "knowledge tracing is not running (starting or stopping); retry shortly")
    # A review: a model package the board could not load answered "retry shortly", and clickers retried
    # until someone happened to look at the board.
    return _error(503, f"knowledge tracing {failure}: answers are refused until the school's IT fixes it "
                       "and restarts edge-agent (see `edge-agent doctor` on the board)", retry_after_s=300)


def _note_clock_behind(
    answers: list[Answer],
    results: list[dict[str, Any]],
    now: float,
    skew_s: float,
    warned: list[float],
    *,
    sent: list[Any],
) -> None:
    """Answers taken although stamped ahead of an unsynchronised board clock: each says so in its
    feedback, the metric counts them (an alert watches it), and the log says so every 10 minutes.
    ``sent``: each answer's answered_at as sent. Local time without a zone, up to 14 h ahead, is the
    client's fault, not the board's clock: its feedback says so, and it is not counted (it set off
    EdgeAgentClockBehind for every board in a zone east of UTC whose clock was not synchronised)."""
    ahead = []
    for answer, feedback, stamp in zip(answers, results, sent, strict=True):
        seconds = answer.answered_at - now
        if seconds <= skew_s:
            continue
        if seconds <= MAX_ZONE_AHEAD_S + skew_s and without_zone(stamp):
            feedback["warning"] = (f"answered_at is {seconds:.0f} s ahead of this board's clock; "
                                   f"{NO_ZONE_HINT}. The answer was applied")
        else:
            ahead.append((seconds, feedback))
    if not ahead:
        return
    metrics.ANSWERS_CLOCK_AHEAD.inc(len(ahead))
    for seconds, feedback in ahead:
        feedback["warning"] = (
            f"answered_at is {seconds:.0f} s ahead of this board's clock, which is not NTP-synchronised; "
            "the answer was applied. The school's IT should fix the board's clock (timedatectl set-ntp true)"
        )
    if time.monotonic() - warned[0] >= 600.0:
        warned[0] = time.monotonic()
        log.warning(
            "answers arrive stamped up to %.0f s ahead of this board's clock, which is not NTP-synchronised; "
            "they are applied, but the board's clock is probably behind: timedatectl set-ntp true, and allow "
            "UDP 123 outbound", max(s for s, _ in ahead),
        )
