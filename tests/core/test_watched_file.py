"""The class roster and the clicker tokens read again as IT changes them (WatchedFile), with real files
replaced, rewritten and deleted as the tools IT uses do."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edge_agent.kt.roster import format_roster, parse_roster, watch_roster
from edge_agent.watched_file import WatchedFile
from edge_agent.web.clients import watch_clients
from tests.kt.test_roster import PSEUDO, Clock

SECOND_NS = 1_796_000_000 * 10**9  # a whole-second mtime, as tar, scp -p and rsync -a leave


def test_a_file_replaced_with_the_same_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    # A review: a leaked clicker token rotated by a re-deploy with whole-second mtimes and the same size (the
    # CLI's tokens are all 43 characters) was never read again: the revoked token kept working.
    path = tmp_path / "web-clients"
    old, new, newer = (secrets.token_urlsafe(32) for _ in range(3))

    def deploy(token: str) -> None:  # written aside, mtime set, renamed into place (install -p, rsync -a)
        aside = tmp_path / ".web-clients.tmp"
        aside.write_text(f"acme-3a {token}\n")
        os.utime(aside, ns=(SECOND_NS, SECOND_NS))
        os.replace(aside, path)

    deploy(old)
    clock = Clock()
    clients = watch_clients(path, recheck_s=2.0, clock=clock)
    assert clients.current().name_of(old) == "acme-3a"
    deploy(new)
    for _ in range(2):
        clock.now += 2.0
        clients.current()
    assert (clients.current().name_of(old), clients.current().name_of(new)) == (None, "acme-3a")
    # rewritten in place (scp -p over the file): same inode, size and mtime; only its ctime tells
    path.write_text(f"acme-3a {newer}\n")
    os.utime(path, ns=(SECOND_NS, SECOND_NS))
    for _ in range(2):
        clock.now += 2.0
        clients.current()
    assert (clients.current().name_of(new), clients.current().name_of(newer)) == (None, "acme-3a")


def test_a_file_caught_mid_write_is_taken_only_once_it_has_held_still_for_a_check(tmp_path: Path) -> None:
    # A review: a roster uploaded in place (scp, sftp, `cat >`) was read half-way; the part written so far
    # parsed, and students later in the file got 400 (final for clients: answers lost) until the next check.
    students = sorted(PSEUDO(f"s{i}") for i in range(1200))
    path = tmp_path / "roster.txt"
    path.write_text(format_roster(students[:1199]))
    clock = Clock()
    roster = watch_roster(path, recheck_s=2.0, clock=clock)
    assert len(roster.current()) == 1199  # at start: read at once
    text = format_roster(students).encode()
    cut = text.rfind(b"\n", 0, 16384) + 1  # the part written so far ends on a line
    with open(path, "wb") as upload:
        upload.write(text[:cut])
        upload.flush()
        clock.now += 2.0
        assert len(roster.current()) == 1199 and roster.health().ok
        upload.write(text[cut:])
    clock.now += 2.0  # changed again since the last check: still not taken
    assert len(roster.current()) == 1199
    clock.now += 2.0  # unchanged for a check: taken
    assert len(roster.current()) == 1200


def test_a_clients_file_deleted_back_broken_and_deleted_again_is_healthy(tmp_path: Path) -> None:
    # A review: the "cannot read" problem of the file that came back broken was never cleared once it was
    # deleted again (/readyz 503 and edge_component_up 0 for good).
    path = tmp_path / "web-clients"
    path.write_text(f"acme-3a {secrets.token_urlsafe(32)}\n")
    clock = Clock()
    clients = watch_clients(path, recheck_s=2.0, clock=clock)
    path.unlink()
    for _ in range(5):
        clock.now += 2.0
        clients.health()
    assert clients.missing and clients.health().ok
    path.write_text("acme-3a tooshort\n")
    for _ in range(2):
        clock.now += 2.0
        health = clients.health()
    assert not health.ok and "token shorter than 16" in health.detail
    path.unlink()
    for _ in range(5):
        clock.now += 2.0
        health = clients.health()
    assert health.ok and "is missing" in health.detail, health


def test_a_broken_file_is_not_parsed_again_until_it_changes(tmp_path: Path) -> None:
    # A review: a large roster with a bad line was read and parsed on the event loop at every check (9.9 MB:
    # about 190 ms every 2 s).
    path = tmp_path / "roster.txt"
    path.write_text(format_roster([PSEUDO("a")]) + "stu-7\n")
    parsed: list[str] = []

    def parse(text: str, where: str) -> frozenset[str]:
        parsed.append(text)
        return parse_roster(text, where)

    clock = Clock()
    roster = WatchedFile(path, parse, "kt.roster_file", lambda s: f"{len(s)} students", recheck_s=2.0,
                         clock=clock)
    for _ in range(5):
        clock.now += 2.0
        assert not roster.health().ok
    assert len(parsed) == 1
    path.write_text(format_roster([PSEUDO("a"), PSEUDO("b")]))
    for _ in range(2):
        clock.now += 2.0
        roster.health()
    assert roster.health().ok and roster.current() == {PSEUDO("a"), PSEUDO("b")} and len(parsed) == 2
