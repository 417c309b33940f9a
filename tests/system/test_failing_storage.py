"""A board whose storage fails under it: a real ext4 that the kernel remounts read-only (tests/ext4.py),
as a worn SD card or eMMC does, or that loses power. Nothing acknowledged is lost, clients are told to
retry, and the health, the systemd status and the metrics say what happened and what to do."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_agent.kt.package import KTPackage
from tests.ext4 import ext4_unavailable, failing_ext4
from tests.system.harness import (
    DaemonProcess,
    NotifySocket,
    answer,
    http,
    local_config,
    post_answers,
    write_config,
)

pytestmark = pytest.mark.skipif(ext4_unavailable() is not None, reason=str(ext4_unavailable()))


def config_on(
    state_dir: Path, tmp_path: Path, name: str, *, camera: tuple[Path, Path] | None = None, **kt: Any
) -> tuple[Path, dict[str, Any]]:
    """A board's config file with its state on ``state_dir`` (the same device secret each time), and what
    it says; ``camera``: its photo folder and model mirror; ``kt``: settings of its [kt] section."""
    faces, mirror = camera or (None, None)
    cfg = local_config(tmp_path, faces=faces, model_mirror=mirror)
    cfg["paths"]["state_dir"] = str(state_dir)
    cfg.setdefault("kt", {}).update(kt)
    return write_config(tmp_path / f"{name}.toml", cfg), cfg


def running_on(
    state_dir: Path, tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess],
    **options: Any,
) -> tuple[DaemonProcess, str, Path, dict[str, Any]]:
    """A daemon with its state on ``state_dir``, running and healthy (``options`` as for config_on); with
    its web address, its config file, and what that says."""
    config, cfg = config_on(state_dir, tmp_path, "config", **options)
    daemon = daemons(config, notify, tmp_path / "daemon.log").start()
    daemon.wait_running(60, healthy=True)
    return daemon, f"http://127.0.0.1:{cfg['web']['port']}", config, cfg


def store_health_once_failing(url: str, within_s: float = 10.0) -> dict[str, Any]:
    """The store's line in ``/api/v1/status`` once it says the store is unhealthy (or after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while True:
        _, state = http("GET", f"{url}/api/v1/status", timeout=3)
        store: dict[str, Any] = next(c for c in state["components"] if c["name"] == "store")
        if not store["ok"] or time.monotonic() > deadline:
            return store
        time.sleep(0.2)


def test_storage_turning_read_only_is_reported_answers_get_503_and_a_restart_says_why(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage
) -> None:
    items = package.items[:5]
    with failing_ext4(tmp_path / "disk") as storage:
        daemon, url, config, cfg = running_on(storage.path, tmp_path, notify, daemons)
        before = [answer(f"s{i}", it.id, it.skill_id, True, f"a{i}") for i, it in enumerate(items)]
        assert [r["status"] for r in post_answers(url, before)] == ["applied"] * 5

        storage.fail()
        after = [answer(f"s{i}", it.id, it.skill_id, False, f"b{i}") for i, it in enumerate(items)]
        status, body = http("POST", f"{url}/api/v1/answers", {"answers": after})
        assert status == 503 and "read-only" in body["error"] and "SD card or eMMC" in body["error"], body

        # Health, readiness and systemd's status line say it (they said "0 messages waiting" before)
        store = store_health_once_failing(url)
        assert not store["ok"] and store["detail"].startswith("writes fail since"), store
        assert "is read-only" in store["detail"], store
        assert http("GET", f"{url}/readyz")[0] == 503
        assert notify.wait_for(lambda m: m.get("STATUS", "").startswith("running: store: writes fail"), 10)
        _, metrics = http("GET", f"http://127.0.0.1:{cfg['metrics']['port']}/metrics")
        assert 'edge_component_up{component="store"} 0.0' in metrics

        # systemd would restart it (or the retry timer, later): it stops before READY and says why
        daemon.stop()
        again_notify = NotifySocket(tmp_path)
        try:
            again = daemons(config, again_notify, tmp_path / "again.log").start()
            assert again.wait(60) == 1
            assert not again_notify.with_key("READY")
        finally:
            again_notify.close()
        assert "read-only" in again.output() and "SD card or eMMC" in again.output(), again.output()[-3000:]

    # The storage checked as at the next boot: the five acknowledged answers are on it, the refused ones not
    storage.read_back(tmp_path / "fsck")
    try:
        copy = tmp_path / "copy"
        copy.mkdir()
        for part in (tmp_path / "fsck").glob("edge-agent.db*"):  # with its -wal: the last commits are there
            shutil.copy(part, copy / part.name)
    finally:
        subprocess.run(["umount", str(tmp_path / "fsck")], check=False, timeout=60)
    conn = sqlite3.connect(copy / "edge-agent.db")
    events = conn.execute("SELECT count(*) FROM kt_applied_events").fetchone()[0]
    answered = conn.execute("SELECT sum(answers) FROM kt_student_state").fetchone()[0]
    conn.close()
    assert (events, answered) == (5, 5)


