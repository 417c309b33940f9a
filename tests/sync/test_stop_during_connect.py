"""A stop while the publisher is still connecting: the TCP connect and the TLS handshake give way to it.

A review: paho blocks in socket.create_connection (a firewall dropping the SYNs to 8883) and in the TLS
handshake (a port that accepts and never speaks) for up to connect_timeout_s, where no stop is seen; each
stop or reload of such a board took the daemon's whole 9-s stop budget, left the store 0.5 s to close and
logged "component sync did not stop cleanly" and "a worker thread still busy".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from edge_agent.config import DeviceSettings, MqttSettings
from edge_agent.store.outbox import Outbox
from edge_agent.sync.component import SyncComponent
from tests.black_holes import name_of_silent_addresses
from tests.brokers import Pki

FIRST_ATTEMPT = "connecting (the first attempt since the start)"


@contextlib.contextmanager
def broker_that_never_speaks_tls(monkeypatch: pytest.MonkeyPatch, kind: str) -> Iterator[tuple[str, int]]:
    if kind == "blackhole":  # the SYNs get no answer: the TCP connect itself hangs
        with name_of_silent_addresses(monkeypatch, ["127.0.0.2"]) as address:
            yield address
        return
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; no ServerHello ever comes
        yield "127.0.0.1", silent.getsockname()[1]


@pytest.mark.parametrize("kind", ["blackhole", "tls-silent"])
def test_a_stop_while_the_tls_connect_hangs_ends_the_sync_component_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, outbox: Outbox, pki: Pki, kind: str
) -> None:
    caplog.set_level(logging.INFO)
    with broker_that_never_speaks_tls(monkeypatch, kind) as (host, port):
        settings = MqttSettings(host=host, port=port, tls=True, ca_file=pki.ca, cert_file=pki.client_cert,
                                key_file=pki.client_key)  # the shipped connect_timeout_s (10 s)
        component = SyncComponent(outbox, DeviceSettings(), settings)

        async def scenario() -> float:
            await component.start()
            thread = component.publisher._thread
            await asyncio.sleep(0.5)
            assert component.publisher.status()["detail"] == FIRST_ATTEMPT  # still inside the connect
            started = time.monotonic()
            await component.stop()
            assert thread is not None and not thread.is_alive()
            return time.monotonic() - started

        took = asyncio.run(scenario())
    assert took < 1.5, f"stop took {took:.1f} s with connect_timeout_s = {settings.connect_timeout_s:g}"
    said = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == []  # not "cannot connect to the MQTT broker: stopped while connecting" either
