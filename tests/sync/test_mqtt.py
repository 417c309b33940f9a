"""The MQTT adapter's arithmetic, without a broker: a connect attempt's allowance, PUBLISH packet sizes."""

from __future__ import annotations

from edge_agent.config import MqttSettings
from edge_agent.sync.mqtt import connect_allowance_s, publish_packet_bytes


def test_the_publishers_heartbeat_allows_a_connect_attempt_over_every_address() -> None:
    settings = MqttSettings(connect_timeout_s=10.0)
    assert connect_allowance_s(settings, 1) == 40.0  # TCP, TLS handshake and CONNACK, 10 s each, + 10
    assert connect_allowance_s(settings, 8) == 110.0  # 8 addresses that drop the SYNs: 80 s of TCP


def test_a_publish_packet_counts_header_topic_packet_id_properties_and_payload() -> None:
    # 1 byte of type and flags, the remaining length (2 bytes from 128 to 16383), 2 + topic, 2 of packet
    # id, and in MQTT 5 the properties' length (1) and the message expiry (1 + 4).
    assert publish_packet_bytes("a/b", 100, v5=True, expiry=True) == 1 + 1 + 5 + 2 + 6 + 100
    assert publish_packet_bytes("a/b", 8000, v5=True, expiry=True) == 1 + 2 + 5 + 2 + 6 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=True) == 1 + 2 + 5 + 2 + 1 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=False) == 1 + 2 + 5 + 2 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=False, qos=0) == 1 + 2 + 5 + 8000
    assert publish_packet_bytes("a/é", 20_000, v5=False) == 1 + 3 + 6 + 2 + 20_000  # topic in UTF-8 bytes
