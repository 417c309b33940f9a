"""Log lines on stdout: the syslog priority prefix only where stdout is the journal stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.systemd.booted import BootedSystemd, running, unavailable

PROGRAM = """
import logging, sys
from edge_agent.logs import configure_logging
configure_logging("DEBUG", sys.argv[1])
log = logging.getLogger("edge_agent.test")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e"); log.critical("c")
"""


def run_logging(stdout_file: Path | None, journal_stream: str | None, fmt: str = "json") -> list[str]:
    """The lines a real process logs at each level, its stdout a file (or a pipe where None)."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    argv = [sys.executable, "-c", PROGRAM, fmt]
    if stdout_file is None:
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    with stdout_file.open("w") as out:
        subprocess.run(argv, env=env, stdout=out, check=True)
    return stdout_file.read_text().splitlines()


def stream_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.parametrize("fmt", ["json", "kv"])
def test_lines_to_the_journal_stream_carry_their_syslog_priority(tmp_path: Path, fmt: str) -> None:
    # Review: every line reached journald as priority 6 (info); `journalctl -p warning` showed none.
    out = tmp_path / "journal-stream"
    out.touch()
    lines = run_logging(out, stream_id(out), fmt)
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    plain = lines[2][3:]  # after the prefix, the line as before
    assert plain.startswith("{") if fmt == "json" else plain.startswith("level=warning ")


def test_stdout_that_is_not_the_journal_stream_keeps_plain_lines(tmp_path: Path) -> None:
    other, out = tmp_path / "other", tmp_path / "stdout"
    other.touch()
    out.touch()
    # JOURNAL_STREAM inherited from a service, stdout redirected to a file or a pipe (tests, the bench)
    for lines in (run_logging(out, stream_id(other)), run_logging(None, stream_id(other)),
                  run_logging(out, None), run_logging(out, "not-a-stream")):
        assert len(lines) == 5 and all(line.startswith("{") for line in lines), lines


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_journalctl_priority_warning_finds_the_warnings_of_a_service(tmp_path: Path) -> None:
    """Under a real systemd and journald (booted.py), a service logging as the daemon does: the journal
    keeps each line's priority, and the prefix is taken off the message."""
    with running(BootedSystemd(tmp_path / "systemd")) as system:
        # (no --wait: it needs D-Bus, which the booted systemd does not start)
        system.run("systemd-run", "--unit=edge-logs", "-p", "Type=exec",
                   f"--setenv=PYTHONPATH={Path(__file__).resolve().parents[2]}",
                   sys.executable, "-c", PROGRAM, "json")

        def messages(priority: str) -> list[str]:
            return system.run("journalctl", "--no-pager", "-o", "cat", "-u", "edge-logs", "-p", priority,
                              "--grep", "edge_agent.test", check=False).stdout.splitlines()

        deadline = time.monotonic() + 30
        while len(messages("debug")) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        warnings = messages("warning")
        assert [json.loads(line)["msg"] for line in warnings] == ["w", "e", "c"], warnings
        assert len(messages("debug")) == 5


@pytest.mark.parametrize("fmt", ["json", "kv"])
def test_a_file_name_that_is_not_utf8_is_logged_under_a_strict_utf8_locale(fmt: str) -> None:
    program = """
import logging, os, sys
from edge_agent.logs import configure_logging
configure_logging("INFO", sys.argv[1])
logging.getLogger("edge_agent.test").warning("skipping %s", os.fsdecode(b"/srv/\\xd5\\xc5.jpg"))
logging.getLogger("edge_agent.test").warning("照片 after")
"""
    # en_US.UTF-8, the board's locale under systemd, makes Python's stdout strict (C.UTF-8 does not).
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("JOURNAL_STREAM", None)
    done = subprocess.run([sys.executable, "-c", program, fmt], env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "Logging error" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "照片 after" in lines[1]
    if fmt == "json":
        assert json.loads(lines[0])["msg"] == "skipping " + os.fsdecode(b"/srv/\xd5\xc5.jpg")
    else:
        assert "skipping /srv/\\udcd5\\udcc5.jpg" in lines[0]
