"""Enrollment check: connect to the broker with the board's new certificate and publish a hello.

MQTT 5 is used because Mosquitto then answers an ACL-refused publish with reason code 135 ("not
authorized") in the PUBACK; with 3.1.1 the broker acknowledges and silently drops it, and a board with a
wrong identity would look enrolled.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import ProvisioningError
from edge_agent.sync.mqtt import not_tls


def connect_tcp_within(host: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to ``host``:``port`` within ``timeout_s`` in all, for ``doctor`` and enrollment.

    socket.create_connection gives each address a name resolves to the whole timeout: a broker name with 4
    addresses (IPv6 and IPv4, several A records) behind a firewall that drops packets took 4 x the stated
    timeout. Here each address gets an equal share of the time left, so a dead first address still leaves
    the next one its turn. The socket comes back with ``timeout_s`` for what follows (the TLS handshake).
    One address fails as create_connection did; several say how many were tried."""
    deadline = time.monotonic() + timeout_s
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failures: list[OSError] = []
    tried: list[str] = []
    for n, (family, kind, proto, _name, address) in enumerate(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(left / (len(addresses) - n))
        try:
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failures.append(exc)
            tried.append(f"{address[0]}: {exc.strerror or exc}")
            continue
        sock.settimeout(timeout_s)
        return sock
    if len(addresses) == 1 and failures:
        raise failures[0]
    detail = (f"none of its {len(addresses)} addresses answered within {timeout_s:g} s in all "
              f"(tried {len(tried)}: {'; '.join(tried)})")
    if all(isinstance(exc, TimeoutError) for exc in failures):
        raise TimeoutError(detail)
    raise OSError(detail)


class _OneDeadlineClient(mqtt.Client):
    """paho's client, connecting by connect_tcp_within: paho's own connect gives every address of the
    broker's name the whole connect_timeout (paho 2.x calls _create_socket_connection for the TCP part; no
    proxy or bind address is used here)."""

    def _create_socket_connection(self) -> socket.socket:
        return connect_tcp_within(self._host, self._port, self._connect_timeout)


def tls_client(client_id: str, ca_file: Path, cert_file: Path, key_file: Path) -> mqtt.Client:
    client = _OneDeadlineClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    client.tls_set_context(context)
    return client


def hello_topic(tenant: str, site: str, device_id: str) -> str:
    return f"edge/{tenant}/{site}/{device_id}/hello"


HELLO_TRIES = 3
HELLO_RETRY_S = 2.0


class _ClosedBeforeHello(ProvisioningError):
    """Accepted, then closed before the hello was acknowledged: pushed off by a client with the same id
    (Mosquitto 2.0.11 says no more than that the connection ended)."""


def check_enrollment(
    host: str,
    port: int,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    *,
    tenant: str,
    site: str,
    device_id: str,
    timeout_s: float = 10.0,
) -> None:
    """Raise ProvisioningError with the cause unless the broker accepts the connection and the hello.

    The shipped broker conf makes the certificate's name the client id (use_username_as_clientid), so the
    board's own edge-agent, connected or reconnecting (a provisioning run has just restarted it), takes
    the hello's connection over: tried again, HELLO_TRIES in all. CI saw it as "TLS refused: certificate
    revoked, expired or from another CA?", 2 runs in 3."""
    for attempt in range(1, HELLO_TRIES + 1):
        try:
            client = tls_client(f"{device_id}-enroll", ca_file, cert_file, key_file)
            _send_hello(client, host, port, topic=hello_topic(tenant, site, device_id), device_id=device_id,
                        timeout_s=timeout_s)
            return
        except _ClosedBeforeHello as exc:
            if attempt == HELLO_TRIES:
                raise ProvisioningError(
                    f"the broker at {host}:{port} accepted this board's certificate, but closed the "
                    f"connection before the hello each time ({HELLO_TRIES} tries): another client with the "
                    f"device id {device_id!r} took it, as the board's own edge-agent does (the same "
                    "identity: where it runs, its status says whether sync is connected), or a second board "
                    "with this certificate (the broker log says 'already connected, closing old connection')"
                ) from exc
            time.sleep(HELLO_RETRY_S)


def _send_hello(
    client: mqtt.Client, host: str, port: int, *, topic: str, device_id: str, timeout_s: float
) -> None:
    done = threading.Event()
    outcome: dict[str, object] = {}

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None) -> None:
        outcome["connect"] = rc
        if rc.is_failure:
            done.set()
            return
        payload = json.dumps({"device_id": device_id, "ts": time.time(), "kind": "enrollment"})
        outcome["mid"] = client.publish(topic, payload, qos=1).mid

    def on_publish(_c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties) -> None:
        outcome["puback"] = rc
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None) -> None:
        outcome.setdefault("disconnect", rc)
        done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect_timeout = timeout_s  # TCP connect and TLS handshake (paho's own default is 5 s)
    try:
        client.connect(host, port, keepalive=30)
    except TimeoutError as exc:
        raise ProvisioningError(
            f"the broker at {host}:{port} did not complete the connection and TLS handshake within "
            f"{timeout_s:.0f} s: is that the broker's TLS port, and does a firewall let it through? ({exc})"
        ) from exc
    except OSError as exc:  # ssl's errors are OSErrors
        raise _connect_failure(exc, host, port) from exc
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise ProvisioningError(
                f"no answer from the broker at {host}:{port} within {timeout_s:.0f} s "
                "(a refused certificate often looks like this: check the broker log)"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    connect = outcome.get("connect")
    if isinstance(connect, ReasonCode) and connect.is_failure:
        raise ProvisioningError(f"the broker refused the connection: {connect}")
    if "puback" not in outcome:
        if isinstance(connect, ReasonCode):  # accepted: the certificate is not the cause
            raise _ClosedBeforeHello(f"closed after the connection was accepted: {outcome.get('disconnect')}")
        raise ProvisioningError(
            f"the broker at {host}:{port} closed the connection before accepting the hello "
            "(TLS refused: certificate revoked, expired or from another CA?)"
        )
    puback = outcome.get("puback")
    if isinstance(puback, ReasonCode) and puback.is_failure:
        raise ProvisioningError(
            f"the broker refused the hello on {topic}: "
            f"{puback} (check the ACL and that the certificate CN is the device id)"
        )


def _connect_failure(exc: OSError, host: str, port: int) -> ProvisioningError:
    """What a failed connect to the broker means, in words an IT person can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # this side refused the broker: a name or IP the broker's certificate does not carry said "revoked,
        # expired or from another CA" and sent people to re-sign boards (2026-12-02)
        # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH (62) and X509_V_ERR_IP_ADDRESS_MISMATCH (64)
        advice = (
            "enrol with a name or address on its certificate (edge-agent-ca server HOST --name X adds one)"
            if exc.verify_code in (62, 64)
            else "check that certs/ca.pem is the fleet CA's and that the broker's certificate is in date"
        )
        return ProvisioningError(
            f"the broker at {host}:{port} is not trusted: {str(exc.verify_message).rstrip('.')}; {advice}"
        )
    if not_tls(exc):  # a plain MQTT port resets the handshake: that was "the broker refused the certificate"
        return ProvisioningError(
            f"the broker's port {host}:{port} answered, but not with TLS ({exc}): enrol with its TLS port "
            "(8883 in provisioning/mosquitto/mosquitto.conf)"
        )
    if isinstance(exc, ssl.SSLError):
        return ProvisioningError(
            f"TLS handshake with {host}:{port} failed ({exc.reason}): the broker refused "
            "the certificate (revoked, expired or from another CA) or uses another CA"
        )
    return ProvisioningError(f"cannot reach the broker at {host}:{port}: {exc}")
