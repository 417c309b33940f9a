"""How long the certificates the board's config names stay valid, for ``edge_certificate_expiry_seconds``.

The daemon refuses its device certificate only once it has expired (sync/mqtt.py), and a fleet provisioned
in one week expires in one week 825 days later: the gauge lets the fleet's Prometheus warn while
re-provisioning (which renews a certificate within 30 days of its end) still keeps every board working.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509


def not_after(pem: bytes) -> dt.datetime:
    """The end of validity (UTC) of the first certificate in ``pem``; ValueError when there is none."""
    cert = x509.load_pem_x509_certificate(pem)  # the first CERTIFICATE block: the leaf of a chain
    value = getattr(cert, "not_valid_after_utc", None)  # cryptography 42+; JetPack may have 41
    if isinstance(value, dt.datetime):
        return value
    naive: dt.datetime = cert.not_valid_after
    return naive.replace(tzinfo=dt.timezone.utc)


def seconds_left(
    files: Sequence[tuple[str, Path]], now: dt.datetime
) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds from ``now`` to each file's notAfter (negative once expired), by config key; and, for each
    file that cannot be read or holds no certificate, why (it gets no value: a guess would hide it)."""
    left: dict[str, float] = {}
    problems: dict[str, str] = {}
    for key, path in files:
        try:
            left[key] = (not_after(path.read_bytes()) - now).total_seconds()
        except (OSError, ValueError) as exc:
            problems[key] = f"{path}: {exc}"
    return left, problems
