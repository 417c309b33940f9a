"""The systemd notify protocol (sd_notify), written directly over an AF_UNIX datagram socket.

No libsystemd binding is needed: the protocol is a newline-separated list of ``KEY=value`` sent to the
socket named in ``$NOTIFY_SOCKET`` (a path, or an abstract name starting with ``@``). Outside systemd the
variable is unset and every call is a no-op, so the daemon runs the same way in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

# systemd drops a whole notification over 4 KiB without a word (the sender's sendto succeeds): a degraded
# daemon's status naming 20 failed models never replaced "running: all components healthy" (a review,
# systemd 252). STATUS= is cut well below that: the other fields and a person's reading need little more.
STATUS_MAX_BYTES = 1024


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = self._parse_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s = self._watchdog_interval(env)
        self._socket: socket.socket | None = None
        self.sent = 0
        self.failures = 0

    @staticmethod
    def _parse_address(raw: str) -> str | bytes | None:
        if not raw:
            return None
        if raw.startswith("@"):  # abstract namespace socket
            return b"\0" + raw[1:].encode()
        return raw

    @staticmethod
    def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
        """Half of WATCHDOG_USEC, as systemd advises; None when the watchdog is off or for another PID."""
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        try:
            value = int(usec)
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
            return None
        return value / 2_000_000 if value > 0 else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._socket is None:
                # non-blocking: this runs on the event loop, and a busy systemd must not stall it (a
                # ping lost then is counted below; the next one follows within the interval)
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            self._socket.sendto(message, self._address)
        except OSError as exc:
            # systemd gone (shutdown) or socket not permitted: never fatal, but visible.
            self.failures += 1
            log.warning("sd_notify failed: %s", exc)
            return False
        self.sent += 1
        return True

    @staticmethod
    def _status(text: str) -> str:
        """The STATUS= field: one line (a newline would start another field), its text at most
        STATUS_MAX_BYTES of UTF-8, the cut marked with an ellipsis."""
        text = " ".join(text.splitlines())
        raw = text.encode()
        if len(raw) > STATUS_MAX_BYTES:  # cut in bytes; a character cut in two is dropped
            text = raw[: STATUS_MAX_BYTES - 3].decode(errors="ignore") + "\u2026"
        return f"STATUS={text}"

    def ready(self, status: str) -> bool:
        return self.send("READY=1", self._status(status), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(self._status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", self._status(status))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
