"""The operating-system side of provisioning: the system user, file ownership, systemd units.

On the running board (root ``/``) it uses the system's own tools (``systemd-sysusers``, ``systemctl``).
On a target root it enables units with the same symlinks ``systemctl enable`` makes, and where the root is
a userland (an image being built: it has ``etc/passwd`` and ``etc/group``) it adds the user there itself.
A root without them (a folder of files to copy onto an installed board) gets no user database. The
sysusers.d and tmpfiles.d snippets it installs create the user and fix ownership at an image's first boot,
or when run on the board after the copy (provisioning/README.md), which is also what makes an unprivileged
image build correct.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
from pathlib import Path

from edge_agent.config import DAEMON_USER
from edge_agent.errors import ProvisioningError
from edge_agent.provisioning.files import write_atomic

log = logging.getLogger(__name__)

USER = DAEMON_USER
UNITS = ("edge-agent.service", "edge-agent-engines.service")
# Installed, not enabled: edge-agent.service's OnFailure= starts the timer when systemd gave up on it.
RETRY_UNITS = ("edge-agent-retry.timer", "edge-agent-retry.service")
DEFAULT_BIN = "/opt/edge-agent/venv/bin/edge-agent"
SYSTEM_UID_RANGE = range(999, 100, -1)
COMMAND_TIMEOUT_S = 60


def units_dir() -> Path:
    """Where the shipped unit files live: the source tree, or the installed share directory."""
    for candidate in (Path(__file__).resolve().parents[2] / "systemd", Path("/opt/edge-agent/share/systemd")):
        if (candidate / UNITS[0]).is_file():
            return candidate
    raise ProvisioningError("cannot find the systemd unit files; pass --units-dir")


def _read_db(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_db(path: Path, rows: list[list[str]]) -> bool:
    return write_atomic(path, ("\n".join(":".join(r) for r in rows) + "\n").encode(), 0o644)


def ensure_user_in_root(root: Path) -> tuple[int, int, bool]:
    """Add the edge-agent group and user to ROOT/etc/{group,passwd} and to video/render where those
    groups exist; returns (uid, gid, changed). A root without both files is not a userland: it gets
    neither, and (0, 0): its files stay as written until sysusers.d and tmpfiles.d give them to the user."""
    passwd_path, group_path = root / "etc/passwd", root / "etc/group"
    users = _read_db(passwd_path) if passwd_path.is_file() else None
    groups = _read_db(group_path) if group_path.is_file() else None
    if users is not None and all(r[:1] == [USER] for r in users + (groups or [])):
        # a tree an older release made (edge-agent alone): copied onto a board it still wipes its users
        # (round 2 of the review; round 3: only then, a userland's root may be called toor)
        for path in (passwd_path, group_path):
            path.unlink(missing_ok=True)
        log.warning("removed %s and %s, which held edge-agent alone (made by a release before 2026-12-04): "
                    "copied onto a board they replaced its users", passwd_path, group_path)
        return 0, 0, True
    if users is None or groups is None:
        # Made here they held edge-agent alone, and copied onto a board (`cp -a roots/<id>/. /`) they
        # replaced its own: no root, no sudo group, a reflash. On the board sysusers.d makes the user,
        # tmpfiles.d and the units' StateDirectory= give it its files.
        return 0, 0, False
    if any(len(r) < 4 for r in users) or any(len(r) < 4 for r in groups):
        raise ProvisioningError(f"{passwd_path} or {group_path} has malformed lines; fix them first")
    changed = False
    user = next((r for r in users if r[0] == USER), None)
    if user is not None:
        uid, gid = int(user[2]), int(user[3])
    else:
        taken = {int(r[2]) for r in users if r[2].isdigit()} | {int(r[2]) for r in groups if r[2].isdigit()}
        uid = gid = next(i for i in SYSTEM_UID_RANGE if i not in taken)
        if not any(r[0] == USER for r in groups):
            groups.append([USER, "x", str(gid), ""])
        else:
            gid = int(next(r for r in groups if r[0] == USER)[2])
        users.append(
            [
                USER,
                "x",
                str(uid),
                str(gid),
                "edge-agent classroom daemon",
                "/var/lib/edge-agent",
                "/usr/sbin/nologin",
            ]
        )
        changed = True
    for row in groups:
        members = [m for m in row[3].split(",") if m]
        if row[0] in ("video", "render") and USER not in members:
            row[3] = ",".join([*members, USER])
            changed = True
    if changed:
        _write_db(group_path, groups)
        _write_db(passwd_path, users)
    return uid, gid, changed


def ensure_user_on_host(sysusers_conf: Path) -> tuple[int, int, bool]:
    try:
        entry = pwd.getpwnam(USER)
        return entry.pw_uid, entry.pw_gid, False
    except KeyError:
        pass
    run(["systemd-sysusers", str(sysusers_conf)])
    entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid, True


def chown_if_root(path: Path, uid: int, gid: int) -> bool:
    """Ownership can only be set by root; otherwise tmpfiles.d fixes it on the first boot."""
    if os.geteuid() != 0:
        return False
    info = path.stat()
    if (info.st_uid, info.st_gid) == (uid, gid):
        return False
    os.chown(path, uid, gid)
    return True


def install_units(root: Path, source: Path, agent_bin: str, *, daemon_enabled: bool = True) -> list[str]:
    """Copy units, sysusers.d and tmpfiles.d snippets into ROOT/etc and enable the daemon and the build.
    Without ``daemon_enabled`` (no certificate yet) the daemon is not enabled, and disabled where it was:
    it refuses to start without its certificate, and systemd started it again and again, every boot."""
    changed = []
    system = root / "etc/systemd/system"
    for unit in (*UNITS, *RETRY_UNITS):
        text = (source / unit).read_text(encoding="utf-8").replace(DEFAULT_BIN, agent_bin)
        if write_atomic(system / unit, text.encode(), 0o644):
            changed.append(f"unit {unit}")
        if unit in RETRY_UNITS:
            continue
        link = system / "multi-user.target.wants" / unit
        target = f"/etc/systemd/system/{unit}"
        if unit == UNITS[0] and not daemon_enabled:
            if link.is_symlink():
                link.unlink()
                changed.append(f"disabled {unit}")
            continue
        if not link.is_symlink() or os.readlink(link) != target:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(target)
            changed.append(f"enabled {unit}")
    for name, folder in (
        ("edge-agent.sysusers.conf", "sysusers.d"),
        ("edge-agent.tmpfiles.conf", "tmpfiles.d"),
    ):
        if write_atomic(root / "etc" / folder / "edge-agent.conf", (source / name).read_bytes(), 0o644):
            changed.append(f"{folder}/edge-agent.conf")
    return changed


def run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise ProvisioningError(f"{argv[0]} is not installed on this board") from exc
    except subprocess.CalledProcessError as exc:
        raise ProvisioningError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProvisioningError(f"`{' '.join(argv)}` did not finish in {COMMAND_TIMEOUT_S} s") from exc


def activate_on_host(restart: list[str], *, daemon_enabled: bool = True) -> None:
    """On the board itself: reload units, apply tmpfiles, enable, and start the engine build (no wait).
    A running daemon is restarted (no wait) when ``restart`` names changes it reads only at start (its
    config, certificate, keys, tokens), so provisioning again applies them. Without ``daemon_enabled``
    (its config names files not on the board yet: install_units left it disabled) only the engine build is
    enabled, and the daemon is neither started nor restarted: `systemctl enable` linked it again, and it
    refused to start, again every 10 s (a review)."""
    run(["systemctl", "daemon-reload"])
    run(["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/edge-agent.conf"])
    run(["systemctl", "enable", *(UNITS if daemon_enabled else UNITS[1:])])
    run(["systemctl", "start", "--no-block", UNITS[1]])
    log.info("engine build started in the background: journalctl -u %s", UNITS[1])
    if not daemon_enabled:
        log.info("%s not enabled, started or restarted: its config names files not on this board yet",
                 UNITS[0])
        return
    if restart:
        # A daemon that failed (a crash loop on the old config, or systemd's start limit) is started
        # again; a running one restarted; a stopped one left stopped. Restarts by hand count against the
        # start limit too: reset it, this is not a crash loop.
        failed = subprocess.run(["systemctl", "is-failed", "--quiet", UNITS[0]], timeout=COMMAND_TIMEOUT_S,
                                check=False).returncode == 0
        run(["systemctl", "reset-failed", UNITS[0]])
        run(["systemctl", "start" if failed else "try-restart", "--no-block", UNITS[0]])
        how = "starts" if failed else "restarts (if running)"
        log.info("%s changed: edge-agent %s with it", " and ".join(restart), how)
