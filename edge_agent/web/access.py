"""Who may look at the teacher view: loopback freely, any other address only with the board's token.

The rule is a pure function (:func:`decide`) so it can be tested with a table; the aiohttp middleware
only gathers the inputs. The remote address is the TCP peer: ``X-Forwarded-For`` and friends are
ignored, because anyone on the classroom network can send them.

A token may arrive as ``Authorization: Bearer <token>``, as a session cookie, as ``?token=<token>``
(once: the answer sets the cookie and redirects to the same page without the token in the address bar),
or through the small login form at ``/login``. The cookie holds its issue time, the sign-in's id and an HMAC
of both under the token, not the token, and ends after COOKIE_MAX_AGE_S on the board's clock, or at a
sign-out (:class:`SignOuts`). A clicker's own token
(web/clients.py), as a Bearer header, lets in ``POST /api/v1/answers`` and nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import hmac
import html
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from edge_agent.config import MAX_TOKEN_CHARS
from edge_agent.errors import ConfigError
from edge_agent.telemetry import metrics
from edge_agent.web.clients import ANSWERS_PATH, Clients
from edge_agent.web.request_body import defer_continue, read_within, send_continue

log = logging.getLogger(__name__)

COOKIE_NAME = "edge_agent_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
EVENTS_PATH = "/api/v1/events"  # the teacher view's stream (view.py)
# The page's own words are no board data: a page whose sign-in ended (or whose board cannot be reached)
# must still switch language (a review: the button did nothing, all left in English)
PUBLIC_PATHS: frozenset[str] = frozenset({"/healthz", "/i18n/en.json", "/i18n/zh-CN.json"})
MAX_LOGIN_BYTES = 4096  # the form holds a token of at most 512 characters and a path
FAILED_LOGIN_DELAY_S = 0.5  # slows guessing through the form; tokens are long random strings anyway
COOKIE_MAX_AGE_S = 12 * 3600  # one school day; the teacher logs in again tomorrow
# Sign-ins signed out of before their end, kept until that end: a sign-out a minute for the 12 h is 720
MAX_SIGNED_OUT = 10_000
_SIGN_IN_ID = re.compile(r"[0-9a-f]{16}")
# Session | None, see _session (a RequestKey where aiohttp has one: request_body.py says why)
SESSION_KEY: Any = (web.RequestKey("session", object) if hasattr(web, "RequestKey")
                    else "edge_agent.session")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Decision(enum.Enum):
    ALLOW = "allow"
    NEED_TOKEN = "need_token"  # remote, token configured, none presented
    BAD_TOKEN = "bad_token"  # remote, token configured, a wrong one presented
    REMOTE_DISABLED = "remote_disabled"  # remote, no token configured: only loopback may look


def is_loopback(remote_ip: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything unparsable or missing."""
    if not remote_ip:
        return False
    try:
        address = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def tokens_match(presented: str | None, token: str) -> bool:
    """Constant-time comparison; a missing or oversized presented token never matches."""
    if presented is None or len(presented) > MAX_TOKEN_CHARS:
        return False
    # surrogatepass: aiohttp hands header bytes that are not UTF-8 over as surrogates, which "utf-8" alone
    # refuses (a review: a 500 and a traceback per request, without a token)
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


def is_local_host(host: str | None) -> bool:
    """Whether a request's Host names the board itself: ``localhost`` or a loopback address, the names
    browsers count as secure and so send Fetch Metadata to (from_another_site reads it). A page the board's
    own browser opened from a DNS name that rebinds to 127.0.0.1 gets no exemption, nor does the board's
    hostname (127.0.1.1 in /etc/hosts, often its guessable device id): over http to it Chromium sends a
    no-cors GET without Sec-Fetch or Origin, and another site's page took all 32 teacher-view streams
    and made /metrics afresh 250 times a second (a review)."""
    if host is None:
        return True  # HTTP/1.0 without Host: no browser sends that
    name = host.lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name == "localhost" or is_loopback(name)


