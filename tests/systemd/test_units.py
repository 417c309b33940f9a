"""The shipped systemd units: `systemd-analyze verify` accepts them and the daemon's sandbox rates an
exposure of at most 3.0 in `systemd-analyze security --offline=true`.

verify needs ExecStart's binary to exist, so the units are checked inside a throw-away root that holds
them, a copy of the host's own unit library (sysinit.target and friends) and an executable at the
path the units name; that checks the unit syntax and the path, not the daemon itself.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
AGENT_BIN = "/opt/edge-agent/venv/bin/edge-agent"
SHIPPED = ("edge-agent.service", "edge-agent-engines.service", "edge-agent-retry.timer",
           "edge-agent-retry.service")
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (apt install systemd)"
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def unit_root(tmp_path: Path) -> Path:
    if HOST_UNITS is None:
        pytest.skip("no systemd unit library on this machine to verify against")
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    for unit in SHIPPED:
        shutil.copy(UNITS / unit, system / unit)
    for command in (AGENT_BIN, "/usr/bin/systemctl"):
        binary = root / command.lstrip("/")
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/sh", root / "bin/sh")
    return root


def test_units_pass_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    root = unit_root(tmp_path)
    result = analyze("verify", f"--root={root}", *(f"/etc/systemd/system/{unit}" for unit in SHIPPED))
    # Unknown keys or bad values are only warnings to verify (exit 0), so any output fails the test.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    root = unit_root(tmp_path)
    (root / AGENT_BIN.lstrip("/")).unlink()
    result = analyze("verify", f"--root={root}", "/etc/systemd/system/edge-agent.service")
    assert result.returncode != 0 and "is not executable" in result.stderr


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


def test_daemon_unit_exposure_is_at_most_3() -> None:
    assert exposure(UNITS / "edge-agent.service") <= 3.0


def test_engine_build_unit_is_sandboxed_too() -> None:
    assert exposure(UNITS / "edge-agent-engines.service") <= 3.0


def test_retry_unit_runs_as_root_with_nothing_but_systemctl() -> None:
    assert exposure(UNITS / "edge-agent-retry.service") <= 1.0


def read_unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_daemon_unit_settings_the_daemon_relies_on() -> None:
    unit = read_unit("edge-agent.service")
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["User"] == "edge-agent" and "video" in service["SupplementaryGroups"]
    assert int(service["WatchdogSec"]) > 0 and int(service["RestartSec"]) >= 5
    assert "PrivateDevices" not in service  # it would hide the GPU and the camera
    assert "MemoryDenyWriteExecute" not in service  # CUDA/TensorRT JIT need W+X pages
    assert service["DevicePolicy"] == "closed"
    assert int(service["LimitNOFILE"]) >= 4 * 1024  # above the connection caps of both HTTP ports
    assert unit["Unit"]["StartLimitBurst"] and "edge-agent-engines.service" in unit["Unit"]["After"]
    engines = read_unit("edge-agent-engines.service")
    assert engines["Service"]["Type"] == "oneshot" and engines["Unit"]["Before"] == "edge-agent.service"
    assert "engines-built.stamp" in engines["Service"]["ExecCondition"]


def test_engine_build_runs_on_first_boot_and_after_an_upgrade_only_and_a_failed_one_once_a_boot(
    tmp_path: Path,
) -> None:
    import shlex

    service = read_unit("edge-agent-engines.service")["Service"]
    version, boot = tmp_path / "VERSION", tmp_path / "boot_id"
    places = {
        "/opt/edge-agent/VERSION": str(version),
        "/var/cache/edge-agent/": f"{tmp_path}/",
        "/proc/sys/kernel/random/boot_id": str(boot),
        "/etc/edge-agent/config.toml": str(tmp_path / "config.toml"),
        "$$": "$",  # systemd's escape for a literal $
    }
    # The package database as JetPack's dpkg would answer for TensorRT (this machine has none installed)
    tensorrt = tmp_path / "tensorrt-packages"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(f"#!/bin/sh\ncat {tensorrt}\n")
    (bin_dir / "dpkg-query").chmod(0o755)
    tensorrt.write_text("libnvinfer10 10.3.0.30-1+cuda12.5\n")

    def run(key: str, result: str = "success") -> int:
        argv = shlex.split(service[key])
        for old, new in places.items():
            argv = [a.replace(old, new) for a in argv]
        env = {"SERVICE_RESULT": result, "PATH": f"{bin_dir}:/usr/bin:/bin"}
        return subprocess.run(argv, timeout=10, check=False, env=env).returncode

    version.write_text("0.1.0\n")
    boot.write_text("boot-1\n")
    assert run("ExecCondition") == 0  # first boot: build
    assert run("ExecStartPost") == 0 and run("ExecStopPost") == 0
    assert run("ExecCondition") == 1  # same version: systemd skips the unit
    version.write_text("0.2.0\n")
    assert run("ExecCondition") == 0  # upgraded: build again
    run("ExecStopPost", result="exit-code")  # ...which fails (no ExecStartPost after a failure)
    assert run("ExecCondition") == 1  # the daemon restarts: no second attempt in this boot
    boot.write_text("boot-2\n")
    assert run("ExecCondition") == 0  # the next boot tries again
    assert run("ExecStartPost") == 0 and run("ExecStopPost") == 0
    assert run("ExecCondition") == 1
    # a skip (systemd runs ExecStopPost after one too) is no failure: with the built stamp deleted by hand,
    # the next start builds (a review: it was noted as failed, and nothing built for the rest of the boot)
    run("ExecStopPost", result="exec-condition")
    (tmp_path / "engines-built.stamp").unlink()
    assert run("ExecCondition") == 0
    assert run("ExecStartPost") == 0 and run("ExecCondition") == 1
    tensorrt.write_text("libnvinfer10 10.3.0.31-1+cuda12.6\n")  # a JetPack update of TensorRT alone
    assert run("ExecCondition") == 0
    tensorrt.write_text("")  # no TensorRT at all (dpkg-query fails): the version alone decides
    assert run("ExecStartPost") == 0 and run("ExecCondition") == 1
    # round 2: the build takes the config's models (a camera switched on later needs YuNet and FSA-Net):
    # a changed config builds again
    (tmp_path / "config.toml").write_text("[camera]\nenabled = true\n")
    assert run("ExecCondition") == 0
    assert run("ExecStartPost") == 0 and run("ExecCondition") == 1


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="no dpkg here")
def test_the_engine_build_stamp_holds_the_package_versions_dpkg_reports(tmp_path: Path) -> None:
    # A second review: a dpkg-query format of "$${Package} $${Version}" reached the shell as "${Package}
    # ${Version}" inside double quotes, expanded to nothing, so the stamp held a space per package and a
    # TensorRT update changed nothing. Run with the real dpkg-query, dpkg's own package for libnvinfer.
    import shlex

    line = read_unit("edge-agent-engines.service")["Service"]["ExecStartPost"]
    (tmp_path / "VERSION").write_text("0.1.0\n")
    places = {"/opt/edge-agent/VERSION": str(tmp_path / "VERSION"), "/var/cache/edge-agent/": f"{tmp_path}/",
              "libnvinfer[0-9]*": "dpkg", "$$": "$"}
    for old, new in places.items():
        line = line.replace(old, new)
    assert subprocess.run(shlex.split(line), timeout=10, check=False).returncode == 0
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    assert (tmp_path / "engines-built.stamp").read_text() == f"0.1.0\ndpkg\t{version}\n"


def _values(name: str, key: str) -> list[str]:
    text = (UNITS / name).read_text(encoding="utf-8")
    return re.findall(rf"^{key}=(.*)$", text, flags=re.MULTILINE)


def test_engine_build_reaches_the_same_gpu_nodes_as_the_daemon_and_can_fetch_models() -> None:
    # It builds on the same GPU: a node the daemon needs and the build lacks fails the build (exit 3)
    # on every boot. And on a first boot no model is in the cache yet, so it must be able to fetch them.
    daemon = set(_values("edge-agent.service", "DeviceAllow")) - {"char-video4linux rw"}
    build = set(_values("edge-agent-engines.service", "DeviceAllow"))
    assert daemon <= build, sorted(daemon - build)
    assert "/dev/host1x-fence rw" in build
    families = _values("edge-agent-engines.service", "RestrictAddressFamilies")[0].split()
    assert {"AF_INET", "AF_INET6"} <= set(families)
    assert not _values("edge-agent-engines.service", "PrivateNetwork")


def test_the_broker_hosts_crl_timer_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """provisioning/mosquitto/edge-agent-crl.{service,timer}, for the machine with the fleet CA."""
    root = unit_root(tmp_path)
    system = root / "etc/systemd/system"
    for unit in ("edge-agent-crl.service", "edge-agent-crl.timer"):
        shutil.copy(REPO / "provisioning/mosquitto" / unit, system / unit)
    ca_bin = root / "opt/edge-agent/venv/bin/edge-agent-ca"
    ca_bin.write_text("#!/bin/sh\nexit 0\n")
    ca_bin.chmod(0o755)
    result = analyze("verify", f"--root={root}", "/etc/systemd/system/edge-agent-crl.timer",
                     "/etc/systemd/system/edge-agent-crl.service")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_each_units_documentation_is_a_file_install_sh_puts_on_the_board() -> None:
    # A review: Documentation= named /usr/share/doc/edge-agent/README.md, which nothing installs, so
    # `systemctl help edge-agent` on a board found nothing. install.sh copies the README into the release,
    # reached as /opt/edge-agent/app.
    copied = re.search(r"^for part in (.*); do$", (REPO / "provisioning/install.sh").read_text(), re.M)
    assert copied is not None
    for name in SHIPPED:
        docs = re.findall(r"^Documentation=file:(\S+)$", (UNITS / name).read_text(), re.M)
        assert docs, name
        for doc in docs:
            part = doc.removeprefix("/opt/edge-agent/app/")
            assert part != doc and part.split("/")[0] in copied.group(1).split(), (name, doc)
            assert (REPO / part).is_file(), (name, doc)
