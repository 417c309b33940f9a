"""JSON that comes from outside the board (HTTP bodies, MQTT messages, package manifests): one parser.

``json.loads`` raises RecursionError, not ValueError, for arrays or objects nested deeper than Python's
recursion limit, and a few kilobytes of brackets are enough. Here that is a ValueError like any other
malformed text, so every caller handles bad input with the one exception type it already catches.
A UTF-8 byte-order mark before the JSON is skipped, in text as in bytes.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes) -> Any:
    if isinstance(data, str):
        # A leading byte-order mark (Windows tools write one) is taken, as json.loads takes it in bytes:
        # an HTTP body arrives decoded, and the mark made it "not valid JSON".
        data = data.removeprefix("\ufeff")
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested deeper than this board parses") from exc
