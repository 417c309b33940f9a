"""Commands sent to a board on ``edge/{tenant}/{site}/{device}/cmd``: validated first, then dispatched.

Nothing acts on a message until it has passed every check: topic, size, JSON, and the pydantic model of
its ``type`` (``extra="forbid"``, strict types). A rejected message is counted in
``edge_mqtt_rejected{reason}`` and logged with the reason (never its contents): the first in full, then one
line a minute at most. The latest command's outcome, taken or refused, is
:meth:`CommandDispatcher.recent_outcomes`, which every heartbeat carries to the cloud. Handlers are registered
by the daemon; they run on the publisher's thread, so they must only hand work off (e.g.
``call_soon_threadsafe``).
"""

from __future__ import annotations

import collections
import logging
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from edge_agent import json_input
from edge_agent.config import DeviceSettings
from edge_agent.errors import CommandRefused
from edge_agent.telemetry import metrics

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 16 * 1024
MAX_DETAIL_CHARS = 300  # of a refusal's reason in the heartbeat
# Outcomes repeated in every heartbeat for this long, at most this many: a heartbeat is QoS 0 and may be
# lost, and commands a second apart shared one reply heartbeat, which carried only the latest outcome
OUTCOME_KEEP_S = 900.0
OUTCOMES_KEPT = 16
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # the model's request_id rule, for a refused command
TYPES = ("config_reload", "model_update")
# a command that comes while the board stops (sync stops last, so it still takes them): "accepted", it
# never ran, and the outcomes, kept in memory, were gone after the restart
BOARD_STOPPING = "the board is stopping; send it again once it is back"
# 300 bad commands at 20/s logged 300 WARNING lines (1,200 a minute) into the board's eMMC journal, which
# then deletes its oldest files, the history IT needs; the metric and the outcomes still count each one
REFUSAL_LOG_EVERY_S = 60.0
# a field name the sender chose (an unknown key) is repeated as is only when it is this plain: a 16 KiB
# key with terminal controls (U+009B CSI) and U+2028 went whole into the log line and the heartbeat
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
SHOWN_NAME_CHARS = 40


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    request_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ConfigReload(_Command):
    type: Literal["config_reload"]


