"""The training-data readers on real files: skill ids in one spelling, bad ids named by line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.errors import InputRejected
from edge_agent.kt.data import read_sequences


def _file(tmp_path: Path, text: str, name: str = "answers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_numeric_skill_id_in_any_spelling_is_one_skill(tmp_path: Path) -> None:
    # pandas writes 7.0 for a column that had a gap; "07" and " 7" come from other tools. Each was a skill
    # of its own: 4 skills for 2 in this file.
    dkt = _file(tmp_path, "4\n7,07,7.0, 7\n1,0,1,1\n2\n12,12.00\n0,1\n")
    seqs = read_sequences(dkt, "dkt-csv")
    assert seqs.skills == [["7", "7", "7", "7"], ["12", "12"]] and seqs.vocabulary() == ["7", "12"]
    pykt = _file(tmp_path, 'uid,concepts,responses\n1,"7.0,07,12_3","1,0,1"\n2,"7,12.0","0,0"\n', "p.csv")
    assert read_sequences(pykt, "pykt-csv").vocabulary() == ["7", "12"]


def test_a_file_of_named_skills_keeps_the_names(tmp_path: Path) -> None:
    path = _file(tmp_path, "3\nfractions,algebra,fractions\n1,0,1\n")
    assert read_sequences(path, "dkt-csv").skills == [["fractions", "algebra", "fractions"]]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("2\n1,2\n1,0\n3\n1,,2\n1,0,1\n", 5, "skill id 2 of 3 is empty"),
        ("2\n1,2\n1,0\n3\n1,abc,2\n1,0,1\n", 5, "'abc' is a name, but the file's skill ids are numbers"),
        ("3\nfractions,algebra,7\n1,0,1\n", 2, "'7' is a number, but the file's skill ids are names"),
        ("2\n1,1.5\n1,0\n", 2, "'1.5' is not a whole number"),
    ],
)
def test_a_bad_skill_id_is_named_with_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(InputRejected, match=re.escape(f"{path} line {line}: skill id ")) as caught:
        read_sequences(path, "dkt-csv")
    assert words in str(caught.value)


def test_a_pykt_answer_without_its_concept_is_refused_not_dropped(tmp_path: Path) -> None:
    path = _file(tmp_path, 'uid,concepts,responses\n1,"3,4","1,0"\n2,"3,,4","1,0,1"\n')
    with pytest.raises(InputRejected, match=re.escape(f"{path} line 3: concept 2 of 3 is empty")):
        read_sequences(path, "pykt-csv")
