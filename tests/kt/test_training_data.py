"""The training-data readers on real files: skill ids in one spelling, bad ids named by line."""

from __future__ import annotations

import random
import re
import tracemalloc
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
    # The first spelling names the skill: a package trained from '07' must take the clicker's '07'.
    dkt = _file(tmp_path, "4\n7,07,7.0, 7\n1,0,1,1\n2\n12,12.00\n0,1\n")
    seqs = read_sequences(dkt, "dkt-csv")
    assert seqs.skills == [["7", "7", "7", "7"], ["12", "12"]] and seqs.vocabulary() == ["7", "12"]
    pykt = _file(tmp_path, 'uid,concepts,responses\n1,"7.0,07,12_3","1,0,1"\n2,"7,12.0","0,0"\n', "p.csv")
    seqs = read_sequences(pykt, "pykt-csv")
    # named as first written without a fraction: "07", not pandas' "7.0" (round 3); "12" only as "12_3"
    assert seqs.vocabulary() == ["7", "12"] and [seqs.name(s) for s in seqs.vocabulary()] == ["07", "12"]
    floats = _file(tmp_path, "3\n7.0,12.0,7.0\n1,0,1\n", "pandas.csv")
    seqs = read_sequences(floats, "dkt-csv")
    assert [seqs.name(s) for s in seqs.vocabulary()] == ["7", "12"]


def test_chapter_section_codes_are_skills_as_written(tmp_path: Path) -> None:
    # '1.1' was refused as "not a whole number" (round 2); '1.10' is another section than '1.1'
    path = _file(tmp_path, "4\n1.1,1.10,2,2.0\n1,0,1,1\n")
    assert read_sequences(path, "dkt-csv").skills == [["1.1", "1.10", "2", "2"]]


def test_a_file_of_named_skills_keeps_the_names(tmp_path: Path) -> None:
    path = _file(tmp_path, "3\nfractions,algebra,fractions\n1,0,1\n")
    assert read_sequences(path, "dkt-csv").skills == [["fractions", "algebra", "fractions"]]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("2\n1,2\n1,0\n3\n1,,2\n1,0,1\n", 5, "skill id 2 of 3 is empty"),
        ("2\n1,2\n1,0\n3\n1,abc,2\n1,0,1\n", 5, "'abc' is a name, but the file's skill ids are numbers"),
        ("3\nfractions,algebra,7\n1,0,1\n", 2, "'7' is a number, but the file's skill ids are names"),
        # a review: trained into a package as skills '-3', '-2', '-1'
        ("2\n1,2\n1,0\n3\n-1,-2,-1\n1,0,1\n", 5, "'-1' is negative; skill ids are numbers from 0"),
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


def test_skills_named_with_characters_python_calls_digits_are_names(tmp_path: Path) -> None:
    # A review: "①" and "²" are digits to str.isdigit, not to int: the vocabulary's sort raised ValueError
    from edge_agent.kt.data import Sequences

    path = _file(tmp_path, "3\n①,②,①\n1,0,1\n3\n②,10,②\n0,1,1\n")
    with pytest.raises(InputRejected, match="is a number, but the file's skill ids are names"):
        read_sequences(path, "dkt-csv")
    assert Sequences([["①", "²", "10", "9"]], [[1, 0, 1, 1]]).vocabulary() == ["9", "10", "²", "①"]


@pytest.mark.parametrize(
    ("row", "said"),
    [('1,"3,-1,4","1,1,0"', "line 2: concept 2 of 3 is -1 but has a response"),
     ("2", "line 2: the row ends before its 'concepts' and 'responses' columns")],
)
def test_a_pykt_answer_on_a_padding_concept_or_a_short_row_is_refused_not_dropped(
    tmp_path: Path, row: str, said: str
) -> None:
    path = _file(tmp_path, f'uid,concepts,responses\n{row}\n3,"3,4","0,1"\n')
    with pytest.raises(InputRejected, match=re.escape(f"{path} {said}")):
        read_sequences(path, "pykt-csv")


def _generated_log(path: Path, fmt: str, size: int) -> Path:
    """Students of 20-400 answers on 124 skills, to ``size`` bytes, in the 3-line or the pyKT format."""
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as out:
        if fmt == "pykt-csv":
            out.write("fold,uid,questions,concepts,responses,selectmasks\n")
        uid = 0
        while out.tell() < size:
            n = rng.randint(20, 400)
            skills = [str(rng.randint(1, 124)) for _ in range(n)]
            answers = [str(rng.randint(0, 1)) for _ in range(n)]
            if fmt == "dkt-csv":
                out.write(f"{n}\n{','.join(skills)},\n{','.join(answers)},\n")
            for i in range(0, n if fmt == "pykt-csv" else 0, 200):  # pyKT: rows of 200, padded with -1
                pad = ["-1"] * (200 - len(skills[i : i + 200]))
                cols = [skills[i : i + 200] + pad] * 2 + [answers[i : i + 200] + pad]
                marks = ["1"] * (200 - len(pad)) + pad
                out.write(f"0,{uid},{','.join(chr(34) + ','.join(c) + chr(34) for c in [*cols, marks])}\n")
            uid += 1
    return path


@pytest.mark.parametrize(("fmt", "bound"), [("dkt-csv", 4.5), ("pykt-csv", 3)])
def test_reading_a_log_holds_a_few_times_its_size_not_17(tmp_path: Path, fmt: str, bound: float) -> None:
    # The whole text, its list of lines and a str object per skill id were held at once: for a 30 MB
    # 3-line file, +516 MB RSS (pyKT +266 MB); read line by line with one str per distinct id, +105 MB
    # (pyKT +29 MB). Here 3 MB: tracemalloc's peak was 15x (pyKT 9x) the file, now 3.5x (pyKT 1.2x).
    path = _generated_log(tmp_path / "log.csv", fmt, 3_000_000)
    tracemalloc.start()
    try:
        seqs = read_sequences(path, fmt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(seqs) > 500 and all(len(s) == len(c) for s, c in zip(seqs.skills, seqs.correct, strict=True))
    size = path.stat().st_size
    assert peak < bound * size, f"peak {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB ({peak / size:.1f}x)"


def test_a_log_that_is_not_utf8_says_how_to_convert_it(tmp_path: Path) -> None:
    # zh-CN Excel's "CSV" is GBK. Read line by line, the decoder's byte position counts from its block,
    # not the file, so it is left out of the message.
    path = tmp_path / "answers.csv"
    path.write_bytes(b"2\n1,2\n1,0\n" + "2\n分数,代数\n1,0\n".encode("gbk"))
    with pytest.raises(InputRejected, match=re.escape(f"answer log {path} is not UTF-8 text (GBK")) as caught:
        read_sequences(path, "dkt-csv")
    assert '"CSV UTF-8' in str(caught.value) and f"iconv -f GBK -t UTF-8 {path}" in str(caught.value)
