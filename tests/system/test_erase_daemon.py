"""`edge-agent kt erase` against a real `edge-agent run`: the row leaves the daemon's own database file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.kt.package import KTPackage
from edge_agent.kt.pseudonym import Pseudonymizer
from tests.system.harness import DaemonProcess, NotifySocket, answer, local_config, post_answers, write_config


def _stored(state: Path) -> set[str]:
    with sqlite3.connect(state / "edge-agent.db") as conn:  # a reader beside the daemon's writer (WAL)
        return {row[0] for row in conn.execute("SELECT student FROM kt_student_state")}


def test_the_erase_command_removes_the_student_from_the_running_daemons_database(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = local_config(tmp_path, faces=None)
    config = write_config(tmp_path / "config.toml", cfg)
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    base = f"http://127.0.0.1:{cfg['web']['port']}"
    item = package.items[0]
    post_answers(base, [answer(f"stu-{n}", item.id, item.skill_id, True, f"e{n}") for n in range(3)])
    pseudo = Pseudonymizer.from_file(Path(cfg["device"]["pseudonym_secret_file"]))
    state = Path(cfg["paths"]["state_dir"])
    assert _stored(state) == {pseudo(f"stu-{n}") for n in range(3)}

    assert cli_main(["kt", "erase", " stu-1 ", "--config", str(config)]) == 0

    said = capsys.readouterr().out
    assert "1 students had learning data on this board and it is erased; 0 had none" in said
    assert _stored(state) == {pseudo("stu-0"), pseudo("stu-2")}  # committed before the command returned
    again = post_answers(base, [answer("stu-1", item.id, item.skill_id, True, "after")])[0]
    assert again["status"] == "applied"
    daemon.stop()
    assert "erased the learning data of 1 students" in daemon.output() and "stu-1" not in daemon.output()
