"""Helpers: a fleet CA, boards provisioned into target roots, and a real Mosquitto using the shipped
broker config (provisioning/mosquitto) with only paths, port and bind address adapted."""

from __future__ import annotations

import getpass
import os
import queue
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.provisioning.ca import FleetCA
from edge_agent.provisioning.files import write_private, write_public
from edge_agent.provisioning.provision import Options, provision_inventory
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "provisioning" / "fleet-template.toml"
BROKER_DIR = REPO / "provisioning" / "mosquitto"
INVENTORY = """tenant,site,class_id,device_id,camera.source
district-a,school-1,class-1,board-a,0
district-a,school-1,class-2,board-b,/dev/video1
district-b,school-9,class-7,board-c,0
"""


@dataclass
class Fleet:
    ca: FleetCA
    roots: Path
    inventory: Path
    options: Options

    def etc(self, device_id: str) -> Path:
        return self.roots / device_id / "etc/edge-agent"


def make_fleet(base: Path) -> Fleet:
    ca = FleetCA.create(base / "ca", "test fleet CA")
    inventory = base / "inventory.csv"
    inventory.write_text(INVENTORY, encoding="utf-8")
    opts = Options(template_text=TEMPLATE.read_text(encoding="utf-8"), ca_dir=ca.dir)
    fleet = Fleet(ca, base / "roots", inventory, opts)
    provision_inventory(inventory, fleet.roots, opts)
    return fleet


@dataclass
class Broker:
    port: int
    dir: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_broker(fleet: Fleet, workdir: Path) -> Broker:
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto is None:
        pytest.skip("mosquitto is not installed (CI installs it via its setup script)")
    workdir.mkdir(parents=True, exist_ok=True)
    key, cert = fleet.ca.issue_server("127.0.0.1")
    write_private(workdir / "server.key", key)
    write_public(workdir / "server.pem", cert)
    shutil.copy(fleet.ca.cert_path, workdir / "ca.pem")
    shutil.copy(fleet.ca.crl_path, workdir / "crl.pem")
    shutil.copy(BROKER_DIR / "acl", workdir / "acl")
    port = free_port()
    text = (BROKER_DIR / "mosquitto.conf").read_text(encoding="utf-8")
    text = text.replace("/etc/mosquitto/edge/", f"{workdir}/").replace(
        "listener 8883", f"listener {port} 127.0.0.1"
    )
    (workdir / "conf.d").mkdir(exist_ok=True)
    (workdir / "conf.d/edge.conf").write_text(text, encoding="utf-8")
    # Laid out as Debian's and Ubuntu's package does: its mosquitto.conf sets the persistence location and
    # includes conf.d (the snippet once named it again, and Mosquitto refused to start: 2026-12-01). Without
    # persistence here, so that each test starts from an empty broker. As root, mosquitto would drop to the
    # "mosquitto" user and fail to read the 0600 key in a test dir.
    (workdir / "mosquitto.conf").write_text(
        f"persistence false\npersistence_location {workdir}/\ninclude_dir {workdir}/conf.d\n"
        f"user {getpass.getuser()}\nlog_dest file {workdir}/mosquitto.log\nlog_type all\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [mosquitto, "-c", str(workdir / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    broker = Broker(port, workdir, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mosquitto exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
            continue
        # "... running" is logged once its signal handlers are set up, after its listener opens: a SIGHUP
        # (a test's `systemctl reload`) in between ended the broker by the signal's default action (CI: a
        # CRL test's first reload right after the port opened; the log's last line "Opening ipv4 listen
        # socket", every connection refused)
        if " running" in (workdir / "mosquitto.log").read_text(encoding="utf-8", errors="replace"):
            return broker
        time.sleep(0.05)
    stop_broker(broker)
    raise RuntimeError("mosquitto did not open its port and say it runs within 10 s")


def stop_broker(broker: Broker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(5)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait(5)
    if broker.process.stderr:
        broker.process.stderr.close()


class Client:
    """A paho MQTT 5 client with TLS, collecting messages and acknowledgements into queues."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, client_id: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.acks: queue.Queue[tuple[int, int]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.connected: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(context)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc.value)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.put(
            -1 if rc.value == 0 else rc.value
        )
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.put((mid, rc.value))
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.port = port

    def connect(self, timeout: float = 5.0) -> int:
        """0 when accepted; otherwise a reason code, or -2 when TLS refused us."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10)
        except (ssl.SSLError, OSError):
            return -2
        self.client.loop_start()
        try:
            return self.connected.get(timeout=timeout)
        except queue.Empty:
            return -3

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> int:
        info = self.client.publish(topic, payload, qos=1)
        mid, rc = self.acks.get(timeout=timeout)
        assert mid == info.mid
        return rc

    def subscribe(self, topic: str, timeout: float = 5.0) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def board_client(fleet: Fleet, broker: Broker, device_id: str, suffix: str = "") -> Client:
    etc = fleet.etc(device_id)
    return Client(
        broker.port,
        etc / "certs/ca.pem",
        etc / "certs/device.pem",
        etc / "secrets/device.key",
        f"{device_id}{suffix}",
    )


def back_end_certificate(fleet: Fleet, cn: str) -> tuple[Path, Path]:
    """A back-end certificate (CN ``fleet-controller`` or ``edge-receiver``, the ACL's two user blocks),
    signed once per fleet by its CA: its certificate and key."""
    from edge_agent.provisioning.ca import key_to_pem, make_csr, new_ec_key

    workdir = fleet.roots.parent / cn
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key_path = workdir / f"{cn}.pem", workdir / f"{cn}.key"
    if not cert.exists():
        key = new_ec_key()
        write_private(key_path, key_to_pem(key))
        write_public(cert, fleet.ca.sign_csr(make_csr(key, cn, "fleet", "cloud")))
    return cert, key_path


def controller_client(fleet: Fleet, broker: Broker) -> Client:
    """The fleet back end that sends commands: a certificate with CN fleet-controller."""
    cert, key = back_end_certificate(fleet, "fleet-controller")
    return Client(broker.port, fleet.ca.cert_path, cert, key, f"controller-{os.getpid()}")
