"""mqtt.tls that does not match the broker's port: the board says which setting to change.

A review saw "cannot reach the MQTT broker ...: Connection reset by peer; check the network and mqtt.host"
for tls = true against a plain listener (it was reached) and a bare "closed the connection before
accepting it (... Connection reset by peer)" for tls = false against a TLS listener.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.config import MqttSettings
from edge_agent.sync.mqtt import MqttConnection, SyncConnectError, SyncTlsError
from tests.brokers import Broker, Pki, mosquitto_available
from tests.sync.conftest import plain_settings, tls_settings

NOT_TLS = "answered, but not with TLS"
SET_TLS = "if this port requires TLS, set mqtt.tls = true"


@pytest.fixture()
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path / "tls-broker", pki).start()
    yield b
    b.stop()


def _connect(connection: MqttConnection) -> None:
    try:
        connection.connect()
    finally:
        connection.close()


@pytest.mark.broker
def test_tls_against_mosquittos_plain_listener_says_the_port_does_not_speak_tls(
    broker: Broker, pki: Pki
) -> None:
    settings = tls_settings(broker, pki)  # the plain listener's port, with TLS
    with pytest.raises(SyncTlsError, match=NOT_TLS) as caught:
        _connect(MqttConnection(settings, "edge-board-0001", "", lambda *_: None, will=False))
    assert "mqtt.port its TLS port (8883), or should mqtt.tls be false?" in str(caught.value)
    assert "check the network" not in str(caught.value)


@pytest.mark.parametrize("reply", [b"HTTP/1.0 400 Bad Request\r\n\r\n", b""], ids=["plain-text", "close"])
def test_tls_against_a_server_that_answers_in_plain_text_or_closes_says_the_same(
    pki: Pki, reply: bytes
) -> None:
    # the other two ways a port that is not TLS ends the handshake: WRONG_VERSION_NUMBER, unexpected EOF
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        peer, _ = server.accept()
        with peer:
            peer.recv(4096)  # the ClientHello, read: the close is a FIN, not a reset
            peer.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with server:
        settings = MqttSettings(host="127.0.0.1", port=server.getsockname()[1], tls=True, ca_file=pki.ca,
                                cert_file=pki.client_cert, key_file=pki.client_key, connect_timeout_s=3.0)
        with pytest.raises(SyncTlsError, match=NOT_TLS):
            _connect(MqttConnection(settings, "edge-board-0001", "", lambda *_: None, will=False))
        thread.join(5)


@pytest.mark.broker
def test_plain_mqtt_against_mosquittos_tls_listener_says_to_set_mqtt_tls(tls_broker: Broker) -> None:
    settings = plain_settings(tls_broker)
    with pytest.raises(SyncConnectError, match=SET_TLS) as caught:
        _connect(MqttConnection(settings, "edge-board-0001", "", lambda *_: None, will=False))
    assert "closed the connection before accepting it" in str(caught.value)
