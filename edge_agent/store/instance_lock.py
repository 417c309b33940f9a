"""One daemon per database: a second ``edge-agent run`` on the same state directory (a copy started by
hand beside the service) started fully, took turns with the service on the broker under the same client
id, and sent every attention window twice under two seqs (a review). The lock is the kernel's (flock):
it goes with the process, however the process ends."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from edge_agent.errors import StoreError

log = logging.getLogger(__name__)


class AlreadyRunningError(StoreError):
    pass


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises AlreadyRunningError while another process holds it. A folder it cannot be made in is
        left to the database's own open, which says why."""
        # the folder first, as the database's open makes it: on a fresh state_dir the lock was skipped, and
        # the first daemon ran unlocked for its whole life beside a second one (a review)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.debug("no instance lock at %s: %s", self.path, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise AlreadyRunningError(
                f"another edge-agent{f' (pid {holder})' if holder.isdigit() else ''} runs on "
                f"{self.path.parent}: two on one database would each send the class's data (every attention "
                "window twice). Stop the other first (systemctl stop edge-agent, or the `edge-agent run` "
                "started by hand), or give this one a paths.state_dir of its own"
            ) from None
        with contextlib.suppress(OSError):  # the pid is for the message above only
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
