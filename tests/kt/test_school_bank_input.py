"""A school's items.csv and skills.csv as Excel and WPS write them: cells past the header, ids no clicker
types, and the Chinese encodings that are not UTF-8, each refused by file and line with what to do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.errors import InputRejected
from edge_agent.kt.package import item_id_problem
from edge_agent.kt.roster import read_student_ids
from edge_agent.kt.school_bank import read_school_bank

HEADER = "item_id,skill_id,title_zh,title_en\r\n"


def _items(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "items.csv"
    path.write_bytes((HEADER + rows).encode("utf-8-sig"))  # Excel's "CSV UTF-8": a BOM and CRLF
    return path


def test_a_comma_typed_inside_a_title_is_refused_naming_its_line_not_split_into_the_next_column(
    tmp_path: Path,
) -> None:
    # A review: "解方程, 移项" split into title_zh "解方程" and title_en "移项", the English title dropped,
    # and kt train exited 0
    path = _items(tmp_path, "Q2,1,合并同类项,like terms\r\nQ1,1,解方程, 移项,solving: moving terms\r\n")
    with pytest.raises(InputRejected, match=r"items\.csv line 3: more cells than the header has columns; "
                                            "a ',' inside a cell needs quotes"):
        read_school_bank(None, path)
    # quoted, as Excel writes it, the comma is the title's
    path = _items(tmp_path, 'Q1,1,"解方程, 移项",solving: moving terms,\r\n')  # a trailing ',' loses nothing
    assert [(i["title_zh"], i["title_en"]) for i in read_school_bank(None, path).items] == [
        ("解方程, 移项", "solving: moving terms")]


def test_a_student_table_with_a_comma_inside_a_name_is_refused_not_read_short(tmp_path: Path) -> None:
    path = tmp_path / "class.csv"
    path.write_bytes("student_no,name\r\n2026001,王,小明\r\n".encode("utf-8-sig"))
    with pytest.raises(InputRejected, match=r"class\.csv line 2: more cells than the header has columns"):
        read_student_ids(path, "student_no")


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        # a review: these four were four exercises; one recommended, and a clicker's "Q1" matched only one
        ("Q1,1,a,a\r\nＱ１,1,b,b\r\n", r"line 3: item id 'Ｑ１' .*full-width .*a clicker types 'Q1'"),
        ("Q1,1,a,a\r\nQ1\u200b,1,c,c\r\n", r"line 3: .*invisible character, U\+200B at position 3"),
        ("Q1,1,a,a\r\n\u200bQ1,1,d,d\r\n", r"line 3: .*invisible character, U\+200B at position 1"),
        ("Q2\u2060,1,e,e\r\n", r"line 2: .*invisible character, U\+2060"),  # word joiner
        ("Q\u00a02,1,e,e\r\n", r"line 2: .*invisible character, U\+00A0"),  # no-break space, from Word
    ],
    ids=["full-width", "zero-width-after", "zero-width-before", "word-joiner", "no-break-space"],
)
def test_an_item_id_no_clicker_types_is_refused_naming_its_line_and_why(
    tmp_path: Path, rows: str, said: str
) -> None:
    with pytest.raises(InputRejected, match=said):
        read_school_bank(None, _items(tmp_path, rows))


def test_an_item_id_with_a_space_inside_is_one_a_clicker_types() -> None:
    assert item_id_problem("Lesson 3 Q1") is None and item_id_problem("第3课-例1") is None
    assert "U+0020" in (item_id_problem("Q1 ") or "")  # at an end it is not seen


@pytest.mark.parametrize(
    ("data", "named"),
    [
        # 䶮 (CJK extension A) is in GB18030, which WPS writes, and not in GBK: "an unknown encoding"
        ((HEADER + "Q1,1,解方程䶮,solve\r\n").encode("gb18030"), "GB18030"),
        # Excel's code page 936 has '€' at 0x80, which Python's gbk lacks: "an unknown encoding" too
        ((HEADER + "Q1,1,解方程").encode("gbk") + b"\x80,solve\r\n", "GBK"),
    ],
    ids=["gb18030", "cp936-euro"],
)
def test_a_chinese_windows_file_that_is_not_utf8_is_named_with_an_iconv_line_that_converts_it(
    tmp_path: Path, data: bytes, named: str
) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes(data)
    with pytest.raises(InputRejected) as refused:
        read_school_bank(None, path)
    said = str(refused.value)
    assert f"is not UTF-8 text ({named}, perhaps" in said, said
    assert f"iconv -f {named} -t UTF-8 {path}" in said, said
    if shutil.which("iconv") is None:
        pytest.skip("no iconv here to run the named command")
    command = ["iconv", "-f", named, "-t", "UTF-8", str(path)]
    converted = subprocess.run(command, capture_output=True, check=True)
    (tmp_path / "utf8.csv").write_bytes(converted.stdout)
    assert read_school_bank(None, tmp_path / "utf8.csv").items[0]["title_zh"].startswith("解方程")
