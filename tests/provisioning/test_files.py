"""Files written for the daemon by root's commands (`edge-agent kt roster`, `web clients`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.provisioning.files import write_private_for_daemon

DAEMON_UID = DAEMON_GID = 65534  # nobody: any user but root stands for edge-agent


@pytest.mark.skipif(os.geteuid() != 0, reason="the file is given to the daemon's user only when run as root")
def test_a_file_written_for_the_daemon_is_its_own_before_it_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: root's 0600 file was renamed into place and chowned only after; a daemon check between the
    # two could not read it (ERROR in the log, /readyz 503).
    owner_of = tmp_path / "pseudonym.key"
    owner_of.write_bytes(b"x")
    os.chown(owner_of, DAEMON_UID, DAEMON_GID)
    roster = tmp_path / "roster.txt"
    renamed: list[tuple[int, int, int]] = []
    replace = os.replace

    def seen_at_rename(src: str, dst: str) -> None:  # os.replace all the same, noting what lands
        info = os.stat(src)
        renamed.append((info.st_uid, info.st_gid, info.st_mode & 0o7777))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", seen_at_rename)
    assert write_private_for_daemon(roster, b"first\n", owner_of)
    assert write_private_for_daemon(roster, b"second\n", owner_of)
    assert renamed == [(DAEMON_UID, DAEMON_GID, 0o600)] * 2
    assert roster.read_bytes() == b"second\n" and roster.stat().st_uid == DAEMON_UID
    os.chown(roster, 0, 0)  # put back by hand as root's: the same content is given back to the daemon
    assert write_private_for_daemon(roster, b"second\n", owner_of) and roster.stat().st_uid == DAEMON_UID
