"""Logging to stdout, one line per event, in a form journald and log shippers parse.

JSON by default (``logging.format = "json"``); ``kv`` gives ``key=value`` lines for people reading a
terminal. Messages never carry student identifiers or image data: callers log pseudonyms and counts.

Under systemd, with stdout connected to the journal, each line starts with its syslog priority ("<4>"
for a warning), which journald takes off and stores as the entry's priority, so `journalctl -p warning`
finds warnings. Without it every line was priority 6 (info). Redirected stdout keeps plain lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import TextIO

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029]")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return _encodable(json.dumps(event, ensure_ascii=False, default=str))


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = json.dumps(record.getMessage(), ensure_ascii=False)
        line = f"level={record.levelname.lower()} logger={record.name} msg={message}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return _encodable(line)


def _encodable(line: str) -> str:
    """``line`` with a lone surrogate (from a file name that is not UTF-8) as its ``\\udcxx`` escape, which
    in a JSON string reads back as the same character: a systemd unit gets the board's locale (en_US.UTF-8),
    where stdout encodes strictly, and such a line raised there and was lost, with a traceback on stderr.

    DEL, the C1 controls and U+2028/U+2029 become their ``\\uXXXX`` escapes too (they only occur inside
    the line's JSON strings): json.dumps(ensure_ascii=False) escapes C0 only, and a line with U+009B (a
    terminal's CSI) from a command's key made journalctl show the line as "[N blob data]"."""
    if line.isascii() and "\x7f" not in line:
        return line
    line = _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


class JournalPriorityFormatter(logging.Formatter):
    """Another formatter's line with the syslog priority journald reads off its start (sd-daemon(3))."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{journal_priority(record.levelno)}>{self.inner.format(record)}"


def journal_priority(levelno: int) -> int:
    """syslog's number for a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for floor, priority in _PRIORITIES:
        if levelno >= floor:
            return priority
    return 7


def writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd gave this service: JOURNAL_STREAM ("DEV:INODE")
    names the same file. Inherited by a child whose stdout goes elsewhere (a pipe, a file), it does not
    match, and that output stays plain."""
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):  # unset or malformed; a stream with no file (io.UnsupportedOperation)
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else KeyValueFormatter()
    handler.setFormatter(JournalPriorityFormatter(formatter) if writes_to_journal(sys.stdout) else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (aiohttp access lines per request, paho internals) stays at WARNING.
    for noisy in ("aiohttp.access", "paho", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
