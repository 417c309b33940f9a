"""Whole-daemon harness: `edge-agent run` as a real subprocess, a real sd_notify socket, HTTP helpers.

The daemon is started exactly as systemd would (``python -m edge_agent run --config X`` with
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set); nothing inside it is mocked.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.config import to_toml
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def secret_file(path: Path, content: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content if content is not None else secrets.token_hex(32).encode() + b"\n")
    return path


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; every datagram is kept, in order."""

    def __init__(self, directory: Path) -> None:
        # AF_UNIX paths are limited to ~107 bytes; pytest's tmp paths can be longer.
        self.path = Path(f"/tmp/ea-notify-{os.getpid()}-{secrets.token_hex(4)}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def with_key(self, key: str) -> list[dict[str, str]]:
        return [m for m in self.snapshot() if key in m]

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.snapshot():
                if predicate(message):
                    return message
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def local_config(base: Path, *, faces: Path | None, mqtt_port: int | None = None,
                 model_mirror: Path | None = None, per_student_api: bool = True) -> dict[str, Any]:
    """A complete board config under ``base``: real 0600 secrets, loopback ports, optional camera and MQTT."""
    state = base / "state"
    state.mkdir(parents=True, exist_ok=True)
    pseudonym = base / "secrets" / "pseudonym.key"
    if not pseudonym.exists():
        secret_file(pseudonym)
    return {
        "device": {"tenant": "district-t", "site": "school-t", "class_id": "class-t", "device_id": "board-t",
                   "pseudonym_secret_file": str(pseudonym)},
        "paths": {"state_dir": str(state), "cache_dir": str(base / "cache"),
                  **({"model_mirror": str(model_mirror)} if model_mirror else {})},
        "inference": {"backend": "onnxruntime"},
        "kt": {"per_student_api": per_student_api, "min_group_size": 1, "microbatch_wait_ms": 1.0,
               "lesson_window_s": 10.0},
        "camera": {"enabled": faces is not None, "source": str(faces or "0"), "analysis_fps": 2.0},
        "attention": {"pose_method": "landmarks", "window_s": 5.0, "min_faces": 1},
        "mqtt": {"enabled": mqtt_port is not None, "host": "127.0.0.1", "port": mqtt_port or 1883,
                 "tls": False, "backoff_min_s": 0.2, "backoff_max_s": 1.0, "heartbeat_s": 5.0},
        "web": {"host": "127.0.0.1", "port": free_port(), "token_file": ""},
        "metrics": {"host": "127.0.0.1", "port": free_port(), "telemetry_interval_s": 1.0},
        "logging": {"level": "INFO", "format": "kv"},
    }


class DaemonProcess:
    """``edge-agent run --config X`` as systemd starts it; output goes to a log file for post-mortems."""

    def __init__(self, config: Path, notify: NotifySocket | None, log: Path, *,
                 watchdog_usec: int = 2_000_000, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.notify = notify
        self.log = log
        self.watchdog_usec = watchdog_usec
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._err_file: Any = None

    def start(self) -> DaemonProcess:
        inherited = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        env = {k: v for k, v in os.environ.items() if k not in inherited}
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = str(self.notify.path)
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self._log_file = self.log.open("ab")
        self._err_file = self.log.with_suffix(".stderr").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config)],
            cwd=REPO, env=env, stdout=self._log_file, stderr=self._err_file,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr(self) -> str:
        path = self.log.with_suffix(".stderr")
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:
        """stdout (the daemon's log lines) then stderr, for assertion messages."""
        out = self.log.read_text(errors="replace") if self.log.exists() else ""
        return out + self.stderr()

    def wait_running(self, timeout: float = 30.0, *, healthy: bool = False) -> dict[str, str]:
        """The STATUS sent once every component has started (READY=1 comes earlier, after the store);
        with ``healthy``, the first STATUS saying every component is healthy (MQTT may connect later)."""
        wanted = ("running: all components healthy",) if healthy else ("running", "degraded")
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            for message in self.notify.snapshot():
                status = message.get("STATUS", "")
                if status.startswith(wanted) and "READY" not in message:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"daemon did not report running within {timeout} s:\n{self.output()[-4000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL; never leaves a child behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(12)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for handle in (self._log_file, self._err_file):
            if handle is not None:
                handle.close()
        self._log_file = self._err_file = None


def http(
    method: str, url: str, body: Any = None, timeout: float = 10.0, tls: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=tls) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_http(
    url: str, timeout: float, ok: Callable[[int, Any], bool] = lambda s, _b: s == 200
) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            last = http("GET", url, timeout=2.0)
            if ok(*last):
                return last
        except (urllib.error.URLError, OSError) as exc:
            last = (0, str(exc))
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer as expected within {timeout} s; last: {last}")


def answer(student: str, item_id: str, skill_id: str, correct: bool, event: str) -> dict[str, Any]:
    return {"student_id": student, "item_id": item_id, "skill_id": skill_id, "correct": correct,
            "answered_at": time.time(), "client_event_id": event}


def post_answers(
    base_url: str, answers: list[dict[str, Any]], timeout: float = 15.0, tls: ssl.SSLContext | None = None
) -> list[dict[str, Any]]:
    """POST one batch; retried while knowledge tracing is still starting (503)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("POST", f"{base_url}/api/v1/answers", {"answers": answers}, tls=tls)
        if status == 200:
            return list(body["results"])
        if status != 503 or time.monotonic() > deadline:
            raise AssertionError(f"POST /api/v1/answers answered {status}: {body}")
        time.sleep(0.1)


def queue_drain(q: queue.Queue[Any]) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
