"""The MQTT adapter's arithmetic, without a broker: connect timeouts per address, PUBLISH packet sizes."""

from __future__ import annotations

from edge_agent.sync.mqtt import ADDRESS_TIMEOUT_FLOOR_S, address_timeout, publish_packet_bytes


def test_a_hosts_addresses_share_the_connect_timeout_but_each_gets_at_least_the_floor() -> None:
    assert address_timeout(10.0, 1) == 10.0
    assert address_timeout(10.0, 2) == 5.0
    assert address_timeout(10.0, 8) == ADDRESS_TIMEOUT_FLOOR_S  # 8 x 3 s, not 8 x 10 s
    assert address_timeout(1.0, 4) == 1.0  # never more than the whole timeout
    assert address_timeout(10.0, 0) == 10.0


def test_a_publish_packet_counts_header_topic_packet_id_properties_and_payload() -> None:
    # 1 byte of type and flags, the remaining length (2 bytes from 128 to 16383), 2 + topic, 2 of packet
    # id, and in MQTT 5 the properties' length (1) and the message expiry (1 + 4).
    assert publish_packet_bytes("a/b", 100, v5=True, expiry=True) == 1 + 1 + 5 + 2 + 6 + 100
    assert publish_packet_bytes("a/b", 8000, v5=True, expiry=True) == 1 + 2 + 5 + 2 + 6 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=True) == 1 + 2 + 5 + 2 + 1 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=False) == 1 + 2 + 5 + 2 + 8000
    assert publish_packet_bytes("a/b", 8000, v5=False, qos=0) == 1 + 2 + 5 + 8000
    assert publish_packet_bytes("a/é", 20_000, v5=False) == 1 + 3 + 6 + 2 + 20_000  # topic in UTF-8 bytes
