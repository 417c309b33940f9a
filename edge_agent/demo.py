"""`edge-agent demo`: the full daemon on embedded defaults, no hardware, no outside network.

State lives under a local directory; secrets are generated there (mode 0600) as provisioning would;
the teacher view and metrics listen on localhost; a simulated classroom posts answers to the real
answer API; the camera is an image folder (the shared test photos when they sit beside the repo); when
Mosquitto is installed, a private broker on loopback plus the reference cloud receiver show aggregates
arriving "in the cloud".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.config import Config, MqttSettings
from edge_agent.daemon import leave, run_to_exit
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.web.local_api import board_opener

if TYPE_CHECKING:
    from edge_agent.assembly import Assembly

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _secret_file(path: Path, content: bytes) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
    return path


def demo_config(
    state_dir: Path, *, port: int, metrics_port: int, camera: str | None, broker_port: int | None
) -> Config:
    """The embedded defaults, pointed at a local state directory."""
    from_env = os.environ.get("EDGE_AGENT_MODEL_MIRROR")  # may be relative: the config takes whole paths
    mirror = (from_env and str(Path(from_env).resolve())) or (
        str(SHARED / "models") if (SHARED / "models").is_dir() else None
    )
    secret = _secret_file(state_dir / "secrets" / "pseudonym.key", secrets.token_hex(32).encode())
    data: dict[str, Any] = {
        "device": {
            "tenant": "demo-district",
            "site": "demo-school",
            "class_id": "grade7-2",
            "display_name": "初一（2）班",  # the class as the teacher view names it
            "device_id": "demo-board",
            "pseudonym_secret_file": str(secret),
        },
        "paths": {"state_dir": str(state_dir), "cache_dir": str(state_dir / "cache"), "model_mirror": mirror},
        "inference": {"backend": "auto"},
        "camera": {"enabled": camera is not None, "source": camera or "0", "analysis_fps": 5.0},
        "attention": {"window_s": 15.0},
        "kt": {"lesson_window_s": 60.0, "min_group_size": 5},
        "mqtt": {
            "enabled": broker_port is not None,
            "host": "127.0.0.1",
            "port": broker_port or 1883,
            "tls": False,
            "heartbeat_s": 10.0,
        },
        "web": {"host": "127.0.0.1", "port": port, "token_file": None},
        "metrics": {"host": "127.0.0.1", "port": metrics_port},
        "logging": {"level": "INFO", "format": "kv"},
    }
    return Config.model_validate(data)


class SimulatedClassroom:
    """Students answering the teacher's questions through the real HTTP answer API.

    Every ``question_every_s`` the teacher picks a skill; each student answers an item of it within a few
    seconds, correct with an IRT probability that grows with practice (so mastery visibly moves).
    """

    def __init__(
        self, url: str, package: KTPackage, students: int, seed: int = 7, question_every_s: float = 8.0
    ) -> None:
        self.url = url
        self.package = package
        self.rng = np.random.default_rng(seed)
        self.ability = self.rng.normal(0.0, 1.0, students)
        self.practice = np.zeros((students, len(package.skills)))
        self.question_every_s = question_every_s
        # Event ids unique to this run, as a clicker's are: a demo run again on the same state dir would
        # otherwise repeat the last run's ids and every answer would come back as a duplicate.
        self._run_id = secrets.token_hex(4)
        self.sent = 0
        self.applied = 0  # the daemon's verdict per answer; a duplicate is not applied again
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-classroom", daemon=True)
        self._items_by_skill: dict[str, list[Any]] = {}
        for item in package.items:
            self._items_by_skill.setdefault(item.skill_id, []).append(item)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # not started when the daemon could not start
            self._thread.join(5)

    def _run(self) -> None:
        skills = list(self._items_by_skill)
        question = 0
        while not self._stop.is_set():
            skill_id = skills[(question * 7) % len(skills)]
            k = self.package.skill_index[skill_id]
            answers = []
            for s in self.rng.permutation(len(self.ability)):
                item = self._items_by_skill[skill_id][
                    int(self.rng.integers(len(self._items_by_skill[skill_id])))
                ]
                logit = self.ability[s] + 0.35 * min(self.practice[s, k], 8) - item.difficulty
                correct = bool(self.rng.random() < 1 / (1 + np.exp(-logit)))
                self.practice[s, k] += 1
                answers.append(
                    {
                        "student_id": f"demo-student-{s + 1:02d}",
                        "item_id": item.id,
                        "skill_id": skill_id,
                        "correct": correct,
                        "answered_at": time.time(),
                        "client_event_id": f"demo-{self._run_id}-{question}-{s}",
                    }
                )
            # Students answer within ~3 s of the question, in a few small bursts.
            for chunk in np.array_split(np.arange(len(answers)), 4):
                if self._stop.wait(0.75):
                    return
                for i in chunk:
                    self._post({"answers": [answers[i]]})
            question += 1
            self._stop.wait(self.question_every_s)

    def _post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            # never through http_proxy: a proxy in the environment answered every answer with 502
            with board_opener(False).open(request, timeout=5) as response:
                reply = json.loads(response.read())
            self.sent += len(body["answers"])
            results = reply.get("results", []) if isinstance(reply, dict) else []
            self.applied += sum(1 for r in results if isinstance(r, dict) and r.get("status") == "applied")
        except (urllib.error.URLError, OSError, ValueError):
            self.failed += 1  # the daemon may still be starting; the next question tries again


class LocalBroker:
    """A private Mosquitto on loopback, so the demo shows sync end to end without any network."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Another program may take the free port between the pick and Mosquitto's bind: ours then exits
        # ("Address already in use") while the other answers the probe, and the demo's receiver talked to
        # that one (a CI run: "Connection reset by peer", a TLS broker of another test). So: ours must
        # still run once the port answers, else another port.
        for _attempt in range(3):
            if self._start_on_port():
                return
            self.port = _free_port()
        raise RuntimeError(f"the demo's local Mosquitto did not start; see {self.workdir}/mosquitto-demo.log")

    def _start_on_port(self) -> bool:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto-demo.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        with (self.workdir / "mosquitto-demo.log").open("wb") as log_file:
            self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log_file,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket() as sock:
                listening = sock.connect_ex(("127.0.0.1", self.port)) == 0
            if listening:
                time.sleep(0.1)  # an own bind that failed has ended the process by now
                if self.process.poll() is None:
                    return True
                break
            time.sleep(0.05)
        self.stop()  # not listening, or not ours: do not leave the process behind
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _mosquitto_available() -> bool:
    return bool(shutil.which("mosquitto")) or Path("/usr/sbin/mosquitto").exists()


