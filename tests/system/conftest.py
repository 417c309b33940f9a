"""Fixtures for whole-daemon tests: a notify socket and daemon processes that are always reaped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.kt.package import KTPackage, load_package
from tests.system.harness import DaemonProcess, NotifySocket


@pytest.fixture()
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


@pytest.fixture()
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    """Factory for daemon subprocesses; teardown stops every one of them (SIGTERM, then SIGKILL)."""
    started: list[DaemonProcess] = []

    def make(*args: object, **kwargs: object) -> DaemonProcess:
        process = DaemonProcess(*args, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def package() -> KTPackage:
    return load_package()
