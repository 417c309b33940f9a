"""Fixtures for knowledge-tracing tests: the committed default package, a real engine, a real store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import DeviceSettings, KTSettings, MqttSettings, StoreSettings
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox


@pytest.fixture(scope="session")
def package() -> KTPackage:
    return load_package()


@pytest.fixture()
def engine(package: KTPackage) -> Iterator[OnnxRuntimeEngine]:
    eng = OnnxRuntimeEngine(package.step_model, model_name="kt_step")
    yield eng
    eng.close()


@pytest.fixture()
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o600)
    return path


@pytest.fixture()
def pseudonymize(secret_file: Path) -> Pseudonymizer:
    return Pseudonymizer.from_file(secret_file)


@pytest.fixture()
def device(secret_file: Path) -> DeviceSettings:
    return DeviceSettings(pseudonym_secret_file=secret_file)


@pytest.fixture()
def kt_settings() -> KTSettings:
    return KTSettings(microbatch_wait_ms=1.0, min_group_size=3)


@pytest.fixture()
def db(state_dir: Path) -> Iterator[Database]:
    database = Database(state_dir / "edge-agent.db", StoreSettings())
    database.open()
    yield database
    database.close()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Database]:
    """A real SQLite store capped at 40 pages (160 KiB): a disk that fills after a few hundred students."""
    database = Database(tmp_path / "full.db", StoreSettings(), max_page_count=40)
    database.open()
    yield database
    database.close()


@pytest.fixture()
def outbox(db: Database, device: DeviceSettings) -> Outbox:
    box = Outbox(db, device, StoreSettings(), MqttSettings())
    box.open()
    return box
