"""Fixtures: one fleet provisioned into target roots, and a real Mosquitto serving it (module scope)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.provisioning.fleet_helpers import Broker, Fleet, make_fleet, start_broker, stop_broker


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return make_fleet(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def broker(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = start_broker(fleet, tmp_path_factory.mktemp("broker"))
    yield b
    stop_broker(b)