def test_a_power_cut_loses_no_acknowledged_answer(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage
) -> None:
    # A power cut keeps what reached the disk, not what the kernel still held: the board acknowledges an
    # answer only after its commit, fsynced (synchronous=FULL), so every "applied" must be there after it.
    items = package.items[:10]
    with failing_ext4(tmp_path / "disk") as storage:
        daemon, url, _, _ = running_on(storage.path, tmp_path, notify, daemons)
        sent = []
        for batch in range(8):
            answers = [answer(f"s{i}", it.id, it.skill_id, (i + batch) % 3 > 0, f"e{batch}-{i}")
                       for i, it in enumerate(items)]
            assert [r["status"] for r in post_answers(url, answers)] == ["applied"] * len(items)
            sent += answers
        with storage.power_cut(tmp_path / "next-boot") as after:  # the daemon is still writing its state
            daemon.kill()
            config, cfg = config_on(after, tmp_path, "next-boot")
            url = f"http://127.0.0.1:{cfg['web']['port']}"
            again_notify = NotifySocket(tmp_path)
            again = daemons(config, again_notify, tmp_path / "again.log").start()
            try:
                again.wait_running(60, healthy=True)
                # each of the 80 acknowledged answers is known: sent again, none is applied twice
                results = post_answers(url, sent)
                assert [r["status"] for r in results] == ["duplicate"] * len(sent), results[:3]
            finally:
                again.stop()
                again_notify.close()
            conn = sqlite3.connect(after / "edge-agent.db")
            answered = conn.execute("SELECT sum(answers) FROM kt_student_state").fetchone()[0]
            conn.close()
            assert answered == len(sent)


def test_a_disk_that_stalls_delays_answers_and_loses_none(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage,
    faces_dir: Path, model_mirror: Path,
) -> None:
    # eMMC that stops answering for seconds (heavy writeback, a failing card), as `fsfreeze` makes a real
    # ext4 do: the clickers get a 503 to retry and the teacher view keeps answering, and what the clickers
    # sent is applied once. (The health check read the outbox's SQLite file on the event loop, and the
    # camera pause wrote its file there: a stalled disk hung every request until it came back.)
    items = package.items[:10]
    with failing_ext4(tmp_path / "disk") as storage:
        daemon, url, _, _ = running_on(storage.path, tmp_path, notify, daemons,
                                       camera=(faces_dir, model_mirror), feedback_timeout_s=2.0)
        first = [answer(f"s{i}", it.id, it.skill_id, True, f"a{i}") for i, it in enumerate(items)]
        assert [r["status"] for r in post_answers(url, first)] == ["applied"] * len(items)

        stalled = [answer(f"s{i}", it.id, it.skill_id, False, f"b{i}") for i, it in enumerate(items)]
        pool = ThreadPoolExecutor(1)
        try:
            with storage.frozen():
                froze = time.monotonic()
                # the teacher pauses the camera: kept across a restart, so written to the disk, which waits
                pausing = pool.submit(http, "POST", f"{url}/api/v1/camera/pause", {"minutes": 45}, 30)
                time.sleep(0.5)
                started = time.monotonic()
                status, body = http("POST", f"{url}/api/v1/answers", {"answers": stalled}, timeout=5)
                assert status == 503 and "no feedback within 2.0 s; retry" in body["error"], body
                assert time.monotonic() - started < 4
                for path in ("/api/v1/status", "/api/v1/live", "/api/v1/class/mastery"):
                    assert http("GET", url + path, timeout=3)[0] == 200, path
                # and IT is told where to look: the store's health names the disk once a write waits 5 s
                store = store_health_once_failing(url)
                assert not store["ok"] and "s for the disk: it is slow or stalled" in store["detail"], store
                assert http("GET", f"{url}/readyz", timeout=3)[0] == 503
                # past the answers' thread's heartbeat gap (10 s): waiting on the disk, it is not taken for
                # hung, so systemd's watchdog is still fed (a restart cannot unblock a disk)
                time.sleep(max(0.0, froze + 13.0 - time.monotonic()))
                pings = [t for t, m in notify.messages if "WATCHDOG" in m and t >= froze]
                assert max(b - a for a, b in itertools.pairwise([froze, *pings, time.monotonic()])) < 2.0
                assert "watchdog ping withheld" not in daemon.output()
        finally:
            pool.shutdown()  # after the thaw: the pause's write completes
        assert pausing.result()[0] == 200
        results = post_answers(url, stalled)  # the clickers' retry
        assert [r["status"] for r in results] == ["duplicate"] * len(items), results[:3]
        daemon.stop()
        conn = sqlite3.connect(storage.path / "edge-agent.db")
        answered = conn.execute("SELECT sum(answers) FROM kt_student_state").fetchone()[0]
        conn.close()
        assert answered == 2 * len(items)
