"""edge_certificate_expiry_seconds, from real certificates: the fleet sees an expiry coming a month ahead."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.telemetry.certificates import not_after
from edge_agent.telemetry.component import TelemetryComponent, record_certificates
from edge_agent.telemetry.jetson import NoSource

NOW = dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
GAUGE = "edge_certificate_expiry_seconds"


def certificate(cn: str, days: float, start: dt.datetime = NOW) -> bytes:
    """A self-signed PEM certificate valid from an hour before ``start`` for ``days`` days after it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(hours=1))
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(autouse=True)
def _no_series_left() -> None:
    for f in metrics.CERTIFICATE_EXPIRY.collect():
        for s in f.samples:
            metrics.CERTIFICATE_EXPIRY.remove(s.labels["file"])


def test_expiry_is_the_seconds_to_the_first_certificates_end_labelled_by_config_key(tmp_path: Path) -> None:
    device = tmp_path / "device.pem"
    device.write_bytes(certificate("np-3a-01", 20) + certificate("fleet CA", 3000))  # leaf, then its chain
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certificate("fleet CA", 3650))
    expired = tmp_path / "web.pem"
    expired.write_bytes(certificate("np-3a-01", 2, start=NOW - dt.timedelta(days=5)))

    files = [("mqtt.cert_file", device), ("mqtt.ca_file", ca), ("web.tls_cert_file", expired)]
    assert record_certificates(files, NOW) == set()

    assert metrics.sample(GAUGE, {"file": "mqtt.cert_file"}) == 20 * 86400  # the leaf's, not the chain's
    assert metrics.sample(GAUGE, {"file": "mqtt.ca_file"}) == 3650 * 86400
    assert metrics.sample(GAUGE, {"file": "web.tls_cert_file"}) == -3 * 86400  # negative: expired
    labels = [s.labels for f in metrics.REGISTRY.collect() if f.name == GAUGE for s in f.samples]
    assert all(set(label) == {"file"} and str(tmp_path) not in label["file"] for label in labels)


def test_an_unreadable_certificate_file_loses_its_series_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device = tmp_path / "device.pem"
    device.write_bytes(certificate("np-3a-01", 20))
    files = [("mqtt.cert_file", device)]
    assert record_certificates(files, NOW) == set()

    device.write_text("not a certificate\n")  # a provisioning run cut short
    caplog.set_level(logging.WARNING, logger="edge_agent.telemetry.component")
    unreadable = record_certificates(files, NOW)
    assert unreadable == {"mqtt.cert_file"}
    # no value rather than the old one: 20 days left would hide that the board has no usable certificate
    assert metrics.REGISTRY.get_sample_value(GAUGE, {"file": "mqtt.cert_file"}) is None
    device.unlink()
    assert record_certificates(files, NOW, unreadable) == {"mqtt.cert_file"}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "mqtt.cert_file" in warnings[0] and str(device) in warnings[0]

    device.write_bytes(certificate("np-3a-01", 800))  # re-provisioned
    assert record_certificates(files, NOW, unreadable) == set()
    assert metrics.sample(GAUGE, {"file": "mqtt.cert_file"}) == 800 * 86400


def test_not_after_refuses_a_file_without_a_certificate() -> None:
    with pytest.raises(ValueError):
        not_after(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")


def test_telemetry_reads_certificates_at_start_and_again_after_a_renewal(tmp_path: Path) -> None:
    device = tmp_path / "device.pem"
    device.write_bytes(certificate("np-3a-01", 10, start=dt.datetime.now(dt.timezone.utc)))
    component = TelemetryComponent(
        0.05, LiveBoard(), HeartbeatRegistry(), source_factory=lambda: NoSource("test"),
        certificate_files=[("mqtt.cert_file", device), ("web.tls_cert_file", tmp_path / "missing.pem")],
        certificate_interval_s=0.2,
    )

    def left_days() -> float | None:
        value = metrics.REGISTRY.get_sample_value(GAUGE, {"file": "mqtt.cert_file"})
        return None if value is None else value / 86400

    async def wait_for(days: float) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = left_days()
            if left is not None and abs(left - days) < 0.01:
                return
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        await component.start()
        await wait_for(10)
        assert left_days() == pytest.approx(10, abs=0.01)
        assert component.health().ok  # a missing file neither ends the thread nor gets a value
        assert metrics.REGISTRY.get_sample_value(GAUGE, {"file": "web.tls_cert_file"}) is None
        device.write_bytes(certificate("np-3a-01", 825, start=dt.datetime.now(dt.timezone.utc)))
        await wait_for(825)
        await component.stop()

    asyncio.run(scenario())
    assert left_days() == pytest.approx(825, abs=0.01)


def test_the_daemon_watches_the_certificates_its_config_names(tmp_path: Path) -> None:
    # The gauge is only as good as its wiring: the board's daemon, built from its config, reads them
    from edge_agent.assembly import build
    from edge_agent.config import Config
    from tests.system.harness import local_config

    data = local_config(tmp_path, faces=None)
    data["metrics"].update({"tls_cert_file": str(tmp_path / "device.pem"),
                            "tls_key_file": str(tmp_path / "device.key")})
    daemon = build(Config.model_validate(data)).daemon
    telemetry = next(s.component for s in daemon._states if isinstance(s.component, TelemetryComponent))
    assert ("metrics.tls_cert_file", tmp_path / "device.pem") in telemetry._certificate_files
