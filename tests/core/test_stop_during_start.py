"""SIGTERM while a component is still starting (an engine build takes minutes): the daemon stops at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DAEMON = """
import asyncio, sys, time
from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.daemon import Daemon
from edge_agent.inference.engine_set import EngineSet
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard

class Building(EngineSet):  # the real EngineSet, whose one model builds for 10 minutes
    def _load(self, manifest):
        time.sleep(600)

from edge_agent.inference.manifest import load_manifests
engines = Building([load_manifests()["yunet"]], InferenceSettings(), PathSettings(cache_dir=sys.argv[1]))
daemon = Daemon([engines], live=LiveBoard(), heartbeats=HeartbeatRegistry())
print("started", flush=True)
sys.exit(asyncio.run(daemon.run()))
"""


def test_sigterm_during_a_long_engine_load_stops_the_daemon_within_seconds(tmp_path: Path) -> None:
    # Found by a review: SIGTERM 4 s into a 40-s engine load was acted on at 41 s; under systemd that is
    # SIGKILL at TimeoutStopSec (30 s), before the store is closed.
    # the cache in tmp_path: PathSettings() alone is /var/cache/edge-agent, this machine's own (run as root,
    # the test left yunet there 0600, which failed the units test under this machine's systemd)
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(2.0)  # into the load
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - sent < 5.0
    finally:
        proc.kill()
        proc.wait()


LOADING_FOR_REAL = """
import asyncio, sys
from edge_agent.config import InferenceSettings, PathSettings
from edge_agent.daemon import Daemon, leave
from edge_agent.inference.engine_set import EngineSet
from edge_agent.inference.manifest import load_manifests
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard

class Reloading(EngineSet):  # ONNX Runtime sessions made one after another: a start of many models
    def _load(self, manifest):
        print("loading", flush=True)
        while True:
            super()._load(manifest)

engines = Reloading([load_manifests()["yunet"]], InferenceSettings(backend="onnxruntime"),
                    PathSettings(cache_dir=sys.argv[1]))
