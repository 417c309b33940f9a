"""Log lines are text to journald: controls beyond C0 and the Unicode line separators are escaped."""

from __future__ import annotations

import json
import logging

import pytest

from edge_agent.logs import JournalPriorityFormatter, JsonFormatter, KeyValueFormatter

# DEL, C1 (U+0085 NEL, U+009B CSI), U+2028/U+2029; json.dumps(ensure_ascii=False) left all of them raw, and
# journalctl showed such a line as "[N blob data]"
UNPRINTABLE = "\x7f\x80\x85\x9b\x9f\u2028\u2029"
MESSAGE = "key " + UNPRINTABLE + " 班牌 é \x1b[2J \udcff end"


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": "edge_agent.test", "levelno": logging.WARNING,
                                 "levelname": "WARNING", "msg": "%s", "args": (message,)})
    rec.__dict__.update(extra)
    return rec


def printable(line: str) -> bool:
    return not any(0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" or ord(c) < 0x20 for c in line)


@pytest.mark.parametrize("formatter", [JsonFormatter(), JournalPriorityFormatter(JsonFormatter())])
def test_json_lines_escape_c1_controls_and_line_separators(formatter: logging.Formatter) -> None:
    line = formatter.format(record(MESSAGE, school="\u2028x\x9b"))
    assert printable(line), ascii(line)
    line.encode("utf-8")  # strict, as stdout under the board's locale
    event = json.loads(line.removeprefix("<4>"))
    assert event["msg"] == MESSAGE  # each escape reads back as its character
    assert event["school"] == "\u2028x\x9b"
    assert "班牌 é" in line  # other text stays readable


def test_key_value_lines_escape_c1_controls_and_line_separators() -> None:
    line = KeyValueFormatter().format(record(MESSAGE))
    assert printable(line), ascii(line)
    assert line.startswith("level=warning logger=edge_agent.test msg=") and "班牌 é" in line
    assert json.loads(line.split("msg=", 1)[1]) == MESSAGE


def test_plain_lines_are_unchanged() -> None:
    line = KeyValueFormatter().format(record("plain text"))
    assert line == 'level=warning logger=edge_agent.test msg="plain text"'
