"""Tokens for clicker base stations and tablet apps (``web.client_tokens_file``): each may only post
answers, and each has a name, so one can be revoked and its traffic told apart.

Without them every clicker app holds the board's web token, which also opens the teacher view and the
class data, and cannot be taken back from one vendor without changing it everywhere (security audit,
finding 6). The file is a secret (mode 0600): one ``name token`` per line, ``#`` comments allowed.
``edge-agent web clients add NAME`` makes a token and prints it once; ``remove NAME`` revokes it. The
daemon reads the file again within seconds of a change (edge_agent/watched_file.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.watched_file import WatchedFile

ANSWERS_PATH = "/api/v1/answers"  # the one thing a client token may do: POST here
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CLIENTS = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientTokens:
    by_digest: dict[str, str]  # sha256 of the token -> client name

    def name_of(self, presented: str | None) -> str | None:
        """The client a presented token belongs to, or None. Looked up by digest: the dict lookup's
        timing says nothing an attacker can use, as it would for the token itself."""
        if not presented:
            return None
        return self.by_digest.get(_digest(presented))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()  # header bytes not UTF-8


def parse_clients(text: str, where: str) -> ClientTokens:
    """ConfigError names the first bad line (a name or token that does not fit, or one used twice)."""
    entries = _entries(text, where)
    return ClientTokens({_digest(token): name for name, token in entries})


def _entries(text: str, where: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        problem = None
        if len(fields) != 2:
            problem = "is not 'name token'"
        elif not _NAME.match(fields[0]):
            problem = "has a name other than letters, digits, '_', '.', '-' (up to 64)"
        elif not 16 <= len(fields[1]) <= 512:
            problem = "has a token shorter than 16 or longer than 512 characters"
        elif fields[0] in names or fields[1] in tokens:
            problem = "repeats a name or a token of an earlier line"
        if problem is not None:
            raise ConfigError([("web.client_tokens_file", f"{where} line {number} {problem}")])
        names.add(fields[0])
        tokens.add(fields[1])
        entries.append((fields[0], fields[1]))
    if len(entries) > MAX_CLIENTS:
        too_many = f"{where} lists {len(entries)} clients, over {MAX_CLIENTS}"
        raise ConfigError([("web.client_tokens_file", too_many)])
    return entries


def still_listed(old: ClientTokens, text: str, where: str) -> ClientTokens:
    """The clients of ``old`` whose ``name token`` is still the start of a line of ``text``, a file that
    could not be parsed: a line deleted or commented out revokes its token even while another line is
    wrong, and no line is taken from such a file. The log names the clients so revoked."""
    listed = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            listed.add((_digest(fields[1]), fields[0]))
    kept = {digest: name for digest, name in old.by_digest.items() if (digest, name) in listed}
    if len(kept) < len(old.by_digest):
        gone = sorted(name for digest, name in old.by_digest.items() if digest not in kept)
        log.warning("web.client_tokens_file: %s no longer in %s (which has a bad line): refused from now on",
                    ", ".join(gone), where)
    return ClientTokens(kept)


Clients = WatchedFile[ClientTokens]


def _describe(clients: ClientTokens) -> str:
    if not clients.by_digest:
        return "no clicker tokens: every clicker is refused"
    return f"{len(clients.by_digest)} clicker tokens"


def watch_clients(path: Path, recheck_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> Clients:
    # A deleted file revokes every token and a file with a bad line keeps only the tokens still written in
    # it (fail closed); the roster, by contrast, keeps the last one read.
    return WatchedFile(path, parse_clients, "web.client_tokens_file", _describe, recheck_s=recheck_s,
                       clock=clock, missing=ClientTokens({}),
                       narrow=lambda old, text: still_listed(old, text, str(path)))


# -- `edge-agent web clients ...` ----------------------------------------------------------------------


def add_web_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    web = subparsers.add_parser("web", help="the teacher view and answer API's access")
    sub = web.add_subparsers(dest="web_command", required=True)
    clients = sub.add_parser(
        "clients", help="tokens for clicker base stations and tablet apps: they may only post answers"
    )
    # One parser per action: with `action` and an optional `name` on one parser, argparse matched the name
    # as absent at `add` and refused `web clients add --config F NAME` ("unrecognized arguments: NAME").
    actions = clients.add_subparsers(dest="action", required=True)
    for action, help_text in (("add", "issue a token for a new client (printed once)"),
                              ("remove", "revoke a client's token"), ("list", "name the clients")):
        parser = actions.add_parser(action, help=help_text)
        if action != "list":
            parser.add_argument("name", help="the client, e.g. the vendor and room: acme-clicker-3a")
        parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
        parser.set_defaults(func=cmd_web_clients, name=None)
    clients.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    return web


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held while the tokens file at ``path`` is read, changed and replaced (the roster's lock)."""
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def cmd_web_clients(args: argparse.Namespace) -> int:
    from edge_agent.config import check_secret_file, find_config_path, load_config_for_command
    from edge_agent.provisioning.files import write_private_for_daemon

    try:
        config = load_config_for_command(find_config_path(getattr(args, "config", None)))
        path = config.web.client_tokens_file
        if path is None:
            print("error: web.client_tokens_file is not set in the config; set it (e.g. "
                  '"/etc/edge-agent/secrets/web-clients") and run this again')
            return 2
        if args.name is not None and not _NAME.match(args.name):
            print("error: a client name is letters, digits, '_', '.', '-' (up to 64)")
            return 2
        # One change at a time, as `kt roster` does: six `add`s run together each read the old file and
        # the last rename won, keeping fewer clients than the tokens they printed (a review)
        with _locked(path) if args.action != "list" else contextlib.nullcontext():
            if not path.exists() and args.action != "add":  # deleted: the daemon takes that as no tokens
                print(f"{path} does not exist: a running edge-agent refuses every clicker token; "
                      "`edge-agent web clients add NAME` makes the file with a new token")
                return 0 if args.action == "list" else 1
            if path.exists() and (problem := check_secret_file("web.client_tokens_file", path)):
                raise ConfigError([("web.client_tokens_file", problem)])
            entries = _entries(path.read_text(encoding="utf-8-sig"), str(path)) if path.exists() else []
            names = [name for name, _ in entries]
            if args.action == "list":
                print("\n".join(names) if names else f"{path}: no clients")
                return 0
            if args.action == "add":
                if args.name in names:
                    print(f"error: {args.name} already has a token; remove it first to issue a new one")
                    return 1
                token = secrets.token_urlsafe(32)
                entries.append((args.name, token))
            else:
                if args.name not in names:
                    print(f"error: no client named {args.name} in {path}")
                    return 1
                entries = [(n, t) for n, t in entries if n != args.name]
            header = "# edge-agent clicker tokens: name token (edge-agent web clients add NAME)\n"
            text = header + "".join(f"{n} {t}\n" for n, t in entries)
            write_private_for_daemon(path, text.encode(), config.device.pseudonym_secret_file)
    except (EdgeAgentError, OSError, ValueError) as exc:  # ValueError: a file that is not UTF-8
        print(f"error: {exc}")
        return 1
    if args.action == "add":
        print(f"{args.name}: {token}")
        print("Give this token to that client now (Authorization: Bearer <token>); it is not shown again. "
              "The board takes it within seconds.")
    else:
        print(f"{args.name}: revoked; the board refuses its token within seconds")
    return 0
