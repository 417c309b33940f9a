"""`edge-agent kt roster` given a table without --column: refused, the roster left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.kt.roster import parse_roster, read_student_ids
from tests.kt.test_roster import PSEUDO, _board_config


def test_a_table_given_without_column_is_refused_and_the_roster_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: each row of "student_no,name" went on the roster as one student ("2026001,王小明"), rc 0,
    # and every student of the class was then refused as not on the roster
    config = _board_config(tmp_path)
    roster = tmp_path / "roster.txt"
    class_list = tmp_path / "class-3a.txt"
    class_list.write_text("2026001\n2026002\n")
    assert cli_main(["kt", "roster", "set", str(class_list), "--config", str(config)]) == 0
    before = roster.read_text()
    table = tmp_path / "class-3a.csv"
    table.write_text("student_no,name\n2026001,王小明\n2026002,李雷\n", encoding="utf-8")
    assert cli_main(["kt", "roster", "set", str(table), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "line 1: 'student_no,name' holds a comma" in out and "give --column for a table" in out, out
    assert roster.read_text() == before
    column = ["--column", "student_no", "--config", str(config)]
    assert cli_main(["kt", "roster", "set", str(table), *column]) == 0
    assert parse_roster(roster.read_text(), "r") == {PSEUDO("2026001"), PSEUDO("2026002")}


def test_a_list_without_column_still_takes_a_quoted_id_with_a_comma(tmp_path: Path) -> None:
    listed = tmp_path / "ids.txt"
    listed.write_text('"3A,07"\n20260001  # Wang, Xiaoming\n')  # a comma in a comment is no table
    assert read_student_ids(listed) == ["3A,07", "20260001"]
    listed.write_text("20260001\n20260002，王小明\n")  # a full-width comma is read as ","
    with pytest.raises(ValueError, match="line 2: '20260002，王小明' holds a comma"):
        read_student_ids(listed)
