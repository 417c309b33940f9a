"""`edge-agent run` as systemd runs it: sd_notify, watchdog, signals, restart without losing anything."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.kt.package import KTPackage
from tests.system.harness import (
    DaemonProcess,
    NotifySocket,
    answer,
    http,
    local_config,
    post_answers,
    write_config,
)

WATCHDOG_USEC = 2_000_000
STUDENTS = [f"stu-{n:02d}" for n in range(6)]


def outbox_rows(state_dir: Path) -> dict[str, tuple[int, str, str]]:
    """message_id -> (seq, stream, state), read straight from the daemon's database (read-only)."""
    conn = sqlite3.connect(f"file:{state_dir / 'edge-agent.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT message_id, seq, stream, state FROM outbox").fetchall()
    finally:
        conn.close()
    return {str(m): (int(seq), str(stream), str(state)) for m, seq, stream, state in rows}


def wait_for_stream(state_dir: Path, stream: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s == stream for _, s, _ in outbox_rows(state_dir).values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {stream} row reached the outbox within {timeout} s")


def stop_with(daemon: DaemonProcess, notify: NotifySocket, sig: signal.Signals) -> float:
    began = time.monotonic()
    daemon.signal(sig)
    code = daemon.wait(10)
    took = time.monotonic() - began
    assert code == 0, f"exit {code} after {sig.name}:\n{daemon.output()[-3000:]}"
    stopping = notify.with_key("STOPPING")
    assert stopping and stopping[-1]["STOPPING"] == "1", notify.snapshot()
    return took


def class_answers(package: KTPackage, round_: int) -> list[dict[str, Any]]:
    items = package.items[:4]
    return [
        answer(student, items[(n + round_) % 4].id, items[(n + round_) % 4].skill_id, (n + round_) % 3 != 0,
               f"r{round_}-{n}")
        for n, student in enumerate(STUDENTS)
    ]


def test_run_notifies_systemd_survives_sigterm_and_restarts_with_state(
    tmp_path: Path, faces_dir: Path, model_mirror: Path, notify: NotifySocket,
    daemons: Callable[..., DaemonProcess], package: KTPackage,
) -> None:
    cfg = local_config(tmp_path, faces=faces_dir, model_mirror=model_mirror)
    config = write_config(tmp_path / "config.toml", cfg)
    state_dir = Path(cfg["paths"]["state_dir"])
    base = f"http://127.0.0.1:{cfg['web']['port']}"

    first = daemons(config, notify, tmp_path / "run1.log", watchdog_usec=WATCHDOG_USEC).start()
    # The camera may report "starting" for a moment after every component started: wait for healthy.
    running = first.wait_running(healthy=True)
    ready = notify.with_key("READY")
    assert len(ready) == 1 and ready[0]["READY"] == "1"
    assert ready[0]["MAINPID"] == str(first.pid)
    assert ready[0]["STATUS"].startswith("starting")
    assert running["STATUS"] == "running: all components healthy"
    assert http("GET", f"{base}/readyz") == (200, {"status": "ready", "reasons": []})

    results = post_answers(base, class_answers(package, 0)) + post_answers(base, class_answers(package, 1))
    assert all(r["status"] == "applied" for r in results)
    student = results[0]["student"]
    status, before = http("GET", f"{base}/api/v1/students/{student}/mastery")
    assert status == 200 and before["answers"] == 2

    # Pings every WATCHDOG_USEC/2: systemd kills the service when a gap reaches WATCHDOG_USEC.
    time.sleep(2.6)
    pings = [t for t, m in notify.messages if "WATCHDOG" in m]
    assert len(pings) >= 2
    assert max(b - a for a, b in itertools.pairwise(pings)) < WATCHDOG_USEC / 1e6

    wait_for_stream(state_dir, "attention", 15)  # a camera window from the image folder
    took = stop_with(first, notify, signal.SIGTERM)
    assert took < 10
    rows_after_first = outbox_rows(state_dir)
    streams = {stream for _, stream, _ in rows_after_first.values()}
    assert "kt_class" in streams, rows_after_first  # the unfinished lesson is queued on the way out
    assert "attention" in streams, rows_after_first

    notify.clear()
    second = daemons(config, notify, tmp_path / "run2.log", watchdog_usec=WATCHDOG_USEC).start()
    second.wait_running()
    status, after = http("GET", f"{base}/api/v1/students/{student}/mastery")
    assert status == 200
    assert after == before
    # The same answer sent again (a clicker retrying across the restart) is recognised, not counted twice.
    again = post_answers(base, class_answers(package, 1)[:1])
    assert again[0]["status"] == "duplicate"
    assert http("GET", f"{base}/api/v1/students/{student}/mastery")[1]["answers"] == 2
    post_answers(base, class_answers(package, 2))

    stop_with(second, notify, signal.SIGINT)
    rows_after_second = outbox_rows(state_dir)
    # Nothing queued before the restart was lost or renumbered (MQTT is off: rows wait for sync).
    for message_id, row in rows_after_first.items():
        assert rows_after_second.get(message_id) == row
    assert len(rows_after_second) > len(rows_after_first)
    seqs = sorted(seq for seq, _, _ in rows_after_second.values())
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_a_key_this_release_does_not_know_is_named_in_the_log_and_the_board_still_starts(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess],
) -> None:
    # Found by the upgrade audit: rolled back, a release refused a config holding a newer release's key
    # (exit 1, a crash loop under Restart=on-failure) until someone edited the config on the board.
    cfg = local_config(tmp_path, faces=None)
    cfg["kt"]["max_pupils"] = 20000
    cfg["future_section"] = {"enabled": True}
    config = write_config(tmp_path / "config.toml", cfg)
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    assert "kt.max_pupils (line" in daemon.output() and "future_section" in daemon.output()
    assert "newer release's key after a rollback" in daemon.output()
    check = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", "--no-files", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert check.returncode == 1 and "kt.max_pupils" in check.stderr  # where configs are written: strict


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["kt"].update(microbatch_max="lots"), "kt.microbatch_max"),
        (lambda c: c["device"].update(device_id="bad id/with slash"), "device.device_id"),
    ],
    ids=["wrong-type", "bad-device-id"],
)
def test_broken_config_exits_1_naming_the_key_and_never_reports_ready(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess],
    edit: Callable[[dict[str, Any]], None], key: str,
) -> None:
    cfg = local_config(tmp_path, faces=None)
    edit(cfg)
    daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "run.log").start()
    assert daemon.wait(20) == 1
    assert key in daemon.stderr()
    assert notify.snapshot() == []  # not even a STATUS: nothing started
    assert not (tmp_path / "state" / "edge-agent.db").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "yunet.toml").write_text("[model\nname = "), "yunet.toml is not valid TOML"),
        (lambda d: (d / "kt-step.toml").unlink(), "no engine manifest for ['kt-step']"),
    ],
    ids=["broken-toml", "missing"],
)
def test_a_damaged_engine_manifest_stops_the_start_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], object], message: str,
) -> None:
    from edge_agent import assembly
    from edge_agent.config import load_config
    from edge_agent.inference.manifest import ENGINES_DIR, load_manifests

    engines = tmp_path / "engines"
    engines.mkdir()
    for path in ENGINES_DIR.glob("*.toml"):
        (engines / path.name).write_bytes(path.read_bytes())
    damage(engines)
    monkeypatch.setattr(assembly, "load_manifests", lambda: load_manifests(engines))
    config = load_config(write_config(tmp_path / "config.toml", local_config(tmp_path, faces=None)))
    assert asyncio.run(assembly.run_daemon(config)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("cannot start: ") and message in errors[0]
    assert not (tmp_path / "state" / "edge-agent.db").exists()


def test_world_readable_secret_refuses_to_start(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    cfg = local_config(tmp_path, faces=None)
    Path(cfg["device"]["pseudonym_secret_file"]).chmod(0o644)
    daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "run.log").start()
    assert daemon.wait(20) == 1
    stderr = daemon.stderr()
    assert "device.pseudonym_secret_file" in stderr and "chmod 600" in stderr
    assert notify.snapshot() == []



def test_store_that_cannot_open_fails_the_start_without_ready(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    cfg = local_config(tmp_path, faces=None)
    # a folder where the database goes (a botched image build): nothing can be stored. (A state_dir that
    # is a file is refused by the config check, before any start.)
    (Path(cfg["paths"]["state_dir"]) / "edge-agent.db").mkdir()
    daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "run.log").start()
    assert daemon.wait(20) == 1
    assert notify.with_key("READY") == []
    statuses = [m["STATUS"] for m in notify.with_key("STATUS")]
    assert statuses and statuses[-1].startswith("failed: store"), statuses
    assert "essential component failed" in daemon.output()

def test_a_second_daemon_on_the_same_state_directory_refuses_to_start_and_the_first_runs_on(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # A review: `edge-agent run --config <the service's file>` by hand beside the service started a second
    # daemon on the one database; both synced, under the same MQTT client id, and the cloud got every
    # attention window twice under two seqs.
    cfg = local_config(tmp_path, faces=None)
    config = write_config(tmp_path / "config.toml", cfg)
    first = daemons(config, notify, tmp_path / "first.log").start()
    assert notify.wait_for(lambda m: "READY" in m, timeout=30)
    second = daemons(config, None, tmp_path / "second.log").start()
    assert second.wait(30) == 1
    said = second.output()
    assert f"another edge-agent (pid {first.pid}) runs on {cfg['paths']['state_dir']}" in said, said
    assert "systemctl stop edge-agent" in said
    assert first.proc is not None and first.proc.poll() is None  # the service runs on


def test_sigterm_exits_within_10_s_while_the_broker_hangs_in_connect(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # A broker that accepts TCP but never answers (overloaded broker, firewall or TLS middlebox).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cfg = local_config(tmp_path, faces=None, mqtt_port=silent.getsockname()[1])
        cfg["mqtt"]["connect_timeout_s"] = 30.0  # a slow-uplink setting; makes the wait deterministic
        daemon = daemons(write_config(tmp_path / "config.toml", cfg), notify, tmp_path / "run.log").start()
        daemon.wait_running()
        time.sleep(0.5)
        daemon.signal(signal.SIGTERM)
        try:
            code = daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()  # fail now, not after the 30 s connect wait
            raise AssertionError("still running 10 s after SIGTERM (systemd stop promise broken)") from None
    assert code == 0


def test_a_board_with_a_class_roster_takes_its_students_and_refuses_invented_ids(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage,
) -> None:
    # Security audit finding 6: a holder of the web token could push every real student out of
    # kt.max_students with invented ids. The roster is made by the CLI from the school's list.
    cfg = local_config(tmp_path, faces=None)
    cfg["kt"]["roster_file"] = str(tmp_path / "roster.txt")
    config = write_config(tmp_path / "config.toml", cfg)
    (tmp_path / "class.txt").write_text("\n".join(STUDENTS) + "\n")
    made = subprocess.run(
        [sys.executable, "-m", "edge_agent", "kt", "roster", "set", str(tmp_path / "class.txt"),
         "--config", str(config)], capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0 and f"{len(STUDENTS)} students" in made.stdout, made.stdout + made.stderr
    base = f"http://127.0.0.1:{cfg['web']['port']}"
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    assert all(r["status"] == "applied" for r in post_answers(base, class_answers(package, 0)))
    invented = answer("stu-99", package.items[0].id, package.items[0].skill_id, True, "x-1")
    status, body = http("POST", f"{base}/api/v1/answers", invented)
    assert status == 400 and body["field"] == "student_id" and "class roster" in body["error"]
    assert f"kt.roster_file: {len(STUDENTS)} students" in daemon.output()
    assert "stu-0" not in (tmp_path / "roster.txt").read_text()
    # A roster damaged by hand: the board keeps the last one read and says so where IT looks (/readyz,
    # systemd's STATUS line, edge_component_up), not only once in the log.
    good = (tmp_path / "roster.txt").read_text()
    (tmp_path / "roster.txt").write_text(good + "stu-7\n")
    deadline = time.monotonic() + 15
    while (ready := http("GET", f"{base}/readyz"))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    status, body = ready
    assert status == 503 and any(
        r.startswith("kt.roster_file: ") and "line" in r and "what was read before stays in use" in r
        for r in body["reasons"]
    ), body
    assert all(r["status"] == "applied" for r in post_answers(base, class_answers(package, 1)))
    assert notify.wait_for(lambda m: "kt.roster_file" in m.get("STATUS", ""), timeout=15)
    (tmp_path / "roster.txt").write_text(good)
    deadline = time.monotonic() + 15
    while http("GET", f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert http("GET", f"{base}/readyz")[0] == 200


def test_a_board_takes_answers_from_a_clickers_own_token_and_nothing_else_from_it(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage,
) -> None:
    from tests.web.harness import non_loopback_ipv4

    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    cfg = local_config(tmp_path, faces=None)
    cfg["web"].update(host="0.0.0.0", client_tokens_file=str(tmp_path / "secrets" / "web-clients"))
    config = write_config(tmp_path / "config.toml", cfg)
    made = subprocess.run(
        [sys.executable, "-m", "edge_agent", "web", "clients", "add", "acme-3a", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    token = made.stdout.splitlines()[0].split(": ", 1)[1]
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    base = f"http://{address}:{cfg['web']['port']}"

    def clicker_post(event: str) -> int:
        body = {**class_answers(package, 0)[0], "client_event_id": event}
        request = urllib.request.Request(
            f"{base}/api/v1/answers", method="POST", headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            data=json.dumps(body).encode(),
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["status"] == "applied"
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert clicker_post("c-0") == 200
    refused = urllib.request.Request(f"{base}/api/v1/live", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(refused, timeout=10)
    assert caught.value.code == 403 and json.loads(caught.value.read())["error"] == "client_scope"
    assert "web.client_tokens_file: 1 clicker tokens" in daemon.output()
    assert notify.wait_for(lambda m: m.get("STATUS", "").startswith("running: all components healthy"), 10)
    # IT deletes the file: every clicker token is refused within seconds (a review found them still
    # taken 10 s after, and the whole board 503 in /readyz); the board itself stays ready.
    (tmp_path / "secrets" / "web-clients").unlink()
    deadline = time.monotonic() + 15
    while (status := clicker_post(f"c-{time.monotonic()}")) == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 403  # as any LAN request without a token, on a board without web.token_file
    assert "web-clients is gone: no clicker tokens: every clicker is refused" in daemon.output()
    ready = http("GET", f"http://127.0.0.1:{cfg['web']['port']}/readyz")
    assert ready[0] == 200, ready
    for action, code in ((["list"], 0), (["remove", "acme-3a"], 1)):
        said = subprocess.run(
            [sys.executable, "-m", "edge_agent", "web", "clients", *action, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        refused = "does not exist: a running edge-agent refuses every clicker token"
        assert said.returncode == code and refused in said.stdout, said.stdout + said.stderr
    # And the next start, without the file, is a board without clicker tokens (a second review: it
    # refused to start, "web.client_tokens_file: secret file ... does not exist")
    daemon.stop()
    checked = subprocess.run([sys.executable, "-m", "edge_agent", "config", "check", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    daemons(config, notify, tmp_path / "run-2.log").start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", cfg["web"]["port"]), 0.5):
            break
        time.sleep(0.2)
    assert clicker_post("c-after-restart") == 403


@pytest.mark.broker
def test_a_reload_is_a_clean_restart_that_reads_the_config_again(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess], package: KTPackage,
) -> None:
    # Review: SIGHUP (systemctl reload, a closed terminal) killed the daemon by its default action: no
    # STOPPING=1, the lesson's partial window lost; and the config_reload command the protocol names had no
    # handler. A reload is now a clean stop with exit status 75, which the unit starts again
    # (RestartForceExitStatus=75); the new process reads the config anew.
    import paho.mqtt.client as paho

    from tests.brokers import Broker

    broker = Broker(tmp_path / "broker").start()
    try:
        cfg = local_config(tmp_path, faces=None, mqtt_port=broker.port)
        config = write_config(tmp_path / "config.toml", cfg)
        base = f"http://127.0.0.1:{cfg['web']['port']}"

        first = daemons(config, notify, tmp_path / "run1.log").start()
        first.wait_running(healthy=True)
        post_answers(base, class_answers(package, 0))
        first.signal(signal.SIGHUP)
        assert first.wait(10) == 75, first.output()[-3000:]
        assert notify.with_key("STOPPING")[-1]["STOPPING"] == "1"
        assert "SIGHUP (a reload): stopping cleanly" in first.output()
        stopped = first.output()
        assert "component kt stopped" in stopped and "component store stopped" in stopped  # flushed

        notify.clear()
        second = daemons(config, notify, tmp_path / "run2.log").start()  # as systemd would start it
        second.wait_running(healthy=True)
        sender = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fleet-controller")
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        topic = "edge/district-t/school-t/board-t/cmd"
        reload = json.dumps({"type": "config_reload", "request_id": "r-7"})
        sender.publish(topic, reload, qos=1).wait_for_publish(5)
        assert second.wait(20) == 75, second.output()[-3000:]
        sender.loop_stop()
        sender.disconnect()
        assert "config_reload command r-7: stopping cleanly" in second.output()
    finally:
        broker.stop()


def test_a_reload_signal_during_a_stop_leaves_the_stop_a_clean_one(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # A review: SIGTERM then SIGHUP (a config_reload arriving while an admin stops the board) exited 75;
    # in systemd's stop job that failed the unit, and the retry timer started it again 15 minutes later.
    config = write_config(tmp_path / "config.toml", local_config(tmp_path, faces=None))
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGHUP)
    assert daemon.wait(20) == 0, daemon.output()[-3000:]


def test_reload_signals_until_the_process_ends_never_kill_it(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # A review: once the loop was closed SIGHUP had its default again, and a second one (an admin repeating
    # the reload) killed the process by SIGHUP, which Restart=on-failure takes for a clean end: board off.
    config = write_config(tmp_path / "config.toml", local_config(tmp_path, faces=None))
    daemon = daemons(config, notify, tmp_path / "run.log").start()
    daemon.wait_running()
    assert daemon.proc is not None
    deadline = time.monotonic() + 20
    while daemon.proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            daemon.signal(signal.SIGHUP)
        time.sleep(0.002)
    assert daemon.wait(5) == 75, daemon.output()[-3000:]


@pytest.mark.broker
def test_a_reload_onto_a_config_that_would_not_start_is_refused_and_the_board_runs_on(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess],
) -> None:
    # A review: config_reload was "accepted" and SIGHUP stopped the daemon onto a config with web.port =
    # 210030; the start refused it (exit 1), and the board stayed down (teacher view, answers, sync) until
    # someone edited the file on it. The cloud was never told why.
    import paho.mqtt.client as paho

    from tests.brokers import Broker

    broker = Broker(tmp_path / "broker").start()
    heard: list[dict[str, Any]] = []
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fleet-controller")
    try:
        cfg = local_config(tmp_path, faces=None, mqtt_port=broker.port)
        config = write_config(tmp_path / "config.toml", cfg)
        daemon = daemons(config, notify, tmp_path / "run.log").start()
        daemon.wait_running(healthy=True)
        write_config(config, {**cfg, "web": {**cfg["web"], "port": 210030}})

        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "not restarting" not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        said = "SIGHUP (a reload): not restarting, the config on disk would not start (web.port"
        assert said in daemon.output()
        # round 2: the board then read healthy; the broken file waits for the next restart (a power-off)
        with urllib.request.urlopen(f"http://127.0.0.1:{cfg['web']['port']}/api/v1/status", timeout=5) as got:
            status = json.loads(got.read())
        assert not status["ready"] and any("the config on disk would not start (web.port" in reason
                                           for reason in status["reasons"]), status["reasons"]

        watcher.on_message = lambda _c, _u, message: heard.append(json.loads(message.payload))
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("edge/district-t/school-t/board-t/heartbeat", qos=1)
        watcher.loop_start()
        reload = json.dumps({"type": "config_reload", "request_id": "r-bad"})
        watcher.publish("edge/district-t/school-t/board-t/cmd", reload, qos=1).wait_for_publish(5)

        def outcome() -> dict[str, Any] | None:
            for heartbeat in reversed(heard):
                for item in heartbeat.get("health", {}).get("commands", []):
                    if item.get("request_id") == "r-bad":
                        return dict(item)
            return None

        deadline = time.monotonic() + 15
        while outcome() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = outcome()
        assert refused is not None and refused["accepted"] is False, (refused, heard[-1:])
        assert "the config on disk would not start" in refused["detail"] and "web.port" in refused["detail"]
        time.sleep(1)
        assert daemon.proc is not None and daemon.proc.poll() is None  # still serving

        # round 2: a state_dir the daemon cannot write in (under the unit: any folder outside its own, for
        # ProtectSystem=strict) passed config check, and the start after the reload failed
        blocked = tmp_path / "not-a-folder"
        blocked.write_text("")
        write_config(config, {**cfg, "paths": {**cfg["paths"], "state_dir": str(blocked / "state")}})
        daemon.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        refusal = f"(paths.state_dir: {blocked / 'state'} cannot be made: {blocked} is a file, not a folder"
        while refusal not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert refusal in daemon.output()
        assert daemon.proc.poll() is None
        write_config(config, cfg)  # mended: the reload goes ahead
        daemon.signal(signal.SIGHUP)
        assert daemon.wait(10) == 75, daemon.output()[-3000:]
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        broker.stop()
