"""SIGKILL the publishing process at random moments, 50 times, and prove nothing is lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.config import MqttSettings
from edge_agent.sync.receiver import Receiver
from tests.brokers import Broker, mosquitto_available

# second_python: about 50 s, on JetPack 6's Python beside the main run in CI (which ended 105 s after it)
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.second_python]
CHILD = Path(__file__).with_name("kill_child.py")
REPO = Path(__file__).resolve().parents[2]
KILLS = 50


def start_child(db: Path, port: int, run_id: int, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(port), str(run_id), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_during_publishing_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    rng = random.Random(20261125)
    broker = Broker(tmp_path / "broker").start()
    receiver = Receiver(
        tmp_path / "recv.db", MqttSettings(host="127.0.0.1", port=broker.port, tls=False)
    ).start()
    db = tmp_path / "board.db"
    started = time.monotonic()
    killed_with_backlog = 0
    try:
        for run_id in range(KILLS):
            child = start_child(db, broker.port, run_id, count=60)
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read() if child.stderr else line
            time.sleep(rng.uniform(0.0, 0.12))
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            child.stdout.close()
            if child.stderr:
                child.stderr.close()
            conn = sqlite3.connect(db)
            killed_with_backlog += conn.execute("SELECT count(*) > 0 FROM outbox").fetchone()[0]
            conn.close()
        final = start_child(db, broker.port, KILLS, count=0)
        out, err = final.communicate(timeout=60)
        assert "drained" in out and "not drained" not in out, err
    finally:
        elapsed = time.monotonic() - started
    conn = sqlite3.connect(db)
    allocated = int(conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    try:
        assert receiver.wait_for_count("board-0001", allocated, 20)
        report = receiver.report("board-0001")
        items = receiver.items("board-0001")
    finally:
        receiver.stop()
        broker.stop()
    assert report["unique"] == allocated and report["max_seq"] == allocated and report["gaps"] == []
    keys = [(data["run"], data["n"]) for _seq, _stream, data in items]
    assert len(keys) == len(set(keys)), "a message was enqueued twice"
    for run_id in range(KILLS):  # each run's committed messages are a prefix: no hole inside a run
        ns = sorted(n for r, n in keys if r == run_id)
        assert ns == list(range(len(ns)))
    assert killed_with_backlog >= KILLS // 4, "the kills rarely landed while messages were waiting"
    print(
        f"kill loop: {KILLS} kills, {allocated} messages, {report['duplicates']} duplicates removed by "
        f"the receiver, {killed_with_backlog} kills with a backlog, {elapsed:.1f} s"
    )
