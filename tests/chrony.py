"""Real chronyd processes for tests: on ports of their own, never touching the machine's clock (-x).

``synchronised_chrony(folder)`` starts an NTP server (chronyd serving its own clock, ``local stratum 8``)
and a client chronyd synchronised to it, and yields the client; ``cmd_port`` puts the client's command port
where the daemon asks (323). scripts/system-deps.sh unpacks Debian's chrony into .chrony/ rather than
install it: installing chrony removes systemd-timesyncd from the machine that runs the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from edge_agent.clock_sync import chrony_synchronised

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = (shutil.which("chronyd"), "/usr/sbin/chronyd", REPO / ".chrony/usr/sbin/chronyd")
CHRONYD = next((str(p) for p in _CANDIDATES if p and Path(p).is_file()), None)


def chronyd_unavailable() -> str | None:
    if CHRONYD is None:
        return "chronyd is not here (scripts/system-deps.sh unpacks it)"
    if os.geteuid() != 0:
        return "chronyd needs root"
    return None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Chronyd:
    """One chronyd with its command port on 127.0.0.1; started and answering when constructed."""

    def __init__(self, folder: Path, name: str, lines: list[str], cmd_port: int | None = None) -> None:
        self.address = ("127.0.0.1", cmd_port or free_udp_port())
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / f"{name}.conf"
        conf.write_text("\n".join([*lines, f"cmdport {self.address[1]}", "bindcmdaddress 127.0.0.1",
                                   f"pidfile {folder / name}.pid"]) + "\n")
        assert CHRONYD is not None
        self.process = subprocess.Popen([CHRONYD, "-n", "-x", "-u", "root", "-f", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while chrony_synchronised(self.address) is None:
            assert self.process.poll() is None, self.process.communicate()[1]
            assert time.monotonic() < deadline, "chronyd did not answer on its command port"
            time.sleep(0.05)

    def wait_synchronised(self, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while chrony_synchronised(self.address) is not True:
            assert time.monotonic() < deadline, "chronyd never synchronised to its server"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextlib.contextmanager
def synchronised_chrony(folder: Path, cmd_port: int | None = None) -> Iterator[Chronyd]:
    ntp_port = free_udp_port()
    server = Chronyd(folder, "server", [f"port {ntp_port}", "allow 127.0.0.1", "bindaddress 127.0.0.1",
                                       "local stratum 8"])
    try:
        client = Chronyd(folder, "client", ["port 0", f"server 127.0.0.1 port {ntp_port} iburst minpoll -6 "
                                            "maxpoll -6"], cmd_port)
        try:
            client.wait_synchronised()
            yield client
        finally:
            client.stop()
    finally:
        server.stop()
