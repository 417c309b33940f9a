"""JSON that comes from outside the board (HTTP bodies, MQTT messages, package manifests): one parser.

Nothing the board reads nests deeper than a few levels, and ``json.loads`` recurses once per level: text
nested deeper than MAX_DEPTH is refused before it is parsed, as a ValueError like any other malformed text.
Parsed, 100,000 brackets ran the parser to Python's recursion limit, where it raises RecursionError (not
ValueError), and where a garbage collection that ran a finaliser meanwhile failed inside it (a CI run:
"Exception ignored in sys.unraisablehook ... RecursionError"). A UTF-8 byte-order mark before the JSON is
skipped, in text as in bytes.

What JSON leaves open is refused too (JSONRefused, a ValueError): a name twice in one object with
different values (Python keeps the last, so {"student_id": "a", "student_id": "b"} was applied to b
without a word; the same value twice is taken) and NaN /
Infinity, which are not JSON at all (Python reads them: "answered_at": Infinity was "milliseconds"), nor
a number too large for a float (1e999 is JSON, and Python reads it as infinity).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from typing import Any

MAX_DEPTH = 64
_ESCAPED = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JSONRefused(ValueError):
    """Text that parses (or would) but that the board does not take: the message says why."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # the same value twice (firmware that builds JSON by joining text) is no ambiguity: taken (round 2)
        for name, value in pairs:
            if obj[name] != value:
                raise JSONRefused(f"the JSON gives {name[:40]!r} twice in one object, with different values: "
                                  "which one is meant is unknown")
    return obj


def _constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 is JSON, but read as a float it is infinity (a review: stored as
        raise JSONRefused(f"the number {text[:40]} is too large")  # "Infinity", which is not JSON)
    return value


# One decoder, made once: json.loads(text, object_pairs_hook=...) builds a new one per call (+3 us a body)
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_float=_finite)


def loads(data: str | bytes) -> Any:
    text = data.decode("utf-8") if isinstance(data, bytes) else data  # json.loads would do the same
    # A leading byte-order mark (Windows tools write one) is taken: an HTTP body arrives decoded, and the
    # mark made it "not valid JSON".
    text = text.removeprefix("\ufeff")
    if text.count("[") + text.count("{") > MAX_DEPTH and _nesting_over(text, MAX_DEPTH):
        raise JSONRefused(f"JSON nested deeper than {MAX_DEPTH} levels; this board does not parse it")
    return _DECODER.decode(text)


def where_invalid(exc: json.JSONDecodeError) -> str:
    """Where the text stops being JSON and the character there, for a client's developer: a Chinese
    system's full-width punctuation ('"student_id"：' or “…”) was only "not valid JSON"."""
    char = exc.doc[exc.pos] if exc.pos < len(exc.doc) else ""
    at = f"at line {exc.lineno} column {exc.colno}"
    if not char:
        return f"{at}: the text ends there ({exc.msg})"
    name = unicodedata.name(char, "").lower()
    shown = f"{char!r} (U+{ord(char):04X}{' ' + name if name else ''})"
    wide_punctuation = unicodedata.east_asian_width(char) in "FW" and unicodedata.category(char)[0] == "P"
    if wide_punctuation or char in "“”‘’":
        return f"{at}: {shown}; JSON needs half-width (ASCII) punctuation and straight quotes"
    return f"{at}: {shown} ({exc.msg})"


def _nesting_over(text: str, depth: int) -> bool:
    """Whether brackets outside strings nest deeper than ``depth``, without recursing: the most brackets
    open at once, each open one +1 and each closing one -1, summed at C speed.

    Brackets need not pair up: the parser stops where they do not, having gone no deeper than this sum had
    (and a truncated text that is not deep gets the parser's message with its position: a batch cut off
    before its last '}' was "nested deeper than 64 levels", a review). Open brackets never closed still
    count, so 100,000 '[' alone are refused as deep."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPED.sub("", text)))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > depth
