"""Calling the daemon's web API on this board, for commands that must go through the running daemon.

The address comes from the config as the daemon binds it (web.host, web.port, https with
web.tls_cert_file); loopback needs no token, so none is sent there; the board's web token is sent when
it can be read to a web.host bound to a LAN address, where it is needed (run the command as root).
The request never leaves the board: no proxy of the environment is used, and the board's own certificate
is not checked.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edge_agent.config import MetricsSettings, WebSettings, read_token_file
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.web.access import is_loopback
from edge_agent.web.server import local_host

TIMEOUT_S = 60.0  # the daemon answers after its commit, which a slow SD card may take seconds for


class LocalAPIError(EdgeAgentError):
    """The daemon could not be reached, or refused the request; the message says which and why."""


def local_url(listener: WebSettings | MetricsSettings, path: str) -> str:
    """The daemon's ``path`` on this board, at the web (or metrics) listener as its config binds it."""
    scheme = "https" if listener.tls_cert_file else "http"
    return f"{scheme}://{local_host(listener.host)}:{listener.port}{path}"


def readable_token(path: Path | None) -> str | None:
    """The web token, or None when there is none or it cannot be read (not run as root): loopback needs
    none."""
    try:
        return read_token_file(path)
    except ConfigError:
        return None


def web_token_for(web: WebSettings) -> str | None:
    """The web token to send to the daemon's web port, None where it is not needed: loopback needs none
    (web/access.py), and a token sent where none is needed is one more copy of it in flight."""
    host = local_host(web.host).strip("[]")
    return None if host == "localhost" or is_loopback(host) else readable_token(web.token_file)


def board_opener(tls: bool) -> urllib.request.OpenerDirector:
    """Opens the daemon's URLs on this board directly. urlopen takes http_proxy and https_proxy from the
    environment (a school's proxy in /etc/environment, which sudo's pam_env reads) and skips no loopback
    address unless no_proxy names it: a review's proxy received the status and metrics requests, bearer
    tokens and all, and answered 502."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    context = board_tls(tls)
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def board_tls(tls: bool) -> ssl.SSLContext | None:
    """For HTTPS to the daemon on this board: its own certificate is not checked (the request never leaves
    the board)."""
    if not tls:
        return None
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def post_local(web: WebSettings, path: str, body: Any) -> dict[str, Any]:
    """POST ``body`` as JSON to the daemon's ``path``; its JSON reply, or LocalAPIError."""
    if not web.enabled:
        raise LocalAPIError("the daemon's web server is off (web.enabled = false in the config): this "
                            "command reaches the daemon through it")
    url = local_url(web, path)
    headers = {"Content-Type": "application/json"}
    token = web_token_for(web)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with board_opener(web.tls_cert_file is not None).open(request, timeout=TIMEOUT_S) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise LocalAPIError(f"the daemon answered {exc.code}: {_said(exc.read())}") from exc
    except (OSError, ValueError) as exc:
        raise LocalAPIError(f"cannot reach the daemon at {url} ({exc}): is edge-agent running? "
                            "(systemctl status edge-agent)") from exc
    except (http.client.HTTPException, TypeError) as exc:  # no HTTP, a reply cut short, JSON not an object
        raise LocalAPIError(f"what answered at {url} is not edge-agent's answer ({exc!r}): check web.port "
                            "in the config and that no other program listens there") from exc


def _said(raw: bytes) -> str:
    try:
        reply = json.loads(raw)
        return str(reply.get("error") if reply.get("detail") is None else reply["detail"])
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace")[:300]
