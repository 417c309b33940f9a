"""Refused command messages in the board's log: one line a minute at most, never the sender's text raw."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from edge_agent.config import DeviceSettings
from edge_agent.logs import JsonFormatter
from edge_agent.sync.commands import OUTCOMES_KEPT, CommandDispatcher
from edge_agent.telemetry import metrics

TOPIC = "edge/demo-district/demo-school/board-0001/cmd"
# what a retrying back end (or any client the ACL lets publish there) sent in the review: 20 a second
BAD = [b"{not json", b'{"type":"config_reload"}', b"[1,2]",
       b'{"type":"model_update","request_id":"r\\n\\u001b[2Jx","url":"http://x"}']
LOGGER = "edge_agent.sync.commands"


def refused_total() -> float:
    return sum(metrics.sample("edge_mqtt_rejected_total", {"reason": r}) or 0
               for r in ("malformed", "invalid"))


def command_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def dispatcher(**kwargs: float) -> CommandDispatcher:
    d = CommandDispatcher(DeviceSettings(), **kwargs)
    d.register("config_reload", lambda _c: None)
    d.register("model_update", lambda _c: None)
    return d


def test_300_refused_commands_in_a_minute_log_one_line_and_count_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # (review) 300 bad commands at 20/s: 300 WARNING lines, 1,200 a minute, into the eMMC journal
    caplog.set_level(logging.INFO, LOGGER)
    d = dispatcher()
    before = refused_total()
    for i in range(300):
        assert not d.handle(TOPIC, BAD[i % 4])
    lines = command_lines(caplog)
    assert len(lines) <= 2 and lines[0] == "rejected a command message: malformed (not JSON: JSONDecodeError)"
    assert refused_total() == before + 300  # the metric counts each one
    outcomes = d.recent_outcomes()  # and the cloud still sees each outcome
    assert len(outcomes) == OUTCOMES_KEPT and all(o["accepted"] is False for o in outcomes)
    assert outcomes[-1]["reason"] == "invalid" and "request_id" in outcomes[-1]["detail"]


def test_refusals_after_the_first_are_summed_up_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    d = dispatcher(log_every_s=0.3)
    for i in range(50):
        d.handle(TOPIC, BAD[i % 4])
    assert len(command_lines(caplog)) == 1
    first_at = time.strftime("%H:%M", time.localtime())
    time.sleep(0.35)
    d.handle(TOPIC, b'{"type":"reboot","request_id":"r-9"}')  # the next one after the interval
    summary = command_lines(caplog)[1]
    assert summary in (f"50 more command messages refused since {at} (latest: invalid (type: not one of "
                       "config_reload, model_update))" for at in (first_at, time.strftime("%H:%M")))
    for i in range(5):  # a burst's end: the heartbeat (recent_outcomes) reports it once it is due
        d.handle(TOPIC, BAD[i % 4])
    d.recent_outcomes()
    assert len(command_lines(caplog)) == 2
    time.sleep(0.35)
    d.recent_outcomes()
    assert command_lines(caplog)[2].startswith("5 more command messages refused since ")
    time.sleep(0.35)  # a quiet interval with nothing left to report: the next refusal is logged in full
    d.handle(TOPIC, b"[1,2]")
    assert command_lines(caplog)[3:] == [
        "rejected a command message: invalid (the command is not a JSON object)"]


def test_a_command_with_a_long_key_of_controls_logs_a_short_printable_line() -> None:
    # (review) extra_forbidden's path is the sender's key: 16 KiB of text with U+009B (a terminal's CSI),
    # U+0085 and U+2028 went whole into the WARNING line and into the heartbeat's outcome
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        d = dispatcher()
        key = "\u009b2J\u2028\u0085" + "k" * 16000
        payload = json.dumps({"type": "config_reload", "request_id": "r-1", key: 1}, ensure_ascii=False)
        assert not d.handle(TOPIC, payload.encode())
    finally:
        logger.removeHandler(handler)
    line = out.getvalue().rstrip("\n")
    assert "\n" not in line and len(line) < 300, line
    assert not any(0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in line), line
    detail = d.recent_outcomes()[-1]["detail"]
    assert detail.startswith("config_reload.'\\x9b2J\\u2028\\x85kkk")
    assert detail.endswith("...: extra_forbidden")
    assert len(detail) < 80
    assert json.loads(line)["msg"] == f"rejected a command message: invalid ({detail})"


def test_a_plain_unknown_key_is_named_as_it_was_sent() -> None:
    d = dispatcher()
    assert not d.handle(TOPIC, b'{"type":"config_reload","request_id":"r-1","force":true}')
    # as docs/sync-protocol.md shows it
    assert d.recent_outcomes()[-1]["detail"] == "config_reload.force: extra_forbidden"
