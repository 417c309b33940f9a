"""Calling the daemon's web API on this board, for commands that must go through the running daemon.

The address comes from the config as the daemon binds it (web.host, web.port, https with
web.tls_cert_file); loopback needs no token, and the board's web token is sent when it can be read (a
web.host bound to a LAN address is reached there, where the token is needed: run the command as root).
The board's own certificate is not checked: the request never leaves the board.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from edge_agent.config import WebSettings, read_token_file
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.web.server import local_host

TIMEOUT_S = 60.0  # the daemon answers after its commit, which a slow SD card may take seconds for


class LocalAPIError(EdgeAgentError):
    """The daemon could not be reached, or refused the request; the message says which and why."""


def local_url(web: WebSettings, path: str) -> str:
    return f"{'https' if web.tls_cert_file else 'http'}://{local_host(web.host)}:{web.port}{path}"


def post_local(web: WebSettings, path: str, body: Any) -> dict[str, Any]:
    """POST ``body`` as JSON to the daemon's ``path``; its JSON reply, or LocalAPIError."""
    if not web.enabled:
        raise LocalAPIError("the daemon's web server is off (web.enabled = false in the config): this "
                            "command reaches the daemon through it")
    url = local_url(web, path)
    headers = {"Content-Type": "application/json"}
    try:
        token = read_token_file(web.token_file)
    except ConfigError:  # not readable (not root): loopback needs none
        token = None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    context = None
    if web.tls_cert_file:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise LocalAPIError(f"the daemon answered {exc.code}: {_said(exc.read())}") from exc
    except (OSError, ValueError) as exc:
        raise LocalAPIError(f"cannot reach the daemon at {url} ({exc}): is edge-agent running? "
                            "(systemctl status edge-agent)") from exc


def _said(raw: bytes) -> str:
    try:
        reply = json.loads(raw)
        return str(reply.get("error") if reply.get("detail") is None else reply["detail"])
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace")[:300]
