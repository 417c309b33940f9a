"""JSON that comes from outside the board (HTTP bodies, MQTT messages, package manifests): one parser.

``json.loads`` raises RecursionError, not ValueError, for arrays or objects nested deeper than Python's
recursion limit, and a few kilobytes of brackets are enough. Here that is a ValueError like any other
malformed text, so every caller handles bad input with the one exception type it already catches.
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested deeper than this board parses") from exc
