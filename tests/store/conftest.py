from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import DeviceSettings, MqttSettings, StoreSettings
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox


@pytest.fixture()
def db(state_dir: Path) -> Iterator[Database]:
    database = Database(state_dir / "edge-agent.db", StoreSettings())
    database.open()
    yield database
    database.close()


@pytest.fixture()
def outbox(db: Database) -> Outbox:
    box = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    box.open()
    return box
