"""Class lists as schools really make them: ids copied from a web page or Excel with invisible characters,
Excel's semicolon-separated CSV, a roster saved by a Chinese Windows editor (GBK). Each went wrong without
a word: students refused by the answer API, erasures that erased nothing, a codec error naming no file."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.errors import InputRejected
from edge_agent.kt.answers import student_id_key
from edge_agent.kt.erasure import parse_student_ids
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.roster import format_roster, parse_roster, watch_roster
from tests.kt.test_answers_api import _good
from tests.kt.test_roster import PSEUDO, _board_config, roster_api  # noqa: F401 (a fixture)
from tests.web.test_clients import SECRET
from tests.web.test_erase_api import _stored, board  # noqa: F401 (a fixture)


def test_an_id_copied_with_invisible_characters_around_it_is_listed_as_the_clicker_sends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: "2026001" + U+200B from a web page went on the roster under its own pseudonym, and the
    # student's clicker, sending "2026001", got 400 "not on the board's class roster" all term
    config = _board_config(tmp_path)
    export = tmp_path / "class.csv"
    export.write_bytes("student_no,name\r\n2026001\u200b,王小明\r\n\ufeff2026002\u200e ,李华\r\n"
                       "２０２６００３,张伟\r\n".encode("utf-8-sig"))
    column = ["--column", "student_no", "--config", str(config)]
    assert cli_main(["kt", "roster", "set", str(export), *column]) == 0
    listed = parse_roster((tmp_path / "roster.txt").read_text(), "r")
    assert listed == {PSEUDO("2026001"), PSEUDO("2026002"), PSEUDO("2026003")}, capsys.readouterr()
    # an id typed without such characters keeps the key, so the pseudonym, boards have stored it under
    shalom = "\u05e9\u05dc\u05d5\u05dd"
    for typed in ("2026001", " stu-4 ", "２０２３０１０１", "2023 01", "三年级2班#15", "e\u0301", shalom):
        assert student_id_key(typed) == unicodedata.normalize("NFKC", typed).strip()


def test_an_erase_from_a_list_copied_with_an_invisible_character_erases_the_student(
    board: dict[str, Any], capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    # A review: `kt erase --file leavers.csv --column student_no` said "0 students had learning data ...
    # 1 had none" for a student who had answered: a parent's erasure that erased nothing
    leavers = board["tmp"] / "leavers.csv"
    leavers.write_bytes("student_no,name\r\nstu-1\u200b,王小明\r\n".encode("utf-8-sig"))
    capsys.readouterr()
    args = ["kt", "erase", "--file", str(leavers), "--column", "student_no", "--config", str(board["config"])]
    assert cli_main(args) == 0
    said = capsys.readouterr().out
    assert "1 students had learning data on this board and it is erased; 0 had none" in said, said
    assert _stored(board) == {Pseudonymizer(SECRET)(f"stu-{n}") for n in (0, 2, 3)}


def test_an_id_with_an_invisible_character_inside_is_refused_naming_the_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], roster_api: tuple[Any, Any, Path]  # noqa: F811
) -> None:
    # Taken, "2026" + U+200B + "001" is a student no clicker ever sends; refused, IT sees which id and why
    config = _board_config(tmp_path)
    class_list = tmp_path / "class.txt"
    class_list.write_text("2026002\n2026\u200b001\n")
    assert cli_main(["kt", "roster", "set", str(class_list), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    named = "line 2: student id '2026\\u200b001' holds an invisible character (U+200B ZERO WIDTH SPACE)"
    assert f"{class_list} {named}" in out, out
    assert not (tmp_path / "roster.txt").exists()
    assert cli_main(["kt", "erase", "2026\u200b001", "--config", str(config)]) == 1
    assert "(U+200B ZERO WIDTH SPACE)" in capsys.readouterr().out
    with pytest.raises(InputRejected, match=r"student_ids\[1\]: student id '20\\u2060\d+' holds an"):
        parse_student_ids({"student_ids": ["2026002", "20\u20602601"]})
    # a direction mark does work inside only beside right-to-left letters
    with pytest.raises(InputRejected, match="U\\+200E LEFT-TO-RIGHT MARK"):
        student_id_key("2026\u200e001")
    shalom = "\u05e9\u05dc\u05d5\u05dd"
    assert student_id_key(f"\u202b{shalom}\u200f 3\u202c") == f"{shalom}\u200f 3"
    server, svc, _ = roster_api  # the answer API: around, the student on the roster; inside, refused
    assert server.request("POST", "/api/v1/answers", _good(svc.package, "stu-1\u200b", "copied-1"))[0] == 200
    status, body = server.request("POST", "/api/v1/answers", _good(svc.package, "stu\u200b-1", "copied-2"))
    assert status == 400 and body["field"] == "student_id" and "U+200B" in body["error"], body


def test_a_semicolon_separated_table_given_without_column_is_refused_and_nothing_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: Excel's CSV where the decimal point is a comma separates by ";"; read as a list, the header
    # and each "2026001;王小明" went on the roster as students (rc 0, every real student then refused), and
    # `kt erase --file` said every leaver "had none"
    config = _board_config(tmp_path)
    roster = tmp_path / "roster.txt"
    roster.write_text(format_roster([PSEUDO("2026001")]))
    table = tmp_path / "class.txt"
    table.write_bytes("student_no;name\r\n2026001;王小明\r\n2026002;李华\r\n".encode("utf-8-sig"))
    for command in (["kt", "roster", "set", str(table)], ["kt", "erase", "--file", str(table)]):
        assert cli_main([*command, "--config", str(config)]) == 1, command
        out = capsys.readouterr().out
        assert "line 1: 'student_no;name' holds a semicolon" in out and "give --column" in out, out
    assert parse_roster(roster.read_text(), "r") == {PSEUDO("2026001")}
    table.write_text('"3A;07"\n2026002；\n')  # quoted, an id; a full-width one is read as ";"
    assert cli_main(["kt", "roster", "set", str(table), "--config", str(config)]) == 1
    assert "line 2: '2026002；' holds a semicolon" in capsys.readouterr().out


def test_a_roster_saved_in_gbk_names_the_file_and_how_to_convert_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a "# 三年级二班" comment saved by Notepad on a Chinese Windows; `kt roster add` and the
    # daemon's health said only "'utf-8' codec can't decode byte 0xc8 in position 2"
    from edge_agent.doctor import check_roster

    config = _board_config(tmp_path)
    roster = tmp_path / "roster.txt"
    roster.write_bytes(("# 三年级二班\r\n" + PSEUDO("2026001") + "\r\n").encode("gbk"))
    more = tmp_path / "more.txt"
    more.write_text("2026009\n")
    advice = f"{roster} is not UTF-8 text (GBK, perhaps"
    assert cli_main(["kt", "roster", "add", str(more), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert advice in out and f"iconv -f GBK -t UTF-8 {roster}" in out, out
    health = watch_roster(roster).health()  # as the daemon reads it again
    assert not health.ok and advice in health.detail and "iconv -f GBK" in health.detail, health
    assert advice in check_roster(roster).detail
    assert cli_main(["kt", "roster", "set", str(more), "--config", str(config)]) == 0  # set still replaces it
    assert parse_roster(roster.read_text(), "r") == {PSEUDO("2026009")}