daemon = Daemon([engines], live=LiveBoard(), heartbeats=HeartbeatRegistry())
sys.exit(leave(asyncio.run(daemon.run())))
"""


def test_sigterm_while_onnx_runtime_loads_a_model_exits_cleanly_not_with_sigabrt(tmp_path: Path) -> None:
    # A review: SIGTERM 10-60 ms after an engine loaded, while the next loaded, ended in "terminate called
    # without an active exception" and exit status 134 (SIGABRT) in 5 of 6 runs: the interpreter exited
    # around the engine-load thread inside ONNX Runtime, and systemd took the stop for a failure
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", LOADING_FOR_REAL, str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err[-2000:]
            assert "terminate called" not in err
        finally:
            proc.kill()
            proc.wait()


def test_the_engines_may_load_longer_than_a_start_and_a_slow_start_says_how_long(
    monkeypatch, tmp_path
) -> None:
    # Found by a review: past 120 s the engines were marked 'failed to start: ' (an empty reason) while
    # they went on loading, and attention and KT, started next, found no engine until a restart.
    import asyncio

    from edge_agent import daemon as daemon_module
    from edge_agent.config import InferenceSettings, PathSettings
    from edge_agent.inference.engine_set import EngineSet
    from edge_agent.inference.manifest import load_manifests
    from edge_agent.lifecycle import Health, HeartbeatRegistry
    from edge_agent.live import LiveBoard

    monkeypatch.setattr(daemon_module, "START_TIMEOUT_S", 0.5)

    class Loading(EngineSet):
        def _load(self, manifest):
            time.sleep(1.5)
            return super()._load(manifest)

    class SlowCamera:
        name, essential = "attention", False

        async def start(self) -> None:
            await asyncio.sleep(5)

        async def stop(self) -> None:
            pass

        def health(self) -> Health:
            return Health(True)

    engines = Loading([load_manifests()["kt-step"]], InferenceSettings(backend="onnxruntime"),
                      PathSettings(cache_dir=tmp_path))
    daemon = daemon_module.Daemon([engines, SlowCamera()], live=LiveBoard(), heartbeats=HeartbeatRegistry())

    async def scenario() -> list[dict[str, object]]:
        task = asyncio.create_task(daemon.run())
        while daemon.state != "running":
            await asyncio.sleep(0.05)
        health = daemon.component_health()
        assert engines.get("kt-step") is not None
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
        return health

    health = {h["name"]: h for h in asyncio.run(scenario())}
    assert health["engines"]["ok"], health["engines"]
    assert health["attention"]["detail"] == "failed to start: did not start within 0.5 s"


def test_a_model_that_could_not_be_had_at_start_and_what_needs_it_start_on_a_later_try(
    monkeypatch, tmp_path
) -> None:
    # A review: the cache disk full at start, yunet could not be fetched and attention failed to start;
    # 150 s after the space was freed it still had not, nor would it for the rest of the term. Here the
    # mirror lacks the model at start and gets it later (a USB stick mounted late).
    import asyncio
    import shutil

    from edge_agent import daemon as daemon_module
    from edge_agent.assembly import Deferred
    from edge_agent.config import InferenceSettings, PathSettings
    from edge_agent.inference.engine_set import EngineSet
    from edge_agent.inference.fetch import MIRROR_ENV
    from edge_agent.inference.manifest import load_manifests
    from edge_agent.lifecycle import Health, HeartbeatRegistry
    from edge_agent.live import LiveBoard

    shared = os.environ.get(MIRROR_ENV)
    if not shared or not (Path(shared) / "yunet/yunet_s_dynamic.onnx").is_file():
        pytest.skip(f"${MIRROR_ENV} with yunet/yunet_s_dynamic.onnx is needed")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    monkeypatch.setattr(daemon_module, "RETRY_START_S", 0.3)
    paths = PathSettings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    engines = EngineSet([load_manifests()["yunet"]], InferenceSettings(backend="onnxruntime"), paths)

    class NeedsTheModel:
        name, essential = "attention", False

        def __init__(self) -> None:
            self.engine = engines.get("yunet")  # EngineError while it has not loaded

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        def health(self) -> Health:
            return Health(True, "analysing")

    daemon = daemon_module.Daemon([engines, Deferred("attention", NeedsTheModel)], live=LiveBoard(),
                                  heartbeats=HeartbeatRegistry())

    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        task = asyncio.create_task(daemon.run())
        while daemon.state != "running":
            await asyncio.sleep(0.05)
        before = {h["name"]: h for h in daemon.component_health()}["attention"]
        (mirror / "yunet").mkdir()
        shutil.copy(Path(shared) / "yunet/yunet_s_dynamic.onnx", mirror / "yunet")
        for _ in range(200):
            after = {h["name"]: h for h in daemon.component_health()}["attention"]
            if after["ok"]:
                break
            await asyncio.sleep(0.05)
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
        return before, after

    before, after = asyncio.run(scenario())
    assert not before["ok"] and "could not be obtained" in str(before["detail"])
    assert after == {"name": "attention", "ok": True, "detail": "analysing"}


def test_a_refused_reload_stops_being_said_once_the_file_on_disk_is_mended(monkeypatch, tmp_path) -> None:
    # A review: after a reload was refused (web.port = 210030), /readyz said "not ready" even once the file
    # was mended, until someone sent another reload
    import asyncio

    from edge_agent import daemon as daemon_module
    from edge_agent.config import start_problems
    from edge_agent.lifecycle import HeartbeatRegistry
    from edge_agent.live import LiveBoard
    from tests.core.test_config import _valid_config_text

    monkeypatch.setattr(daemon_module, "RECHECK_CONFIG_S", 0.2)
    good = _valid_config_text(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(good.replace('token_file = ""\n', 'token_file = ""\nport = 210030\n'))
    daemon = daemon_module.Daemon([], live=LiveBoard(), heartbeats=HeartbeatRegistry(),
                                  restart_check=lambda: start_problems(path))

    async def scenario() -> tuple[bool, bool]:
        task = asyncio.create_task(daemon.run())
        while daemon.state != "running":
            await asyncio.sleep(0.05)
        daemon.request_restart("SIGHUP (a reload)")  # refused: the board runs on
        while daemon.config_refused is None:  # checked on a thread
            await asyncio.sleep(0.02)
        refused = daemon.readiness()[0]
        path.write_text(good)  # IT mends the file
        await asyncio.sleep(1.0)
        mended = daemon.readiness()[0]
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
        return refused, mended

    assert asyncio.run(scenario()) == (False, True)


def test_a_reload_checks_the_config_off_the_event_loop(tmp_path) -> None:
    # A review: the reload's check writes a file in the state folder; run on the loop, a disk stall of 8 s
    # froze the teacher view, the answers and the watchdog's pings for 8 s. Here the check takes 1.5 s.
    import asyncio

    from edge_agent import daemon as daemon_module
    from edge_agent.lifecycle import HeartbeatRegistry
    from edge_agent.live import LiveBoard

    def slow_check() -> list[tuple[str, str]]:
        time.sleep(1.5)  # a state folder on a disk that stalls
        return []

    daemon = daemon_module.Daemon([], live=LiveBoard(), heartbeats=HeartbeatRegistry(),
                                  restart_check=slow_check)

    async def scenario() -> tuple[float, int]:
        task = asyncio.create_task(daemon.run())
        while daemon.state != "running":
            await asyncio.sleep(0.05)
        gaps = [0.0]

        async def ticking() -> None:  # what the teacher view's requests and the watchdog's pings need
            last = time.monotonic()
            while not task.done():
                await asyncio.sleep(0.05)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(ticking())
        await asyncio.sleep(0.1)
        daemon.request_restart("SIGHUP (a reload)")
        code = await task
        await ticker
        return max(gaps), code

    longest, code = asyncio.run(scenario())
    assert code == daemon_module.RESTART_EXIT  # the config would start: the reload went ahead
    assert longest < 0.5, f"the event loop stood still {longest:.1f} s"

