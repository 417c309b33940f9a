"""`edge-agent kt erase` names the damaged database copies beside the database, which it does not erase
(the real web server, service and SQLite file of test_erase_api's board)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.web.erase import KEPT
from tests.web.test_erase_api import _erase, board  # noqa: F401  (board: the fixture)


def test_the_erase_command_says_the_damaged_database_copies_beside_it_keep_states_and_to_delete_them(
    board: dict[str, Any], capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    # A review: copies of a damaged database moved aside keep every student's state as it was then, and
    # the erase's reply (all the command prints) said nothing of them: only the README did
    status, reply = _erase(board, {"student_ids": ["stu-0"]})
    assert status == 200 and reply["kept"] == KEPT  # none there: nothing more said
    copies = ["edge-agent.db.corrupt-20261201T101010", "edge-agent.db.corrupt-20261201T101010-wal"]
    for name in copies:
        (board["tmp"] / name).write_bytes(b"SQLite format 3\x00")
    assert cli_main(["kt", "erase", "stu-1", "--config", str(board["config"])]) == 0
    out = capsys.readouterr().out
    assert "1 students had learning data on this board and it is erased" in out, out
    assert f"Not erased: 2 files of a damaged database moved aside in {board['tmp']}" in out, out
    assert all(name in out for name in copies), out
    assert "keep students' learning states" in out and "delete them" in out, out