class ModelUpdate(_Command):
    type: Literal["model_update"]
    model: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    # the signed manifest's own rule (model_package._NAME): "2.0+1" passed here, was downloaded (up to
    # 512 MiB), and no package can be signed or verified as that version (a review)
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str = Field(max_length=2048, pattern=r"^https://[^\s]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = Field(min_length=16, max_length=1024, pattern=r"^[A-Za-z0-9+/=_-]+$")

    @field_validator("url")
    @classmethod
    def _url_reads(cls, url: str) -> str:
        """A URL the download can read: ``https://[::1/kt.tar`` passed the pattern, was "accepted", and the
        download failed on it with a traceback instead of an outcome (a review)."""
        parts = urlsplit(url)  # ValueError (an unclosed [ of an IPv6 address): pydantic's value_error
        if not parts.hostname:
            raise ValueError("the URL names no host")
        _ = parts.port  # ValueError for a port that is not a number from 0 to 65535
        return url


Command = Annotated[ConfigReload | ModelUpdate, Field(discriminator="type")]
_ADAPTER: TypeAdapter[ConfigReload | ModelUpdate] = TypeAdapter(Command)
Handler = Callable[[Any], None]


def _problem(error: Any) -> str:
    """One field's problem, named by its path: the command's type has none (pydantic's discriminator), and
    an unknown or missing type said only ": union_tag_invalid" (a review). Never the value sent."""
    if error["type"] == "union_tag_not_found":
        return "type: missing"
    if error["type"] == "union_tag_invalid":
        return f"type: not one of {', '.join(TYPES)}"
    return ".".join(_field_name(p) for p in error["loc"]) + ": " + error["type"]


def _field_name(part: str | int) -> str:
    """A part of a field's path: an unknown key is the sender's text, shown as its repr, cut short."""
    if isinstance(part, int) or _PLAIN_NAME.fullmatch(part):
        return str(part)
    shown = repr(part)  # escapes controls, U+2028 and other characters that do not print
    return shown if len(shown) <= SHOWN_NAME_CHARS else shown[:SHOWN_NAME_CHARS - 3] + "..."


class _RefusalLog:
    """The log lines for refused command messages: the first in full, then at most one line per
    ``every_s`` with how many more were refused and the latest reason."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._unlogged = 0  # refusals since the last line
        self._latest = ""
        self._line_at = 0.0  # time.time() of the last line, for "since HH:MM"
        self._line_mono = -every_s

    def refused(self, reason: str, detail: str) -> None:
        self._latest = f"{reason} ({detail[:MAX_DETAIL_CHARS]})"
        if self._unlogged or time.monotonic() - self._line_mono < self._every_s:
            self._unlogged += 1
            self.report_due()
            return
        log.warning("rejected a command message: %s", self._latest)
        self._lined()

    def report_due(self) -> None:
        """The line for refusals not logged yet, once ``every_s`` has passed since the last line: also
        called at each heartbeat, so the end of a burst is logged without waiting for the next refusal."""
        if self._unlogged and time.monotonic() - self._line_mono >= self._every_s:
            log.warning("%s more command messages refused since %s (latest: %s)", self._unlogged,
                        time.strftime("%H:%M", time.localtime(self._line_at)), self._latest)
            self._unlogged = 0
            self._lined()

    def _lined(self) -> None:
        self._line_at, self._line_mono = time.time(), time.monotonic()


class CommandDispatcher:
    def __init__(self, device: DeviceSettings, *, log_every_s: float = REFUSAL_LOG_EVERY_S) -> None:
        self.topic = f"edge/{device.tenant}/{device.site}/{device.device_id}/cmd"
        self._handlers: dict[str, Handler] = {}
        # For the heartbeat: a refusal was only a log line on the board, and a command taken got no reply,
        # so the cloud could not tell what a board did with it. (monotonic time, outcome)
        self._outcomes: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(
            maxlen=OUTCOMES_KEPT)
        self._refusal_log = _RefusalLog(log_every_s)

    def register(self, command_type: str, handler: Handler) -> None:
        """``command_type`` is "config_reload" or "model_update"; the handler gets the validated model."""
        if command_type not in TYPES:
            raise ValueError(f"unknown command type {command_type!r}")
        self._handlers[command_type] = handler

    def _reject(self, reason: str, detail: str, payload: bytes) -> None:
        metrics.MQTT_REJECTED.labels(reason=reason).inc()
        self._refusal_log.refused(reason, detail)
        self._note(payload, reason, detail)

    def _note(self, payload: bytes, reason: str | None, detail: str) -> None:
        request_id, command_type = _identify(payload)
        self._outcomes.append((time.monotonic(), {
            "request_id": request_id, "type": command_type, "accepted": reason is None, "reason": reason,
            "detail": detail[:MAX_DETAIL_CHARS], "at": round(time.time(), 3),
        }))

    def recent_outcomes(self) -> list[dict[str, Any]]:
        """The outcomes of the last OUTCOME_KEEP_S, oldest first (at most OUTCOMES_KEPT)."""
        self._refusal_log.report_due()  # the heartbeat asks for these
        since = time.monotonic() - OUTCOME_KEEP_S
        return [outcome for at, outcome in self._outcomes if at >= since]

    def parse(self, topic: str, payload: bytes) -> ConfigReload | ModelUpdate | None:
        """The validated command, or None (rejected, logged and counted)."""
        if topic != self.topic:
            self._reject("unknown_topic", f"topic {topic!r}", payload)
            return None
        if len(payload) > MAX_COMMAND_BYTES:
            self._reject("oversized", f"{len(payload)} bytes > {MAX_COMMAND_BYTES}", payload)
            return None
        try:
            doc = json_input.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            # what the board refuses in text that parses (a name twice with different values) says why: the
            # class name alone told the cloud nothing (round 2); its text names a field, never a value
            refused = isinstance(exc, json_input.JSONRefused)
            self._reject("malformed", str(exc) if refused else f"not JSON: {exc.__class__.__name__}", payload)
            return None
        if not isinstance(doc, dict):  # pydantic's error for it has no path: ": model_attributes_type"
            self._reject("invalid", "the command is not a JSON object", payload)
            return None
        try:
            return _ADAPTER.validate_python(doc)
        except ValidationError as exc:
            fields = ", ".join(_problem(e) for e in exc.errors()[:5])
            self._reject("invalid", fields or "schema", payload)
            return None

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> bool:
        """Validate and dispatch; True when a handler took the command.

        ``retained``: the broker kept the message for the topic and gives it again at every subscribe,
        i.e. at every connect: acted on, a retained config_reload restarted the board into a loop (each
        restart connects and reloads again) until systemd's start limit stopped it. Refused instead.
        """
        if not payload:  # how a retained message is cleared; the broker passes it on, not retained
            log.info("an empty message on %s (a retained command cleared): nothing to do", topic)
            return False
        if retained:
            self._reject("retained", f"a retained message on {topic} would run again at every connect; "
                         "clear it by publishing an empty retained message to that topic "
                         f"(mosquitto_pub -r -n -t '{topic}'), then send the command again without retain",
                         payload)
            return False
        command = self.parse(topic, payload)
        if command is None:
            return False
        handler = self._handlers.get(command.type)
        if handler is None:
            self._reject("no_handler", f"this board does not take {command.type} commands", payload)
            return False
        try:
            handler(command)
        except CommandRefused as exc:  # understood, and refused for a reason the board gives
            self._reject("refused", str(exc), payload)
            return False
        except Exception as exc:
            log.exception("the %s handler failed", command.type)
            metrics.MQTT_REJECTED.labels(reason="handler_error").inc()
            self._note(payload, "handler_error", str(exc) or exc.__class__.__name__)
            return False
        log.info("command %s (request %s) accepted", command.type, command.request_id)
        self._note(payload, None, "accepted")
        return True


def _identify(payload: bytes) -> tuple[str | None, str | None]:
    """A command's request_id and type where they read, so that the cloud can match a refusal to what it
    sent; None for either that does not (a request_id outside the pattern is not repeated)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None, None
    try:
        doc = json_input.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    request_id, command_type = doc.get("request_id"), doc.get("type")
    readable = isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id) is not None
    return (request_id if readable else None), (command_type if command_type in TYPES else None)
