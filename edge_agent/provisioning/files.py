"""Writing files the safe way: atomically (temp file + rename), with the mode set before the data lands,
and only when the content changes, so re-running provisioning leaves an identical tree."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from edge_agent.errors import ProvisioningError


def write_atomic(
    path: Path, data: bytes, mode: int, *, keep_within: int | None = None,
    owner: tuple[int, int] | None = None,
) -> bool:
    """Write ``data`` to ``path`` with ``mode`` and, given, ``owner`` (uid, gid); return False (and touch
    nothing) if it is already so. With ``keep_within``, a file replaced keeps its owner, group and mode,
    the mode narrowed to ``keep_within``: the broker's key, given to mosquitto with `chown` as its README
    says, came back from `edge-agent-ca server` as root's 0600 and Mosquitto did not start (school IT
    review)."""
    if keep_within is not None:
        with contextlib.suppress(FileNotFoundError):
            old = path.stat()
            mode, owner = stat.S_IMODE(old.st_mode) & keep_within, (old.st_uid, old.st_gid)
    try:
        if path.read_bytes() == data:
            old = path.stat()
            changed = False
            if owner is not None and (old.st_uid, old.st_gid) != owner:
                os.chown(path, *owner)  # before the mode: a chown clears set-id bits
                changed = True
            if (old.st_mode & 0o7777) != mode:
                os.chmod(path, mode)
                changed = True
            return changed
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise _with_path(exc, path) from exc
    try:
        if owner is not None:
            os.fchown(fd, *owner)  # before the mode: a chown clears set-id bits
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _with_path(exc, path) from exc
        raise
    return True


def _with_path(exc: OSError, path: Path) -> OSError:
    """``exc`` (of the same OSError subclass) naming ``path``, and on a full disk what to do: a write()
    fails without a file name, and provisioning said only "[Errno 28] No space left on device"."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(exc.errno, f"{exc.strerror} writing {path}: free space on its disk (df -h "
                                  f"{path.parent}), then try again")
    return OSError(exc.errno, exc.strerror, str(path))


def write_private(path: Path, data: bytes) -> bool:
    return write_atomic(path, data, 0o600)


def write_private_for_daemon(path: Path, data: bytes, owner_of: Path) -> bool:
    """``write_private``, then, when run as root, owned like ``owner_of`` (one of the daemon's own
    secrets): the daemon runs as edge-agent and must read what root's command wrote."""
    # The owner is read first: read after the write, a missing owner_of failed the command with the file
    # already changed (a clicker token written and never shown)
    try:
        owner = owner_of.stat() if os.geteuid() == 0 else None
    except FileNotFoundError:
        raise ProvisioningError(f"{owner_of} does not exist, so the daemon's user is not known: provision "
                                f"this board first (edge-agent-provision); {path} is unchanged") from None
    # Owned so before it is renamed into place: chowned after, root's 0600 file stood there a moment and
    # a daemon check then could not read it (ERROR in the log, /readyz 503; a review)
    return write_atomic(path, data, 0o600, owner=None if owner is None else (owner.st_uid, owner.st_gid))


def write_public(path: Path, data: bytes) -> bool:
    return write_atomic(path, data, 0o644)


def ensure_dir(path: Path, mode: int) -> bool:
    """Create ``path`` (and parents) and set its mode; True if anything changed."""
    changed = False
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _with_path(exc, path) from exc
        changed = True
    if (path.stat().st_mode & 0o7777) != mode:
        os.chmod(path, mode)
        changed = True
    return changed


def sync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (root included), so that what is renamed into use next
    is on the disk, not only in the page cache, when the power goes."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(Path(folder))


def sync_folder(folder: Path) -> None:
    """fsync ``folder`` itself: the names created, renamed or removed in it are on the disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