def from_this_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser says the request comes from the board's own page (Fetch Metadata, or an Origin
    naming the Host): what a sign-out needs, since a page of another site may send "Origin: null"."""
    if headers.get("Sec-Fetch-Site", "").lower() == "same-origin":
        return True
    origin = headers.get("Origin")
    return origin is not None and headers.get("Host", "") != "" and _names_the_host(origin, headers)


def from_another_site(headers: Mapping[str, str], method: str, *, links: bool = True) -> bool:
    """Whether a browser sent this request for a page of another site (its Fetch Metadata says so, or, from
    a browser without it, an Origin that is not the Host). The board's own browser reaches loopback, which
    needs no token: a page of any site open there used the board's API as the board (a review: 40 event
    streams a page kept opening took every place of the teachers' views; uncached /metrics 142 times a
    second took answer p99 from 6 to 229 ms). A link followed to the board (a GET navigation) is no request
    of that page's (unless not ``links``: /metrics, which iframes of such a page loaded afresh), and a
    client that is no browser sends neither header."""
    site = headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site"):  # same-site: another port of the board, or of its domain
        return not (links and method == "GET" and headers.get("Sec-Fetch-Mode", "").lower() == "navigate")
    origin = headers.get("Origin")
    # "null" tells nothing: a page left open from an older release (no-referrer) posts so, and over plain
    # http to a LAN address browsers send no Fetch Metadata (loopback gets it: it counts as secure). Only
    # the sign-out asks for more (from_this_site).
    if origin is None or origin == "null" or site in ("same-origin", "none"):
        return False
    return not _names_the_host(origin, headers)


def _names_the_host(origin: str, headers: Mapping[str, str]) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[oops": no origin this board has; it answered 500 (a review)
        return False
    return netloc.lower() == headers.get("Host", "").lower()


def refuse_another_site(server: str) -> web.Response:
    metrics.WEB_CROSS_SITE_REFUSED.labels(server=server).inc()
    return web.json_response({"error": "cross_site", "detail": (
        "this board answers no request a page of another web site makes: open the board's own page")},
        status=403)


def decide(
    remote_ip: str | None, presented_token: str | None, token: str | None, host: str | None = None
) -> Decision:
    if is_loopback(remote_ip) and is_local_host(host):
        return Decision.ALLOW
    if token is None:
        return Decision.REMOTE_DISABLED
    if presented_token is None or presented_token == "":
        return Decision.NEED_TOKEN
    return Decision.ALLOW if tokens_match(presented_token, token) else Decision.BAD_TOKEN


@dataclasses.dataclass(frozen=True)
class SignIn:
    """One sign-in, as its cookie names it: when it was issued, and its id."""

    issued: int
    id: str

    def in_time(self, now: float) -> bool:
        # Either way from now: a board clock stepped back by NTP (it ran fast) put every sign-in of the day
        # in the future, and the teachers were told their token was wrong
        return abs(now - self.issued) <= COOKIE_MAX_AGE_S


def _mac(token: str, signed: str) -> str:
    message = f"edge-agent teacher view session {signed}".encode()
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).hexdigest()


def session_value(token: str, issued: int, sign_in: str | None = None) -> str:
    """What the cookie holds: when it was issued, the sign-in's id (``sign_in``, a new one if None) and an
    HMAC of both under the token. Useless as the token itself, and over when the board says so: the audit
    replayed a captured cookie (it had been a fixed function of the token) with nothing on the board to
    end it; and a sign-out ends its id (a review: the other tabs went on streaming the class for 12 h)."""
    sign_in = secrets.token_hex(8) if sign_in is None else sign_in
    return f"{issued}.{sign_in}.{_mac(token, f'{issued} {sign_in}')}"


def session_signed(cookie: str, token: str) -> SignIn | None:
    """The sign-in the cookie names, if ``token`` signed it (of any age), else None. A cookie of a release
    before sign-in ids ("issued.mac", a board upgraded mid-lesson) still counts, its MAC as its id."""
    parts = cookie.split(".")
    issued_text = parts[0]
    if not (issued_text.isascii() and issued_text.isdigit()) or len(issued_text) > 12:  # "²" is a digit
        return None
    issued = int(issued_text)
    if len(parts) == 3 and _SIGN_IN_ID.fullmatch(parts[1]):
        expected, sign_in = session_value(token, issued, parts[1]), parts[1]
    elif len(parts) == 2:
        expected, sign_in = f"{issued}.{_mac(token, str(issued))}", parts[1]
    else:
        return None
    signed = hmac.compare_digest(cookie.encode("utf-8", "surrogatepass"), expected.encode())
    return SignIn(issued, sign_in) if signed else None


def session_valid(cookie: str, token: str, now: float) -> bool:
    """Whether ``token`` signed the cookie and its time is not over (a sign-out is :class:`SignOuts`')."""
    sign_in = session_signed(cookie, token)
    return sign_in is not None and sign_in.in_time(now)


class SignOuts:
    """The sign-ins signed out of before their end, in memory: a sign-out deletes the cookie of that
    browser, but its other tabs' streams went on showing the class for the rest of the 12 h, and a copy of
    the cookie kept working (a review, on a shared classroom PC). Each is kept until its sign-in would
    have ended (then its cookie is refused anyway), at most MAX_SIGNED_OUT: only a cookie the token
    signed gets in, so only a token holder can add one. A restart forgets them (and ends every stream)."""

    def __init__(self) -> None:
        self._ended: dict[str, float] = {}  # sign-in id -> when it would have ended (epoch s)
        self._signed_out = asyncio.Event()  # set, and replaced, at each sign-out: streams look again

    def end(self, sign_in: SignIn, now: float) -> None:
        self._ended = {id_: end for id_, end in self._ended.items() if end >= now}
        self._ended[sign_in.id] = sign_in.issued + COOKIE_MAX_AGE_S
        if len(self._ended) > MAX_SIGNED_OUT:  # the one that ends soonest goes: the least left to show
            del self._ended[min(self._ended, key=self._ended.__getitem__)]
        self._signed_out.set()
        self._signed_out = asyncio.Event()

    def ended(self, sign_in: SignIn) -> bool:
        return sign_in.id in self._ended

    async def next_sign_out(self) -> None:
        """Returns at the next sign-out of any sign-in on this board."""
        await self._signed_out.wait()


@dataclasses.dataclass(frozen=True)
class Session:
    """The sign-in a request from another computer came in by (not a token, not the board's own screen):
    a teacher-view stream ends with it, at its end or at its sign-out from any tab (view.py)."""

    sign_in: SignIn
    sign_outs: SignOuts

    def over(self, now: float) -> bool:
        return now >= self.sign_in.issued + COOKIE_MAX_AGE_S or self.sign_outs.ended(self.sign_in)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _presented(request: web.Request, token: str | None, sign_outs: SignOuts, *,
               cookie_counts: bool = True) -> str | None:
    """The token the request carries, with a valid session cookie not signed out of counting as the token
    (unless not ``cookie_counts``)."""
    bearer = _bearer(request)
    if bearer is not None:
        return bearer
    # Only a page opened from a link takes ?token= (and moves it to the cookie at once); an API call
    # with it would leave the token in proxy and server logs (a review: GET /api/v1/status?token= did).
    page = request.method == "GET" and not request.path.startswith("/api/")
    linked = request.query.get("token") if page else None
    cookie = request.cookies.get(COOKIE_NAME) if cookie_counts else None
    if cookie is not None and token is not None and len(cookie) <= MAX_TOKEN_CHARS:
        sign_in = session_signed(cookie, token)
        if sign_in is not None and sign_in.in_time(time.time()) and not sign_outs.ended(sign_in):
            return token
        if linked is not None:  # the link IT sent after changing the token beats the cookie of the old one
            return linked
        if sign_in is not None:
            return None  # ended or signed out of: sign in again, not "that token is not right"
        return cookie  # a stale cookie (token rotated) is a wrong token, not a missing one
    return linked


def _session(request: web.Request, token: str | None, sign_outs: SignOuts) -> Session | None:
    """The sign-in this request was let in by; None when it came in by a token or from the board's own
    screen. A teacher-view stream ends with it (a review: one opened at the end of a sign-in went on for
    as long as the browser kept it)."""
    cookie = request.cookies.get(COOKIE_NAME)
    if token is None or _bearer(request) is not None or cookie is None:
        return None
    if decide(request.remote, None, token, request.headers.get("Host")) is Decision.ALLOW:
        return None  # the board's own screen needs no sign-in
    sign_in = session_signed(cookie, token) if len(cookie) <= MAX_TOKEN_CHARS else None
    return None if sign_in is None else Session(sign_in, sign_outs)


def _set_session(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE_NAME, session_value(token, int(time.time())), max_age=COOKIE_MAX_AGE_S, httponly=True,
        samesite="Strict",
        path="/",
        secure=request.secure,  # over HTTPS the browser never sends it back in clear
    )


def _without_token(request: web.Request) -> str:
    query = [(k, v) for k, v in request.query.items() if k != "token"]
    return _safe_next(request.path) + (f"?{urlencode(query)}" if query else "")


class _FailedSignIns:
    """Wrong tokens, counted (edge_web_auth_failures_total) and logged at most once a minute: a guesser
    made 5,400 tries a second unseen, and each failed form sign-in logged one line. ``report`` is the
    line, with the count and the latest address."""

    def __init__(self, report: str) -> None:
        self._report = report
        self._since_log = 0
        self._logged = 0.0

    def note(self, remote: str | None, decision: Decision) -> None:
        if decision is not Decision.BAD_TOKEN:
            return  # no token at all is a browser opening the page, not a guess
        metrics.WEB_AUTH_FAILURES.inc()
        self._since_log += 1
        now = time.monotonic()
        if now - self._logged >= 60.0:
            log.warning(self._report, self._since_log, remote)
            self._since_log, self._logged = 0, now


_failed = _FailedSignIns("teacher view: %s wrong tokens since the last report, the latest from %s")
# Apart from the teacher view's: 598 refused answers were reported as "teacher view" wrong tokens, and IT
# looked for a guesser at the view where a clicker kept a revoked token.
_failed_answers = _FailedSignIns(
    f"answer API (POST {ANSWERS_PATH}): %s wrong tokens since the last report, the latest from %s; usually "
    "a clicker or tablet app with a revoked or mistyped token")

_REFUSALS = {
    Decision.REMOTE_DISABLED: (
        403,
        "This teacher view only answers on the board itself. To allow other computers, put a token in "
        "a file (mode 600), set web.token_file to that file in /etc/edge-agent/config.toml, and restart "
        "edge-agent.",
    ),
    Decision.NEED_TOKEN: (401, "Sign in with the board's web token (ask your school IT)."),
    Decision.BAD_TOKEN: (401, "That token is not right. Ask your school IT for the board's web token."),
}
# A clicker's wrong token on a board with client tokens: the web token would also open the teacher view
# and the class data, so the vendor is sent for a clicker token, not for it.
_NOT_A_CLIENT = (
    "This token is not (or no longer) a clicker token of this board. Ask your school IT for one: they "
    "make it with `edge-agent web clients add NAME`."
)
_NO_CLIENT_TOKEN = (
    "Send this board's clicker token as 'Authorization: Bearer <token>'. Ask your school IT for one: they "
    "make it with `edge-agent web clients add NAME`."
)

# zh-CN first (the teachers'), English beside it; the form names its error for screen readers.
_LOGIN_ZH = {
    Decision.NEED_TOKEN: "请输入班牌的访问令牌登录（向学校 IT 人员索取）。",
    Decision.BAD_TOKEN: "令牌不正确。请向学校 IT 人员索取班牌的访问令牌。",
}
_LOGIN_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;
max-width:34rem;margin:10vh auto;padding:0 1rem;font-size:1.2rem}}input,button{{font-size:1.2rem;
padding:.4rem}}p.error{{color:#a33;font-weight:600}}</style></head>
<body><main><h1>教师视图 · <span lang="en">Teacher view</span></h1>
<p id="msg" class="{kind}"{role}>{message_zh}<br><span lang="en">{message}</span></p>
<form method="post" action="{login}"><label>令牌 / <span lang="en">Token</span>
<input type="password" name="token" autocomplete="current-password" maxlength="{maxlen}" required autofocus
aria-describedby="msg"{invalid}></label><input type="hidden" name="next" value="{next}">
<button type="submit">登录 / <span lang="en">Sign in</span></button>
</form></main></body></html>"""


# A browser on a board without a web token: a teacher's laptop got raw English JSON (a review). Words for
# the teacher, zh-CN first, and the fix for IT below them.
_REMOTE_DISABLED_ZH = "本班牌只允许在班牌本机查看。如需在其他电脑查看，请联系学校 IT 人员设置访问令牌。"
_REMOTE_DISABLED_EN = ("This board's teacher view opens only on the board itself. To view it on another "
                       "computer, ask your school IT to set a web token.")
_REMOTE_DISABLED_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>edge-agent · 仅限本机 / on the board only</title>
<style>body{{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;
max-width:34rem;margin:10vh auto;padding:0 1rem;font-size:1.2rem}}
small{{color:#555;font-size:.85rem}}</style></head>
<body><main><h1>教师视图 · <span lang="en">Teacher view</span></h1>
<p>{zh}</p><p lang="en">{en}</p>
<p lang="en"><small>For IT: {detail}</small></p>
</main></body></html>"""
_HTML_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                 "form-action 'self'; frame-ancestors 'none'", "Cache-Control": "no-store"}


def _wants_html(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def _refusal(
    request: web.Request, decision: Decision, form: bool = False, target: str | None = None
) -> web.Response:
    status, message = _REFUSALS[decision]
    if decision is Decision.REMOTE_DISABLED and (form or _wants_html(request)):
        page = _REMOTE_DISABLED_PAGE.format(zh=html.escape(_REMOTE_DISABLED_ZH),
                                            en=html.escape(_REMOTE_DISABLED_EN), detail=html.escape(message))
        return web.Response(status=status, text=page, content_type="text/html", headers=_HTML_HEADERS)
    if form or _wants_html(request):
        wrong = decision is Decision.BAD_TOKEN
        page = _LOGIN_PAGE.format(
            title=("错误 / Error: " if wrong else "") + "edge-agent · 登录 / sign in",
            kind="error" if wrong else "hint", role=' role="alert"' if wrong else "",
            invalid=' aria-invalid="true"' if wrong else "",
            message_zh=html.escape(_LOGIN_ZH[decision]), message=html.escape(message), login=LOGIN_PATH,
            maxlen=MAX_TOKEN_CHARS, next=html.escape(target or _without_token(request)),
        )
        return web.Response(status=status, text=page, content_type="text/html", headers=_HTML_HEADERS)
    return web.json_response({"error": decision.value, "detail": message}, status=status)


def _client_of(clients: Clients, presented: str | None) -> str | None:
    if presented is None or len(presented) > MAX_TOKEN_CHARS:
        return None
    try:
        return clients.current().name_of(presented)
    except ConfigError:  # never read: no client gets in; the log says why (WatchedFile)
        return None


def _safe_next(value: str) -> str:
    # Only same-site paths: never let the form redirect to another host ("//evil", "http://...", and
    # "/\t/evil": browsers drop the tab and read "//evil").
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and value.isprintable() \
            and not any(c.isspace() for c in value):
        return value
    return "/"


def login_routes() -> web.RouteTableDef:
    """The sign-in form's route, for its ``Expect: 100-continue``: aiohttp answers that before any
    middleware runs (request_body.py), so the form, answered by the access middleware (:func:`_login`),
    needs a route that defers it; else a client was told to send its body, up to 1 MiB, only to get 413 or
    403. The handler is never reached: the middleware answers every method on this path."""
    routes = web.RouteTableDef()

    async def answered_by_the_middleware(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    routes.route("*", LOGIN_PATH, expect_handler=defer_continue)(answered_by_the_middleware)
    return routes


def _form_too_large() -> web.Response:
    refused = web.json_response({"error": "bad_form", "detail": (
        f"the login form is too large (over {MAX_LOGIN_BYTES} bytes)")}, status=413)
    refused.force_close()  # what is left of it on the connection is not a next request
    return refused


async def _login(request: web.Request, token: str | None) -> web.StreamResponse:
    if request.method != "POST":  # the form; after it, the page named by ?next= (the teacher view by default)
        target = _safe_next(request.query.get("next", "/"))
        return _refusal(request, Decision.NEED_TOKEN if token else Decision.REMOTE_DISABLED, target=target)
    if request.content_length is not None and request.content_length > MAX_LOGIN_BYTES:
        return _form_too_large()  # before "100 Continue" (login_routes): the client sends no body
    await send_continue(request)
    try:
        # Read up to 1 MiB and held through the delay, 1,200 such posts took the daemon to 1.1 GiB: at most
        # MAX_LOGIN_BYTES, whatever the framing (a chunked form, with no Content-Length, was refused whole)
        form = await read_within(request, request.clone(client_max_size=MAX_LOGIN_BYTES + 1).post())
    except web.HTTPRequestEntityTooLarge:
        return _form_too_large()
    except (ValueError, LookupError):  # LookupError: an unknown charset in Content-Type
        return web.json_response({"error": "bad_form", "detail": "the login form could not be read"},
                                 status=400)
    presented = form.get("token")
    presented_text = presented if isinstance(presented, str) else None
    next_raw = form.get("next")
    target = _safe_next(next_raw if isinstance(next_raw, str) else "/")
    decision = decide(request.remote, presented_text or None, token, request.headers.get("Host"))
    # Loopback is let in whatever it typed; only the right token earns the cookie, which also works from
    # the LAN (else anyone at the board's screen, or any process on it, could mint remote access).
    earned = token if token is not None and tokens_match(presented_text, token) else None
    del form, presented, presented_text
    if decision is not Decision.ALLOW:
        _failed.note(request.remote, decision)
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        return _refusal(request, decision, form=True, target=target)
    response = web.HTTPSeeOther(target)
    if earned is not None:
        _set_session(request, response, earned)
    raise response


def _logout(request: web.Request, token: str | None, sign_outs: SignOuts) -> web.StreamResponse:
    """End this browser's sign-in (a form post: a link followed is no sign-out) and show the sign-in
    form: its cookie is deleted, and the board refuses the sign-in from then on, so the streams of the
    browser's other tabs end and a copy of the cookie is refused (until a restart); a new web token ends
    them all."""
    if request.method != "POST":
        return web.json_response({"error": "method", "detail": f"sign out with POST {LOGOUT_PATH}"},
                                 status=405, headers={"Allow": "POST"})
    if not from_this_site(request.headers):  # another site's form signed the teacher out (a review)
        return refuse_another_site("web")
    cookie = request.cookies.get(COOKIE_NAME)
    if token is not None and cookie is not None and len(cookie) <= MAX_TOKEN_CHARS:
        sign_in = session_signed(cookie, token)
        if sign_in is not None:
            sign_outs.end(sign_in, time.time())
    response = web.HTTPSeeOther(f"{LOGIN_PATH}?next=/")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


def access_middleware(
    token: str | None, public_paths: Collection[str] = PUBLIC_PATHS, clients: Clients | None = None
) -> Middleware:
    """The aiohttp middleware enforcing :func:`decide` on every path except ``public_paths``; a
    clicker's token from ``clients`` (web/clients.py) may only post answers."""
    if token is not None and not token.strip():
        raise ValueError("the web token is empty; write a token into web.token_file or unset it")
    sign_outs = SignOuts()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public_paths:
            return await handler(request)
        if from_another_site(request.headers, request.method):
            return refuse_another_site("web")
        if request.path == LOGIN_PATH:
            return await _login(request, token)
        if request.path == LOGOUT_PATH:
            return _logout(request, token, sign_outs)
        answers = request.method == "POST" and request.path == ANSWERS_PATH
        # A teacher's sign-in opens the view and the camera's pause, not the answers: a classroom PC left
        # signed in let its next user post answers for any student for the rest of the 12 h (a review)
        presented = _presented(request, token, sign_outs, cookie_counts=not answers)
        # The header itself: request.host falls back to socket.getfqdn(), a DNS lookup on the event loop
        decision = decide(request.remote, presented, token, request.headers.get("Host"))
        if decision is not Decision.ALLOW and clients is not None:
            client = _client_of(clients, _bearer(request))
            if client is not None:
                if request.method == "POST" and request.path == ANSWERS_PATH:
                    metrics.WEB_CLIENT_REQUESTS.labels(client=client).inc()
                    return await handler(request)
                return web.json_response({"error": "client_scope", "detail": (
                    f"this token belongs to the client {client!r}, which may only post answers "
                    f"(POST {ANSWERS_PATH}); the teacher view needs the board's web token")}, status=403)
        if decision is not Decision.ALLOW:
            (_failed_answers if answers else _failed).note(request.remote, decision)
            if answers and clients is not None and decision in (Decision.BAD_TOKEN, Decision.NEED_TOKEN):
                detail = _NOT_A_CLIENT if decision is Decision.BAD_TOKEN else _NO_CLIENT_TOKEN
                return web.json_response({"error": decision.value, "detail": detail}, status=401)
            return _refusal(request, decision)
        if token is not None and "token" in request.query and request.method == "GET":
            # Move the token from the address bar (history, screenshots) into an HttpOnly cookie.
            response = web.HTTPSeeOther(_without_token(request))
            if tokens_match(request.query.get("token"), token):
                _set_session(request, response, token)
            raise response
        if request.path in (EVENTS_PATH, "/"):  # a stream ends with its sign-in; the page offers a sign-out
            request[SESSION_KEY] = _session(request, token, sign_outs)
        return await handler(request)

    return middleware
