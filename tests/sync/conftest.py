from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import DeviceSettings, MqttSettings, StoreSettings
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from tests.brokers import Broker, Pki, make_pki, mosquitto_available


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def plain_settings(broker: Broker, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "tls": False,
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.5,
        "connect_timeout_s": 3.0,
        "heartbeat_s": 5.0,
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


def tls_settings(broker: Broker, pki: Pki, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "ca_file": pki.ca,
        "cert_file": pki.client_cert,
        "key_file": pki.client_key,
        "tls": True,
    }
    values.update(overrides)
    return plain_settings(broker, **values)


@pytest.fixture()
def outbox(state_dir: Path) -> Iterator[Outbox]:
    db = Database(state_dir / "edge-agent.db", StoreSettings())
    db.open()
    box = Outbox(db, DeviceSettings(), StoreSettings(), MqttSettings())
    box.open()
    yield box
    db.close()
