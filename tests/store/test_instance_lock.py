"""One daemon per state directory, from its very first start."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.store.instance_lock import AlreadyRunningError, InstanceLock


def test_a_first_start_on_a_state_directory_not_made_yet_holds_the_lock(tmp_path: Path) -> None:
    # A review: the lock came before the database's open made the folder, was skipped, and the first
    # daemon on a fresh board ran unlocked for its whole life beside a second one
    path = tmp_path / "fresh-state" / "edge-agent.lock"
    first = InstanceLock(path)
    first.acquire()
    try:
        with pytest.raises(AlreadyRunningError, match=r"another edge-agent .* runs on"):
            InstanceLock(path).acquire()
    finally:
        first.release()
    second = InstanceLock(path)
    second.acquire()  # free once the first is gone
    second.release()
