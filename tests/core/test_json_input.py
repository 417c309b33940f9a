"""The one parser for JSON from outside the board: depth refused before parsing, strings not miscounted."""

from __future__ import annotations

import json

import pytest

from edge_agent.json_input import MAX_DEPTH, loads, where_invalid


def test_json_nested_past_the_limit_is_refused_before_it_is_parsed() -> None:
    # 100,000 brackets ran the parser to Python's recursion limit; a finaliser that ran there failed the
    # CI run ("Exception ignored in sys.unraisablehook ... RecursionError")
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    for deep in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), b"[" * 100_000 + b"]" * 100_000,
                 '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)):
        with pytest.raises(ValueError, match="nested deeper than"):
            loads(deep)


def test_brackets_inside_strings_are_text_not_nesting() -> None:
    text = json.dumps({"answers": [{"student_id": "[" * 500 + '\\"{' * 300, "item_id": "]]]"}]})
    assert loads(text)["answers"][0]["item_id"] == "]]]"
    assert loads(b"\xef\xbb\xbf" + text.encode())["answers"][0]["student_id"].startswith("[[")
    with pytest.raises(ValueError):  # broken JSON is still refused by the parser
        loads("[" * 200)


def test_a_batch_cut_off_in_transit_is_refused_where_it_ends_not_as_nested_too_deep() -> None:
    # A review: 40 answers (over 64 brackets) missing only their last '}' (flaky Wi-Fi, a proxy's body
    # limit) were "JSON nested deeper than 64 levels", which sent the client's developer looking for depth
    body = json.dumps({"answers": [{"student_id": f"s{i}", "item_id": "Q1", "skill_ids": ["1"], "correct": 1,
                                    "answered_at": 1.7e9, "client_event_id": f"e{i}"} for i in range(40)]})
    for cut in (body[:-1], body[:-2], body[: len(body) * 9 // 10]):
        with pytest.raises(json.JSONDecodeError) as refused:
            loads(cut)
        ends = f"at line 1 column {len(cut) + 1}: the text ends there"
        assert where_invalid(refused.value).startswith(ends)
    with pytest.raises(ValueError, match="nested deeper than"):  # deep and cut off is still deep
        loads("[" * 100_000)


def test_numbers_too_large_for_a_float_are_refused_not_read_as_infinity() -> None:
    # A review: 1e999 is JSON, Python read it as inf, and the receiver stored "Infinity" (not JSON) in its
    # items table; NaN and Infinity themselves were refused already
    for text in ('{"share": 1e999}', "[-1E400]", '{"at": 1.0e309}'):
        with pytest.raises(ValueError, match=r"the number -?1\.?0?[eE]\d+ is too large"):
            loads(text)
    assert loads('{"share": 1.7976931348623157e308, "small": 1e-999}') == {"share": 1.7976931348623157e308,
                                                                           "small": 0.0}