def run_demo(args: argparse.Namespace) -> int:
    from edge_agent.assembly import build
    from edge_agent.logs import configure_logging
    from edge_agent.sync.receiver import Receiver

    if args.port == args.metrics_port:  # the config would refuse it with a traceback
        print(f"edge-agent demo: --port and --metrics-port are both {args.port}; give each its own",
              file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir).resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name (FileExistsError) ended in a traceback (a review)
        problem = "is a file, not a folder" if isinstance(exc, FileExistsError) else f"cannot be made: {exc}"
        print(f"edge-agent demo: --state-dir {state_dir} {problem}; give a folder (it is made if missing)",
              file=sys.stderr)
        return 2
    camera = args.camera
    if camera is None and (SHARED / "data" / "faces").is_dir():
        camera = str(SHARED / "data" / "faces")
    broker = LocalBroker(state_dir) if _mosquitto_available() else None
    config = demo_config(
        state_dir,
        port=args.port,
        metrics_port=args.metrics_port,
        camera=camera,
        broker_port=broker.port if broker else None,
    )
    configure_logging(config.logging.level, config.logging.format)
    receiver = None
    classroom: SimulatedClassroom | None = None
    summary: dict[str, Any] = {}
    # Everything after the broker's start inside the try: a classroom or a daemon that could not be built
    # ended in a traceback that left the demo's Mosquitto running (a review)
    try:
        if broker is not None:
            broker.start()
            receiver = Receiver(
                state_dir / "cloud-receiver.db", MqttSettings(host="127.0.0.1", port=broker.port, tls=False)
            )
            receiver.start()
        assembly = build(config)
        package = load_package(config.kt.package_dir)
        classroom = SimulatedClassroom(f"http://127.0.0.1:{args.port}/api/v1/answers", package, args.students)
        code = run_to_exit(
            _main(args, assembly, classroom, broker=broker, state_dir=state_dir, camera=camera)
        )
    finally:
        if classroom is not None:
            classroom.stop()
            summary["answers_sent"] = classroom.sent
            summary["answers_applied"] = classroom.applied
        if receiver is not None:
            summary["cloud_receiver"] = receiver.report(config.device.device_id)
            receiver.stop()
        if broker is not None:
            broker.stop()
    print("demo stopped:", json.dumps(summary, ensure_ascii=False), flush=True)
    return leave(code)


async def _main(args: argparse.Namespace, assembly: Assembly, classroom: SimulatedClassroom, *,
                broker: LocalBroker | None, state_dir: Path, camera: str | None) -> int:
    task = asyncio.create_task(assembly.daemon.run())
    while assembly.daemon.state == "starting" and not task.done():
        await asyncio.sleep(0.1)
    if task.done():
        return task.result()
    # A non-essential listener that failed leaves the daemon running degraded: the demo would then
    # post its answers to whatever program holds the port (a review: answers_sent 0, "demo is running").
    for server, option, port in ((assembly.web, "--port", args.port),
                                 (assembly.metrics_server, "--metrics-port", args.metrics_port)):
        health = server.health() if server is not None else None
        if health is not None and not health.ok:
            print(f"edge-agent demo cannot start: {health.detail}\n"
                  f"  another program uses port {port}? pick another with {option}, e.g. "
                  f"edge-agent demo {option} {_free_port()}", file=sys.stderr, flush=True)
            assembly.daemon.request_stop()
            await task
            return 1
    classroom.start()
    sync_line = (
        f"local Mosquitto on 127.0.0.1:{broker.port} -> reference receiver"
        if broker
        else "off (mosquitto not installed)"
    )
    print(
        "\nedge-agent demo is running\n"
        f"  teacher view:  http://127.0.0.1:{args.port}/   (中文; English via the button)\n"
        f"  metrics:       http://127.0.0.1:{args.metrics_port}/metrics\n"
        f"  health:        http://127.0.0.1:{args.port}/readyz\n"
        f"  state:         {state_dir}\n"
        f"  camera:        {camera or 'off (no image folder found; pass --camera)'}\n"
        f"  sync:          {sync_line}\n"
        f"  classroom:     {args.students} simulated students answering every ~8 s\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, assembly.daemon.request_stop)
    return await task
