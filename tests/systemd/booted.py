"""A real systemd as PID 1 of its own PID and mount namespaces, for running the shipped units for real.

It boots this machine's own systemd, or that of another userland given as a root folder (JetPack 6's
Ubuntu 22.04, made by scripts/jetpack-userland.sh), which then also runs every command given to run().
Nothing it writes reaches this machine or the root folder: /etc, /opt and /var (the whole root folder)
are overlays whose changes land in a test folder, and /run is its own tmpfs. Of the machine's own boot
nothing starts: every unit that the usual targets pull in is masked (tmpfiles would empty /tmp, udev would
handle this machine's devices), except journald, so `journalctl` shows what the units printed. Needs
root, unshare(1), nsenter(1) and systemd.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SYSTEMD = Path("/lib/systemd/systemd")
TARGET = "edge-test.target"
KEEP = ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket")
# Targets with real work behind them on a booted machine: mounts, swap, disks.
MASK_TARGETS = ("local-fs.target", "swap.target", "cryptsetup.target", "remote-fs.target",
                "veritysetup.target", "integritysetup.target", "getty.target")

OVERLAY_HOST = r"""
W=$1
for d in etc opt var; do
    mkdir -p "$W/upper/$d" "$W/work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/upper/$d,workdir=$W/work/$d" "/$d"
done
"""

# The root folder, with this machine's /dev and /sys and the folders the tests share with it (the
# repository, the models, the test's own folder) at the same paths; then it becomes / for good.
OVERLAY_ROOT = r"""
W=$1; ROOT=$2; shift 2
M=$W/root
mkdir -p "$W/upper/root" "$W/work/root" "$M"
mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$W/upper/root,workdir=$W/work/root" "$M"
mount --rbind /dev "$M/dev"
mount --rbind /sys "$M/sys"
mount -t proc proc "$M/proc"
for b in "$@"; do mkdir -p "$M$b"; mount --bind "$b" "$M$b"; done
rm -f "$M/etc/resolv.conf"; cp /etc/resolv.conf "$M/etc/resolv.conf"  # Ubuntu links it into /run
mkdir -p "$M/.host"
cd "$M"
pivot_root . .host
umount -l /.host
rmdir /.host
"""

BOOT = r"""
mount -t tmpfs tmpfs /run
: > /etc/fstab
rm -rf /var/log/journal/*  # this machine's own journal (in the overlay: only hidden, not deleted)
# a fresh board has no cache or state yet; what a run as root left on this machine (a model fetched
# 0600 as root: the daemon's user got 'Permission denied' on it, all components never healthy) is hidden
rm -rf /var/cache/edge-agent /var/lib/edge-agent
mask() { rm -f "/etc/systemd/system/$1"; ln -s /dev/null "/etc/systemd/system/$1"; }
for wants in /lib/systemd/system/*.wants /etc/systemd/system/*.wants; do
    [ -d "$wants" ] || continue
    for unit in "$wants"/*; do
        name=${unit##*/}
        case " $KEEP " in *" $name "*) continue ;; esac
        mask "$name"
    done
done
for t in $MASK_TARGETS; do mask "$t"; done
printf '[Unit]\nDescription=edge-agent tests\nDefaultDependencies=no\n' > /etc/systemd/system/edge-test.target
exec /lib/systemd/systemd --system --unit=edge-test.target --log-target=journal
"""


def unavailable() -> str | None:
    """Why a booted systemd cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces and overlay mounts)"
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.is_file():
        return f"{SYSTEMD} is not installed"
    return None


class BootedSystemd:
    def __init__(self, workdir: Path, root: Path | None = None, binds: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.root = root  # None: this machine's own userland
        self.binds = binds  # only with a root folder; this machine's folders are all there otherwise
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0  # systemd's pid, as this machine sees it
        self.version = 0  # systemd's major version, once booted

    def boot(self, timeout_s: float = 30.0) -> None:
        """Start systemd and wait until it runs; raises RuntimeError saying why it did not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"KEEP": " ".join(KEEP), "MASK_TARGETS": " ".join(MASK_TARGETS)}
        if self.root is None:
            script, args = OVERLAY_HOST + BOOT, [str(self.workdir)]
        else:
            script = OVERLAY_ROOT + BOOT
            args = [str(self.workdir), str(self.root), *(str(b.absolute()) for b in self.binds)]
        self.process = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "--mount-proc",
             "sh", "-euc", script, "boot", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"systemd did not boot: {err.strip()[-500:]}")
            self.pid = self.pid or self._find_pid()
            if self.pid and self.run("systemctl", "is-system-running", check=False).stdout.strip() in (
                "running", "degraded"
            ):
                self.version = int(self.run("systemctl", "--version").stdout.split()[1])
                return
            time.sleep(0.2)
        raise RuntimeError(f"systemd did not reach 'running' within {timeout_s:.0f} s")

    def _find_pid(self) -> int:
        """systemd is the child of unshare's child."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return 0
        if not pids:
            return 0
        try:  # the shell before it exec()s systemd is "sh"
            return int(pids[0]) if Path(f"/proc/{pids[0]}/comm").read_text().strip() == "systemd" else 0
        except OSError:
            return 0

    def run(self, *argv: str, check: bool = True, timeout_s: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A command inside: it sees the overlays (and runs in the root folder) and talks to this systemd."""
        done = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", *argv],
                              capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, check=False).stdout

    def shutdown(self) -> None:
        """Kill systemd and everything it started (the namespace ends with its PID 1)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)
        if self.process.stderr:
            self.process.stderr.close()
        # PrivateTmp= folders live in this machine's /tmp; killed, systemd could not remove them
        for folder in Path("/tmp").glob("systemd-private-*-edge-agent*.service-*"):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running(system: BootedSystemd) -> Iterator[BootedSystemd]:
    """``system`` booted for one test, which is skipped with the reason where it cannot boot; shut down
    after it whatever happens. One at a time on this machine (a lock across pytest workers and CI's two
    Python runs): they share its cgroup hierarchy, where two systemds each ran an edge-agent.service in
    the same cgroup and stopped each other's (11 failures in a CI run, none alone)."""
    with open(Path(tempfile.gettempdir()) / "edge-agent-tests-booted-systemd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            system.boot()
        except RuntimeError as exc:
            system.shutdown()
            pytest.skip(str(exc))
        try:
            yield system
        finally:
            system.shutdown()
