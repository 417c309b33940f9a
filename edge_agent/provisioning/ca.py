"""A small fleet certificate authority for labs and small districts.

One directory holds the CA: ``ca.key`` (EC P-256, mode 0600), ``ca.pem``, ``index.json`` (every issued
certificate: serial, common name, expiry, revoked) and ``crl.pem`` (rebuilt on every revocation, given to
Mosquitto as ``crlfile``). Device certificates carry CN = device id, which Mosquitto uses as the MQTT
username (``use_identity_as_username``), so the ACL's ``%u`` is the device id.

Districts with a real PKI sign the board's CSR there instead; this tool is the lab-sized equivalent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.argument_types import at_least
from edge_agent.config import HOST_NAME
from edge_agent.errors import ProvisioningError
from edge_agent.provisioning.files import write_atomic, write_public

log = logging.getLogger(__name__)

# fullmatch, never match: "$" matches before a trailing newline, and "np-3a-01\n" was signed (a review)
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CA_DAYS = 3650
DEVICE_DAYS = 825
# Mosquitto refuses every board once the CRL's next-update time has passed. 30 days with the "monthly" rebuild
# the README asked for left the fleet cut off for up to a day after each 30-day span of a 31-day month; 45
# days leave a monthly rebuild 14 days of slack and the weekly timer (provisioning/mosquitto) 38.
CRL_DAYS = 45
RENEW_WITHIN_DAYS = 30  # re-running provisioning renews from here on; doctor.CERT_WARN_DAYS warns from here
# How far the clock may be behind the CA's last signature: two machines sharing a CA folder, each on NTP
CLOCK_SLACK = dt.timedelta(minutes=5)
# Set to this clock's date (UTC, YYYY-MM-DD) to sign after a run with the clock ahead (else refused until
# real time passed it; never before the CA certificate's own start, where every check of it fails anyway)
CLOCK_IS_RIGHT_ENV = "EDGE_AGENT_CA_CLOCK_IS_RIGHT"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisioningError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{path} is not an EC private key (expected P-256)")
    return key


def load_cert(data: bytes, source: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ProvisioningError(f"{source} is not a PEM certificate: {exc}") from exc


def common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def make_csr(key: ec.EllipticCurvePrivateKey, device_id: str, tenant: str, site: str) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, tenant),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def key_sha256(public_key: object) -> str:
    """The fingerprint the CA index keeps per certificate: it tells one board's key from another's."""
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def same_public_key(
    a: x509.Certificate | x509.CertificateSigningRequest, key: ec.EllipticCurvePrivateKey
) -> bool:
    return key_sha256(a.public_key()) == key_sha256(key.public_key())


def check_device_cert(
    cert_pem: bytes,
    ca_pem: bytes,
    key: ec.EllipticCurvePrivateKey,
    device_id: str,
    now: dt.datetime | None = None,
) -> None:
    """Raise ProvisioningError unless ``cert_pem`` is a valid, current certificate for this key and device."""
    cert = load_cert(cert_pem, "device certificate")
    ca = load_cert(ca_pem, "CA certificate")
    now = now or utcnow()
    if cert.issuer != ca.subject:
        raise ProvisioningError(
            f"the device certificate was issued by '{cert.issuer.rfc4514_string()}', not by the fleet CA "
            f"'{ca.subject.rfc4514_string()}': use the CA certificate that signed it (wrong CA?)"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ProvisioningError(
            "the device certificate's signature does not verify with the fleet CA"
        ) from exc
    if not same_public_key(cert, key):
        raise ProvisioningError(
            "the certificate does not match this board's private key (was it signed for another board's CSR?)"
        )
    if common_name(cert.subject) != device_id:
        raise ProvisioningError(
            f"the certificate is for '{common_name(cert.subject)}', not for '{device_id}'"
        )
    if cert.not_valid_after_utc <= now:
        raise ProvisioningError(
            f"the device certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "ask the fleet CA for a new one"
        )
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):
        raise ProvisioningError("the device certificate is not valid yet: check the board's clock")


# Every board's certificate also names this: Prometheus checks one server_name for all the targets of a
# scrape job (it cannot take a name per target), and scrapes boards by address. It grants nothing a board
# does not have already: any fleet certificate is trusted by its device id too.
FLEET_SERVER_NAME = "edge-agent-board"


def board_names(device_id: str, extra: Sequence[str] = ()) -> list[str]:
    """The names a board's certificate serves HTTPS under: its id, its mDNS name, loopback (the board's
    own screen opens the teacher view at 127.0.0.1) and FLEET_SERVER_NAME (/metrics), then ``extra``
    (e.g. its name in the school's DNS)."""
    own = [n for n in (device_id, f"{device_id}.local") if HOST_NAME.fullmatch(n)]  # not "a..b"
    return list(dict.fromkeys([*own, "localhost", "127.0.0.1", FLEET_SERVER_NAME, *extra]))


def general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not HOST_NAME.fullmatch(name):
                raise ProvisioningError(
                    f"{name!r} is neither an IP address nor a DNS name (letters, digits, '-', '_', dots)"
                ) from None
            out.append(x509.DNSName(name))
    return out


def reissue_reason(cert_pem: bytes, names: Sequence[str]) -> str | None:
    """Why a device certificate cannot serve HTTPS under ``names`` (certificates from before HTTPS were
    for the broker only), or None when it can."""
    cert = load_cert(cert_pem, "device certificate")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it is for the broker only, not for HTTPS on the web port"
    if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        return "it is for the broker only, not for HTTPS on the web port"
    have = {str(v) for v in alt.get_values_for_type(x509.IPAddress)}
    have |= set(alt.get_values_for_type(x509.DNSName))
    missing = [n for n in names if n not in have]
    return f"it does not name {', '.join(missing)}" if missing else None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _holding_lock(method: Callable[Concatenate[FleetCA, _P], _R]) -> Callable[Concatenate[FleetCA, _P], _R]:
    """Run a FleetCA method that reads index.json and then writes it (or the CRL) under the CA's lock."""

    @functools.wraps(method)
    def locked(self: FleetCA, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._locked():
            return method(self, *args, **kwargs)

    return locked


@dataclass(frozen=True)
class IssuedCert:
    serial: int
    common_name: str
    not_after: str
    revoked: bool = False
    key_sha256: str = ""  # of the certified public key; empty in indexes written before it was kept
    revoked_at: str = ""
    issued_at: str = ""  # empty in indexes written before it was kept
    superseded_by: int | None = None  # a later certificate for the same key and id; valid, in no CRL


def _times(row: IssuedCert) -> list[dt.datetime]:
    """When the CA signed and revoked ``row``, where its index kept it."""
    return [dt.datetime.fromisoformat(t) for t in (row.issued_at, row.revoked_at) if t]


class FleetCA:
    """The CA directory; every method re-reads it, so two commands never work from stale state."""

    def __init__(self, directory: Path, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.dir = directory
        self.clock = clock  # None: the machine's clock (utcnow)
        self.key_path = directory / "ca.key"
        self.cert_path = directory / "ca.pem"
        self.index_path = directory / "index.json"
        self.crl_path = directory / "crl.pem"
        self._lock_depth = 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the CA's lock (nested calls share it) around every read-then-write of index.json and every
        CRL build, re-reading the index inside: 8 `sign`s run at once left 7 rows (the 8th certificate
        valid but unrevocable), and a `revoke` beside them was undone in 2 of 5 rounds. The lock is on the
        directory itself, read-only: a lock file made by root's weekly CRL timer (mode 0644) refused the
        operator's next sign and revoke, where every other file of the CA is replaced by a rename and needs
        only the directory's write permission."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        try:
            held = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            self._key_and_cert()  # no CA directory: its error says which path to check
            raise
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            self._lock_depth = 1
            yield
        finally:
            self._lock_depth = 0
            os.close(held)  # closing the descriptor releases the lock

    @classmethod
    def create(
        cls, directory: Path, name: str, days: int = CA_DAYS, clock: Callable[[], dt.datetime] | None = None
    ) -> FleetCA:
        ca = cls(directory, clock)
        exists = ProvisioningError(f"a CA already exists in {directory}; refusing to overwrite its key")
        if ca.key_path.exists():
            raise exists
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        with ca._locked():
            # again, holding the lock: two `init`s at once both passed the check above, both said "CA
            # created", and the last key written won (a review)
            if ca.key_path.exists():
                raise exists
            ca._init(name, days)
        return ca

    def _init(self, name: str, days: int) -> None:
        key = new_ec_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = self._time() - dt.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))  # ``days`` long, as _build's
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._write(self.key_path, key_to_pem(key), 0o600)
        self._write(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._save_index([])
        self.write_crl()

    def _write(self, path: Path, data: bytes, mode: int) -> None:
        """Write one of the CA's files, owned as its folder when run as root: `server` (which README says to
        run as root), sudo provisioning or root's CRL timer left index.json root's 0600, and the operator
        who owns the CA got "Permission denied" on the next sign, list or revoke (a review)."""
        folder = self.dir.stat() if os.geteuid() == 0 else None
        owner = None if folder is None else (folder.st_uid, folder.st_gid)
        if owner == (os.geteuid(), os.getegid()):
            owner = None  # root's folder: nothing to give away
        try:
            write_atomic(path, data, mode, owner=owner)
        except PermissionError:
            if owner is None or mode & 0o077 == 0:
                raise
            # A public file (the CRL) from root's weekly timer, whose sandbox may not chown: root's, which
            # locks no one out (the folder stays its operator's, who replaces the file by a rename)
            write_atomic(path, data, mode)

    def _key_and_cert(self, loose_key: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA's key and certificate; a key others can read is refused (``loose_key``: warned of)."""
        if not self.key_path.is_file():
            raise ProvisioningError(
                f"no CA in {self.dir}: check the path (FLEET_CA for edge-agent-crl.service); only for a "
                f"new fleet, create one with `edge-agent-ca init {self.dir}` (its boards all need signing)"
            )
        mode = stat.S_IMODE(self.key_path.stat().st_mode)
        if mode & 0o077:  # ca.key at 0644 in a 0755 folder signed without a word (school IT review)
            says = (f"CA key {self.key_path} is readable by group or others (mode {mode:o}); "
                    f"run: chmod 600 {self.key_path}")
            if not loose_key:
                raise ProvisioningError(f"{says}; nothing was signed")
            log.warning("%s (the CRL is signed all the same: lapsed, it would cut every board off)", says)
        return load_private_key(self.key_path), load_cert(self.cert_path.read_bytes(), str(self.cert_path))

    def _time(self) -> dt.datetime:
        return self.clock() if self.clock else utcnow()

    def _now(self, ca_cert: x509.Certificate, *, records: bool = True) -> dt.datetime:
        """The time to sign at, refused when the clock is behind the CA certificate's start or (``records``)
        the times in its index: with the clock at 2024-06-01 a CA of 2026 issued certificates expired in
        real time and a CRL whose next update had passed, and Mosquitto refused every board with it (school
        IT review). With CLOCK_IS_RIGHT_ENV the index's times after this clock are taken as a clock's that
        ran ahead, and dated now, so that later runs sign without it."""
        now = self._time()
        at, what = ca_cert.not_valid_before_utc, "the CA certificate's start"
        if records and now >= at - CLOCK_SLACK:  # before the CA's start: that is the one to name
            rows = self.index()
            ahead = [row for row in rows if max(_times(row), default=now) > now + CLOCK_SLACK]
            # the date this clock shows, not just "1": a clock that was wrong re-dated the records for good
            # and signed on (round 3 of the review); asked for its own date, the operator sees it
            if ahead and os.environ.get(CLOCK_IS_RIGHT_ENV) == f"{now:%Y-%m-%d}":
                log.warning("%d certificate record(s) dated up to %s, after this clock: taken as from a "
                            "clock that ran ahead, dated now", len(ahead), max(max(_times(r)) for r in ahead))

                def clamped(time: str) -> str:
                    return now.isoformat() if time and dt.datetime.fromisoformat(time) > now else time

                self._save_index([dataclasses.replace(row, issued_at=clamped(row.issued_at),
                                                      revoked_at=clamped(row.revoked_at)) for row in rows])
            elif ahead:
                at, what = max(max(_times(row)) for row in ahead), "the CA's last signature or revocation"
        if now < at - CLOCK_SLACK:
            hatch = "" if what.startswith("the CA certificate") else (
                f". Only if today is {now:%Y-%m-%d} (UTC) and that time came from a clock that was ahead, "
                f"run with {CLOCK_IS_RIGHT_ENV}={now:%Y-%m-%d}")
            raise ProvisioningError(
                f"this machine's clock says {now:%Y-%m-%d %H:%M} UTC, before {what} at {at:%Y-%m-%d %H:%M} "
                "UTC: set the clock (NTP: `timedatectl set-ntp true`) and run again; nothing was signed"
                + hatch
            )
        return now

    def ca_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def index(self) -> list[IssuedCert]:
        try:
            return [IssuedCert(**row) for row in json.loads(self.index_path.read_text(encoding="utf-8"))]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:
            raise ProvisioningError(f"CA index {self.index_path} is damaged: {exc}") from exc

    def _save_index(self, rows: list[IssuedCert]) -> None:
        data = json.dumps([row.__dict__ for row in rows], indent=1).encode()
        self._write(self.index_path, data, 0o600)

    def sign_csr(
        self,
        csr_pem: bytes,
        days: int = DEVICE_DAYS,
        *,
        replace: bool = False,
        names: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> bytes:
        """:meth:`sign_and_revoke`'s certificate."""
        return self.sign_and_revoke(
            csr_pem, days, replace=replace, names=names, not_before=not_before, not_after=not_after
        )[0]

    @_holding_lock
    def sign_and_revoke(
        self,
        csr_pem: bytes,
        days: int = DEVICE_DAYS,
        *,
        replace: bool = False,
        names: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[bytes, list[IssuedCert]]:
        """Sign a device CSR (CN = device id), for the broker and for HTTPS on the board's web port under
        :func:`board_names` plus ``names``. The device id's live certificates for the same key (a renewal,
        or a board re-provisioned) are superseded, not revoked: revoking them protected nothing (the key
        holds the new one) and cut the board off once the broker had the CRL, until the new one was
        installed on it (school IT review). One for another key belongs to another board and is refused
        unless ``replace``, which revokes it: two boards must never share an identity.
        Returns the certificate and the rows it revoked (callers say which: a copy of a revoked certificate
        installed later looks fine until the broker refuses it)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ProvisioningError(f"not a PEM certificate signing request: {exc}") from exc
        if not csr.is_signature_valid:
            raise ProvisioningError(
                "the CSR's signature does not match its public key (corrupted or forged CSR)"
            )
        cn = common_name(csr.subject)
        if not DEVICE_ID.fullmatch(cn):
            raise ProvisioningError(f"CSR common name {cn!r} is not a valid device id (letters, digits, _.-)")
        this_key = key_sha256(csr.public_key())
        index = self.index()
        # the current certificates first: the refusals below name them, not one a renewal superseded (round
        # 2: "valid until 2029" of a board whose certificate ran to 2033, read as stale)
        rows = sorted((row for row in index if not row.revoked), key=lambda r: r.superseded_by is not None)
        # A key whose certificate was revoked, with none live since: revoked on purpose, a stolen or
        # retired board's. Signed again it was back on the broker (a review: `edge-agent-ca sign` took the
        # same CSR at once)
        gone = [row for row in index if row.revoked and row.key_sha256 == this_key]
        if gone and not any(row.key_sha256 == this_key for row in rows):
            raise ProvisioningError(
                f"this key's certificate (serial {gone[-1].serial}, {gone[-1].common_name!r}) was revoked: "
                "the key may be in someone else's hands. Give the board a new key and sign that "
                "(provisioning does, run for that board alone with --replace)"
            )
        # ids that differ only in case name one board (the inventory's rule): "NP-3A-01" and "np-3a-01"
        # were two live certificates under one DNS name (a review)
        live = [row for row in rows if row.common_name.lower() == cn.lower()]
        others = [row for row in live if row.key_sha256 != this_key]
        if others and not replace:
            raise ProvisioningError(
                f"device id {cn!r} already has a live certificate for another board's key (serial "
                f"{others[0].serial}, valid until {others[0].not_after[:10]}): two boards with one id? "
                "If this board replaces that one, re-run with --replace to revoke its certificate"
            )
        # The same key under another id: an image copied from a provisioned board keeps its key (and its
        # pseudonym secret, which makes students linkable across boards)
        cloned = [row for row in rows if row.key_sha256 == this_key and row.common_name.lower() != cn.lower()]
        if cloned and not replace:
            raise ProvisioningError(
                f"this key already has a live certificate as {cloned[0].common_name!r} (serial "
                f"{cloned[0].serial}): was this board's image copied from that one? Provision it with fresh "
                "secrets (delete /etc/edge-agent/secrets on it first); if the board was renamed, re-run with "
                "--replace to revoke the old id's certificate"
            )
        # Built before anything is revoked: a bad --name used to revoke the board's live certificate and
        # then fail, leaving it none
        cert = self._build(
            csr.subject,
            csr.public_key(),
            days=days,
            # client: the broker; server: HTTPS on the board's web port (web.tls_cert_file)
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            alt=general_names(board_names(cn, names)),
            not_before=not_before,
            not_after=not_after,
        )
        self._mark({row.serial for row in live if row.key_sha256 == this_key and row.superseded_by is None},
                   superseded_by=cert.serial_number)
        if others or cloned:
            self._revoke({row.serial for row in others + cloned})
        return cert.public_bytes(serialization.Encoding.PEM), others + cloned

    @_holding_lock
    def withdraw(self, serial: int) -> None:
        """Forget certificate ``serial``, signed but never installed (its board's disk was full): its bytes
        went with the run that signed it, yet the index listed it live, and the next run's renewal left it
        valid for years beside the board's real one. Those it superseded are current again; any it revoked
        (``replace``) stay revoked, as was asked."""
        self._save_index([dataclasses.replace(row, superseded_by=None) if row.superseded_by == serial else row
                          for row in self.index() if row.serial != serial])

    def issue_server(
        self, host: str, days: int = DEVICE_DAYS, names: Sequence[str] = ()
    ) -> tuple[bytes, bytes]:
        """A key and certificate for the broker, valid for ``host`` and ``names`` (DNS names or IP
        addresses: boards may be enrolled by the broker's address as well as by its name)."""
        server_key = new_ec_key()
        alt = general_names(list(dict.fromkeys([host, *names])))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        cert = self._build(
            subject, server_key.public_key(), days=days, eku=[ExtendedKeyUsageOID.SERVER_AUTH], alt=alt
        )
        return key_to_pem(server_key), cert.public_bytes(serialization.Encoding.PEM)

    @_holding_lock
    def _build(
        self,
        subject: x509.Name,
        public_key: object,
        *,
        days: int,
        eku: list[x509.ObjectIdentifier],
        alt: list[x509.GeneralName] | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> x509.Certificate:
        key, ca_cert = self._key_and_cert()
        now = self._now(ca_cert)
        start = not_before or now - dt.timedelta(minutes=5)
        # ``days`` from its start, not from now: 825 days and 5 minutes, and Apple's platforms refuse a TLS
        # server certificate valid for more than 825 days (the board's serves the teacher view over HTTPS;
        # the broker's, MQTT). Never past the CA's own end: verification fails there anyway, and the boards'
        # certificates said "valid for 424 more days" while the whole fleet was cut off
        end = min(not_after or start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
        if end <= start:
            raise ProvisioningError(
                f"the fleet CA expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}: it can sign nothing; "
                "make a new CA (edge-agent-ca init) and provision the boards with it"
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(key, hashes.SHA256())
        rows = self.index()
        rows.append(
            IssuedCert(
                cert.serial_number,
                common_name(subject),
                end.isoformat(),
                key_sha256=key_sha256(public_key),
                issued_at=now.isoformat(),
            )
        )
        self._save_index(rows)
        return cert

    @_holding_lock
    def revoke(self, serial_or_cn: int | str) -> list[int]:
        """Revoke by serial number or by device id, in any case (all its live certificates); rebuild the
        CRL."""
        rows = self.index()
        which = str(serial_or_cn)
        hits = [r for r in rows if not r.revoked and which.lower() in (str(r.serial), r.common_name.lower())]
        if not hits:
            raise ProvisioningError(
                f"no live certificate with serial or device id {serial_or_cn!r} in {self.index_path} "
                "(already revoked, or a typo: `edge-agent-ca list` shows them; signed after this copy of the "
                "CA was made, e.g. a restored backup: revoke it with --cert FILE, the certificate itself)"
            )
        # and every other certificate of their keys: one a renewal superseded is valid, in no CRL, and
        # whoever holds the key holds it too
        keys = {r.key_sha256 for r in hits if r.key_sha256}
        hits += [r for r in rows if not r.revoked and r.key_sha256 in keys]
        return self._revoke({r.serial for r in hits})

    @_holding_lock
    def revoke_certificate(self, cert_pem: bytes, source: str) -> list[int]:
        """Revoke the certificate ``cert_pem`` (and every other of its key), recorded in the index or not,
        once its signature shows this CA signed it: a CA restored from a backup, or a second operator's copy,
        could not revoke one signed after the copy was made, even by serial (a review)."""
        cert = load_cert(cert_pem, source)
        ca_cert = self._key_and_cert()[1]
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ProvisioningError(f"{source} was not signed by the CA in {self.dir} (issued by "
                                    f"'{cert.issuer.rfc4514_string()}'): nothing was revoked") from exc
        rows = self.index()
        if all(row.serial != cert.serial_number for row in rows):
            log.warning("certificate %d (%s) is not in %s: a copy of the CA made before it was signed; "
                        "recorded now, revoked", cert.serial_number, common_name(cert.subject),
                        self.index_path)
            self._save_index([*rows, IssuedCert(cert.serial_number, common_name(cert.subject),
                                                cert.not_valid_after_utc.isoformat(),
                                                key_sha256=key_sha256(cert.public_key()))])
        return self.revoke(cert.serial_number)

    def _revoke(self, serials: set[int]) -> list[int]:
        self._mark(serials, revoked=True, revoked_at=self._now(self._key_and_cert()[1]).isoformat())
        self.write_crl()
        return sorted(serials)

    def _mark(self, serials: set[int], **changes: Any) -> None:
        if serials:
            rows = self.index()
            self._save_index([dataclasses.replace(r, **changes) if r.serial in serials else r for r in rows])

    @_holding_lock
    def write_crl(self, days: int = CRL_DAYS) -> dt.datetime:
        """Rebuild crl.pem; returns its next-update time. Mosquitto refuses every client once that has
        passed: `edge-agent-ca crl` runs weekly from edge-agent-crl.timer (provisioning/mosquitto)."""
        # a key others can read is only warned of here: refused, the unattended timer would let the CRL
        # lapse, and Mosquitto then refuses every board (revoke and sign refuse it before they get here)
        key, ca_cert = self._key_and_cert(loose_key=True)
        # Against the CA's start only: this run is the weekly timer's, unattended, and must heal a CRL that a
        # clock ahead dated in the future (Mosquitto: "CRL not yet valid", every board refused) once the
        # clock is right; refused by the index's times it let the CRL lapse (round 2). One written behind
        # by less than its 45 days is still in date.
        now = self._now(ca_cert, records=False)
        until = now + dt.timedelta(days=days)
        with contextlib.suppress(OSError, ValueError):
            last = x509.load_pem_x509_crl(self.crl_path.read_bytes()).next_update_utc
            if last is not None and last > until:
                # Never one that lapses before the last: with the clock 50 days behind it wrote one already
                # lapsed, and Mosquitto refused every board (round 3 of the review)
                log.warning("the last CRL ran to %s, after this clock's %d days (%s): kept to then; a clock "
                            "behind now (or ahead then)? timedatectl shows it", f"{last:%Y-%m-%d %H:%M}",
                            days, f"{until:%Y-%m-%d %H:%M}")
                until = last
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(until)
        )
        for row in self.index():
            if row.revoked:
                when = dt.datetime.fromisoformat(row.revoked_at) if row.revoked_at else now
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(row.serial).revocation_date(when).build()
                )
        crl = builder.sign(key, hashes.SHA256())
        self._write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return until


MAX_DAYS = 36500  # a century: 3000000 days ran past the year 9999 and ended in an OverflowError traceback


def _days(text: str) -> int:
    """--days: at least 1 (0 or less was a traceback, or a certificate valid for 5 minutes) and at most
    MAX_DAYS (a review)."""
    value = at_least(1)(text)
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r}: give at most {MAX_DAYS} (100 years)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent-ca", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a CA directory")
    init.add_argument("ca_dir", type=Path)
    init.add_argument("--name", default="edge-agent fleet CA")
    init.add_argument("--days", type=_days, default=CA_DAYS)
    sign = sub.add_parser("sign", help="sign a device CSR (CN = device id)")
    sign.add_argument("ca_dir", type=Path)
    sign.add_argument("csr", type=Path)
    sign.add_argument("--out", type=Path, required=True)
    sign.add_argument("--days", type=_days, default=DEVICE_DAYS)
    sign.add_argument("--replace", action="store_true", help="revoke the device id's live certificate first")
    sign.add_argument("--name", action="append", default=[], dest="names",
                      help="another DNS name or IP address for HTTPS on the board (repeatable)")
    server = sub.add_parser("server", help="issue the broker's key and certificate")
    server.add_argument("ca_dir", type=Path)
    server.add_argument("host")
    server.add_argument("--out-dir", type=Path, required=True)
    server.add_argument("--name", action="append", default=[], dest="names",
                        help="another DNS name or IP address boards may reach the broker by (repeatable)")
    revoke = sub.add_parser("revoke", help="revoke by serial, device id or certificate file; rebuild crl.pem")
    revoke.add_argument("ca_dir", type=Path)
    revoke.add_argument("which", nargs="?", help="serial or device id")
    revoke.add_argument("--cert", type=Path, metavar="FILE",
                        help="the certificate itself: also one signed after this copy of the CA was made")
    crl = sub.add_parser(
        "crl", help=f"rebuild crl.pem (weekly from edge-agent-crl.timer: it expires after {CRL_DAYS} days)"
    )
    crl.add_argument("ca_dir", type=Path)
    crl.add_argument("--install", type=Path, metavar="PATH",
                     help="also write it to PATH (the broker's crlfile), replacing the file in one step")
    listing = sub.add_parser("list", help="list issued certificates")
    listing.add_argument("ca_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            FleetCA.create(args.ca_dir, args.name, args.days)
            print(f"CA created in {args.ca_dir}; give {args.ca_dir / 'ca.pem'} to boards and the broker")
        elif args.command == "sign":
            ca = FleetCA(args.ca_dir)
            # before signing supersedes or revokes anything: a folder was signed for, recorded live, and
            # never written (a review)
            if args.out.is_dir():
                raise ProvisioningError(f"--out {args.out} is a folder: give the certificate's file name "
                                        f"(e.g. {args.out / 'board.pem'}); nothing was signed")
            if not os.access(args.out.parent.resolve(), os.W_OK):
                raise ProvisioningError(f"--out {args.out}: cannot write into {args.out.parent}")
            cert, revoked = ca.sign_and_revoke(
                args.csr.read_bytes(), args.days, replace=args.replace, names=args.names
            )
            serial = load_cert(cert, "certificate").serial_number
            try:
                write_public(args.out, cert)
            except OSError as exc:
                ca.withdraw(serial)  # never written, never installed: the board's earlier one is current
                raise ProvisioningError(f"{exc}; the certificate signed for it ({serial}) is withdrawn from "
                                        "the CA's index: fix --out and sign again") from exc
            for row in revoked:
                print(f"revoked certificate {row.serial} of {row.common_name}: copy {ca.crl_path} to "
                      "the broker")
            for row in ca.index():
                if row.superseded_by == serial:
                    print(f"certificate {row.serial} of {row.common_name} (the same key) is superseded, not "
                          f"revoked: valid until {row.not_after[:10]}; install {args.out} on the board")
            print(f"signed: {args.out}")
        elif args.command == "server":
            key, cert = FleetCA(args.ca_dir).issue_server(args.host, names=args.names)
            # a renewal keeps the owner the broker's README gives them (mosquitto) and the key's mode up to
            # 0640: replaced as root's 0600, Mosquitto could not read its key and did not start
            write_atomic(args.out_dir / "server.key", key, 0o600, keep_within=0o640)
            write_atomic(args.out_dir / "server.pem", cert, 0o644, keep_within=0o644)
            print(f"broker key and certificate written to {args.out_dir}")
        elif args.command == "revoke":
            ca = FleetCA(args.ca_dir)
            if (args.which is None) == (args.cert is None):
                raise ProvisioningError("revoke takes a serial or device id, or --cert FILE (the certificate "
                                        "itself), one of them")
            print("revoked serials:", ca.revoke(args.which) if args.cert is None
                  else ca.revoke_certificate(args.cert.read_bytes(), str(args.cert)))
            # the broker took the board until then (fleet review: revoked, it connected and published)
            print(f"the broker accepts it until it has this CRL: copy {ca.crl_path} to the broker (or there: "
                  f"edge-agent-ca crl {args.ca_dir} --install /etc/mosquitto/edge/crl.pem) and run "
                  "`systemctl reload mosquitto`")
        elif args.command == "crl":
            ca = FleetCA(args.ca_dir)
            until = ca.write_crl()
            if args.install:
                write_public(args.install, ca.crl_path.read_bytes())
            where = f"{ca.crl_path}" + (f" and {args.install}" if args.install else "")
            print(f"CRL written to {where}, valid until {until:%Y-%m-%d %H:%M} UTC; reload the broker")
        else:
            ca = FleetCA(args.ca_dir)
            if not ca.cert_path.is_file():  # a mistyped folder listed nothing, exit 0, as a CA with no board
                raise ProvisioningError(f"no CA in {args.ca_dir} ({ca.cert_path} is missing): check the path")
            for row in ca.index():
                print(
                    f"{row.serial}\t{row.common_name}\t{row.not_after}\t"
                    + ("revoked" if row.revoked else "superseded" if row.superseded_by else "live")
                )
    except (ProvisioningError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
