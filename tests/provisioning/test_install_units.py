"""install.sh on a provisioned board under a real systemd (tests/systemd/booted.py, this machine's
userland): an upgrade or a rollback brings the units provisioning installed in /etc/systemd/system along."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provisioning.test_install import _release
from tests.systemd.booted import BootedSystemd, running, unavailable

# second_python: 45 s that balance CI's two runs (the main one was 1.5-2 min longer)
pytestmark = [pytest.mark.slow, pytest.mark.second_python,
              pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

UNIT = "/etc/systemd/system/edge-agent.service"
SHIPPED_ENV = "Environment=ORT_DISABLE_TELEMETRY=1\n"


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[BootedSystemd]:
    with running(BootedSystemd(tmp_path / "systemd")) as system:
        yield system


def test_an_upgrade_installs_the_releases_changed_units_and_reloads_systemd(
    booted: BootedSystemd, tmp_path: Path
) -> None:
    fits = "import sys, ensurepip, venv; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))"
    if booted.run("/usr/bin/python3", "-c", fits, check=False).returncode != 0:
        pytest.skip("/usr/bin/python3 (3.10-3.12, with venv) is needed to build the board's venv")

    def install(source: Path, *args: str, restart: str = "auto") -> str:
        command = (f"cd {source} && EDGE_AGENT_RESTART={restart} PYTHON=/usr/bin/python3 EDGE_AGENT_EXTRAS= "
                   "sh provisioning/install.sh")
        return booted.run("sh", "-c", " ".join([command, *args]), timeout_s=600).stderr

    install(_release(tmp_path, "r1", "one\n"))
    # The units as provisioning installs them (its own code, from the release's venv)
    booted.run("/opt/edge-agent/venv/bin/python", "-c",
               "from pathlib import Path; from edge_agent.provisioning import system;"
               "system.install_units(Path('/'), system.units_dir(), system.DEFAULT_BIN)")
    booted.run("systemctl", "daemon-reload")
    assert "EDGE_TEST=2" not in booted.show("edge-agent.service", "Environment")["Environment"]

    # The next release changes the daemon's unit: before, it ran under the old one
    second = _release(tmp_path, "r2", "two\n")
    unit = second / "systemd/edge-agent.service"
    assert SHIPPED_ENV in unit.read_text()
    unit.write_text(unit.read_text().replace(SHIPPED_ENV, SHIPPED_ENV + "Environment=EDGE_TEST=2\n", 1))
    said = install(second)
    assert "updated in /etc/systemd/system: edge-agent.service" in said, said
    assert booted.run("cat", UNIT).stdout == unit.read_text()
    shown = booted.show("edge-agent.service", "Environment", "NeedDaemonReload")
    assert "EDGE_TEST=2" in shown["Environment"] and shown["NeedDaemonReload"] == "no", shown

    # A rollback brings the units of the release it goes back to, also when told not to restart (the units
    # waited for a restart that installed nothing: round-2 review)
    said = install(second, "--rollback", restart="no")
    assert "restart edge-agent to run it" in said, said
    assert booted.run("cat", UNIT).stdout == (tmp_path / "r1/systemd/edge-agent.service").read_text()
    assert "EDGE_TEST=2" not in booted.show("edge-agent.service", "Environment")["Environment"]


# The shipped unit's command, as a process that runs until stopped: what a restart would replace
STAND_IN = """[Service]
Type=simple
ExecStart=
ExecStart=/bin/sleep infinity
WatchdogSec=0
User=root
Group=root
SupplementaryGroups=
"""


def test_installing_the_running_release_again_leaves_the_daemon_running(
    booted: BootedSystemd, tmp_path: Path
) -> None:
    # A review: a second run of install.sh on the same release restarted edge-agent (try-restart), for
    # nothing, in the middle of a lesson
    fits = "import sys, ensurepip, venv; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))"
    if booted.run("/usr/bin/python3", "-c", fits, check=False).returncode != 0:
        pytest.skip("/usr/bin/python3 (3.10-3.12, with venv) is needed to build the board's venv")
    release = _release(tmp_path, "r1", "one\n")
    command = f"cd {release} && PYTHON=/usr/bin/python3 EDGE_AGENT_EXTRAS= sh provisioning/install.sh"
    booted.run("sh", "-c", command, timeout_s=600)
    booted.run("/opt/edge-agent/venv/bin/python", "-c",
               "from pathlib import Path; from edge_agent.provisioning import system;"
               "system.install_units(Path('/'), system.units_dir(), system.DEFAULT_BIN)")
    booted.run("sh", "-c", f"mkdir -p {UNIT}.d && printf '%s' '{STAND_IN}' > {UNIT}.d/stand-in.conf")
    booted.run("systemctl", "daemon-reload")
    booted.run("systemctl", "start", "edge-agent")
    before = booted.show("edge-agent.service", "InvocationID", "ActiveState")
    assert before["ActiveState"] == "active", before
    version = booted.run("cat", "/opt/edge-agent/VERSION").stdout

    again = booted.run("sh", "-c", command, timeout_s=600)
    assert booted.show("edge-agent.service", "InvocationID", "ActiveState") == before, again.stderr
    assert "nothing switched, edge-agent not restarted" in again.stdout
    assert booted.run("cat", "/opt/edge-agent/VERSION").stdout == version
