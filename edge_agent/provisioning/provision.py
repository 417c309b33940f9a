"""Provision one board, or many into many target roots, from the fleet template and the inventory.

Order matters for "nothing half-installed": every input (inventory row, template, given certificate) is
checked before the first file is written; secrets are created once and never overwritten; every file is
written atomically and only when its content changes, so a second run changes nothing and a run that
stopped half-way finishes on the next try.

Certificates: the board makes its key and CSR itself (the key never leaves it). With ``ca_dir`` (a lab CA on
the same machine, or an image build) the CSR is signed at once; otherwise ``cert_file``/``ca_file`` install
a certificate the fleet CA signed, and without either the run ends in state "awaiting-certificate".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.config import MAX_TOKEN_CHARS, Config, token_fits
from edge_agent.errors import ProvisioningError
from edge_agent.provisioning import system
from edge_agent.provisioning.ca import (
    RENEW_WITHIN_DAYS,
    FleetCA,
    board_names,
    check_device_cert,
    common_name,
    general_names,
    key_sha256,
    key_to_pem,
    load_cert,
    load_private_key,
    make_csr,
    new_ec_key,
    reissue_reason,
    same_public_key,
    utcnow,
)
from edge_agent.provisioning.files import (
    ensure_dir,
    write_atomic,
    write_private,
    write_private_for_daemon,
    write_public,
)
from edge_agent.provisioning.inventory import Board, load_inventory, render_config
from edge_agent.provisioning.model_package import load_public_key
from edge_agent.updates import update_dirs

log = logging.getLogger(__name__)

ETC = Path("etc/edge-agent")
METRICS_TOKEN = ETC / "secrets/metrics.token"
# What the daemon reads only when it starts, as Result.changes names it (its config, certificate and CA,
# keys, secrets and tokens): a change to any restarts it. A new model signing key or metrics token did
# nothing until a restart by hand (a review: the old token still worked, updates were ignored).
READ_AT_START = ("config.toml", "device.pem", "ca.pem", "secret ", "model signing key", "metrics token")


@dataclass
class Options:
    template_text: str
    ca_dir: Path | None = None  # sign locally with this CA
    cert_file: Path | None = None  # or install this signed certificate
    ca_file: Path | None = None  # fleet CA certificate to install with cert_file
    units_dir: Path | None = None
    agent_bin: str = system.DEFAULT_BIN
    signing_pubkey: Path | None = None  # ed25519 key that model packages must be signed with
    activate: bool = True  # on "/": enable units and start the engine build
    replace: bool = False  # with ca_dir: this board replaces another with its id; revoke that one's cert
    one_board: bool = False  # a run for one board (--root, --device-id): may bring a revoked one back
    web_domain: str | None = None  # the certificate also names <device id>.<web_domain> (HTTPS)
    metrics_token_file: Path | None = None  # the fleet's Prometheus token, installed on every board
    now: dt.datetime | None = None  # the board's clock (tests set it); None: read it

    def clock(self) -> dt.datetime:
        return self.now or utcnow()

    @property
    def replaces(self) -> bool:
        """Whether ``replace`` acts: in a run for one board only. In a run for the whole inventory it re-keyed
        every board whose folder was missing from ROOTS and revoked that board's live certificate, the
        real board's (a review: --replace meant for one board revoked every board missing from ROOTS)."""
        return self.replace and self.one_board

    def web_names(self, device_id: str) -> list[str]:
        """Names the certificate must serve HTTPS under, beyond :func:`board_names`' own."""
        return [] if not self.web_domain else [f"{device_id}.{self.web_domain}"]


@dataclass
class Result:
    board: Board
    root: Path
    state: str = "provisioned"  # or "awaiting-certificate", or "revoked" (kept so: the broker refuses it)
    changes: list[str] = field(default_factory=list)
    # the config's files not on the board yet (its certificate): the daemon would refuse to start
    daemon_waits_for: list[str] = field(default_factory=list)

    @property
    def device_id(self) -> str:
        return self.board.device_id


def _layout(root: Path) -> dict[str, Path]:
    etc = root / ETC
    return {
        "etc": etc,
        "certs": etc / "certs",
        "secrets": etc / "secrets",
        "config": etc / "config.toml",
        "key": etc / "secrets/device.key",
        "pseudonym": etc / "secrets/pseudonym.key",
        "token": etc / "secrets/web.token",
        "csr": etc / "certs/device.csr",
        "cert": etc / "certs/device.pem",
        "ca": etc / "certs/ca.pem",
        "signing": etc / "model-signing.pub",
        "metrics_token": root / METRICS_TOKEN,
        "state": root / "var/lib/edge-agent",
        "cache": root / "var/cache/edge-agent",
        "logs": root / "var/log/edge-agent",
    }


def _preflight(board: Board, opts: Options, root: Path) -> tuple[str, Config, bytes | None]:
    """Everything that can be checked before writing: the config renders, given files are readable."""
    text, config = render_config(opts.template_text, board)
    general_names(opts.web_names(board.device_id))  # a bad --web-domain stops here
    if opts.signing_pubkey is not None:
        # checked, not copied blindly: the private key given by mistake was installed world-readable on
        # every board (2026-12-02)
        load_public_key(opts.signing_pubkey)
    wanted = config.metrics.token_file
    if opts.metrics_token_file is not None:
        token = _read(opts.metrics_token_file, "metrics token").strip()
        if not token_fits(token.decode("utf-8", "replace")):  # the daemon's own rule, or it would not start
            raise ProvisioningError(
                f"{opts.metrics_token_file} must hold one token of 16+ characters (at most "
                f"{MAX_TOKEN_CHARS}, no spaces; openssl rand -hex 24)"
            )
        if wanted != Path("/") / METRICS_TOKEN:
            raise ProvisioningError(
                f"--metrics-token-file installs /{METRICS_TOKEN}: set metrics.token_file to that in the "
                "template"
            )
    elif wanted is not None and not (root / str(wanted).lstrip("/")).exists():
        raise ProvisioningError(
            f"the config sets metrics.token_file = {wanted}: give --metrics-token-file FILE with the fleet's "
            "Prometheus token (the one prometheus.yml sends) to install it"
        )
    ca_pem = None
    if opts.ca_dir is None and (opts.cert_file is None) != (opts.ca_file is None):
        raise ProvisioningError("--cert and --ca-cert go together (the signed certificate and its CA)")
    if opts.ca_file is not None:
        ca_pem = _read(opts.ca_file, "fleet CA certificate")
    if opts.ca_dir is not None:
        ca_pem = FleetCA(opts.ca_dir).ca_pem()
        _ca_would_refuse(board, opts, root)
    _check_clock(board, opts, root)
    return text, config, ca_pem


def _check_clock(board: Board, opts: Options, root: Path) -> None:
    """The certificate's dates against the board's clock, before anything is written. A clock behind took
    the installed certificate for "not valid yet", unusable: it was revoked and another signed (a review,
    under faketime 2024). Not valid yet means the clock is behind (the CA signed it in the past): refused,
    naming both times. A given certificate expired by the clock is refused naming the clock, which may be
    ahead; the installed one's expiry is the renewal's (_install_cert)."""
    now = opts.clock()
    given = opts.ca_dir is None and opts.cert_file is not None  # it replaces the installed one
    path = opts.cert_file if given else _layout(root)["cert"]
    if path is None or not path.is_file():
        return
    try:
        cert = load_cert(path.read_bytes(), str(path))
    except ProvisioningError:
        return  # an installed one is replaced as unusable; a given one is refused by check_device_cert
    clock = f"board {board.device_id} (inventory line {board.line}): this board's clock says "
    clock += f"{now:%Y-%m-%d %H:%M} UTC"
    set_it = "(timedatectl set-ntp true, or timedatectl set-time 'YYYY-MM-DD HH:MM:SS') and run again"
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):  # check_device_cert's allowance
        raise ProvisioningError(
            f"{clock}, but the certificate {path} is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, when the CA signed it: the clock is behind. "
            f"Set it {set_it}; nothing was changed. Only if the clock is right (the CA's ran ahead): "
            + ("have the fleet CA sign it again" if given else f"delete {path} and run again")
        )
    if given and cert.not_valid_after_utc <= now:
        raise ProvisioningError(
            f"{clock}, by which the certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: if "
            f"the clock is wrong, set it {set_it}; otherwise ask the fleet CA for a new one"
        )


def _ca_would_refuse(board: Board, opts: Options, root: Path) -> None:
    """FleetCA.sign_and_revoke's refusals, for a board it will be asked to sign (none installed yet): found
    only when signing, in a bulk run one such row stopped the batch after the rows before it were
    provisioned, left its own root half-made and named no inventory line. And a device id revoked with
    none live since, which the CA would sign: its board was taken out of service."""
    paths = _layout(root)
    if opts.replaces or _installed_for(paths["cert"], board.device_id):
        return
    rerun = _rerun_with_replace(board, opts, root)
    this_key = key_sha256(load_private_key(paths["key"]).public_key()) if paths["key"].exists() else None
    where = f"board {board.device_id} (inventory line {board.line})"
    index = FleetCA(opts.ca_dir).index()  # type: ignore[arg-type]
    same_id = board.device_id.lower()  # ids that differ only in case name one board, as in the inventory
    ours = [row for row in index if row.common_name.lower() == same_id]
    if ours and all(row.revoked for row in ours):
        # A board taken out of service (revoked, its folder deleted) got a new live certificate from the
        # next run for the whole inventory, without a word (a review)
        raise ProvisioningError(
            f"{where}: device id {board.device_id!r} was revoked (certificate {ours[-1].serial}"
            + (f", on {ours[-1].revoked_at[:10]}" if ours[-1].revoked_at else "")
            + ") and has no live certificate: a board taken out of service? Delete its row from the "
            f"inventory; if a new board takes this id, {rerun}"
        )
    for row in sorted(index, key=lambda row: row.superseded_by is not None):  # named: the current ones
        if row.revoked:
            continue
        if row.common_name.lower() == same_id and row.key_sha256 != this_key:
            raise ProvisioningError(
                f"{where}: device id {board.device_id!r} already has a live certificate for another board's "
                f"key (serial {row.serial}, valid until {row.not_after[:10]}): two boards with one id? If "
                f"this board replaces that one, {rerun} to revoke its certificate"
            )
        if this_key is not None and row.key_sha256 == this_key and row.common_name.lower() != same_id:
            raise ProvisioningError(
                f"{where}: its key in {root} already has a live certificate as {row.common_name!r} (serial "
                f"{row.serial}): was this root copied from that board's? Delete its etc/edge-agent/secrets "
                f"first; if the board was renamed, {rerun} to revoke the old id's certificate"
            )


def _rerun_with_replace(board: Board, opts: Options, root: Path) -> str:
    """How to give --replace so that it acts: not in a run for the whole inventory (Options.replaces)."""
    if opts.one_board:
        return "re-run with --replace"
    return (f"run for this board alone with --replace (--root {root} --device-id {board.device_id}, or a "
            "one-board inventory)")


def _installed_for(cert: Path, device_id: str) -> bool:
    """Whether ``cert`` is a certificate for ``device_id``: one for another id (a board renamed in the
    inventory, its folder with it) is signed again, and the CA's refusal of that came after the rows
    before it were written, naming no line (round 2 of a review)."""
    try:
        return common_name(load_cert(cert.read_bytes(), str(cert)).subject) == device_id
    except (OSError, ProvisioningError):
        return False


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"cannot read the {what} {path}: {exc}") from exc


def provision_board(board: Board, root: Path, opts: Options) -> Result:
    if root.resolve() == Path("/") and os.geteuid() != 0:  # was "Failed to take /etc/passwd lock"
        raise ProvisioningError(
            "provisioning this board (--root /) creates its system user, writes /etc and runs systemctl: "
            "run it as root (sudo edge-agent-provision ...)"
        )
    config_text, config, ca_pem = _preflight(board, opts, root)
    root = root.absolute()  # a relative root would be re-rooted at "/" by the config check
    result = Result(board, root)
    on_host = root.resolve() == Path("/")
    units_src = opts.units_dir or system.units_dir()
    paths = _layout(root)
    inbox = root / str(update_dirs(config.updates, config.paths.state_dir)[1]).lstrip("/")
    if not on_host:
        written = ("etc/passwd", "etc/group", "etc/systemd/system", "etc/sysusers.d", "etc/tmpfiles.d")
        _refuse_links_out_of(root, [*paths.values(), inbox, *(root / p for p in written)])
    if on_host:
        uid, gid, changed = system.ensure_user_on_host(units_src / "edge-agent.sysusers.conf")
    else:
        uid, gid, changed = system.ensure_user_in_root(root)
    _note(result, changed, f"system user {system.USER}")
    _make_dirs(paths, uid, gid, result)
    _make_secrets(paths, uid, gid, result)
    _make_csr(paths, board, result)
    if not _install_cert(paths, board, opts, ca_pem, result):
        result.state = "awaiting-certificate"
    _note(result, write_atomic(paths["config"], config_text.encode(), 0o640), "config.toml")
    if opts.signing_pubkey is not None:
        _note(
            result,
            write_public(paths["signing"], _read(opts.signing_pubkey, "model signing key")),
            "model signing key",
        )
    if paths["signing"].is_file():
        _make_inbox(inbox, uid, gid, result)
    if opts.metrics_token_file is not None:
        token = _read(opts.metrics_token_file, "metrics token").strip() + b"\n"
        _note(result, write_private(paths["metrics_token"], token), "metrics token")
        system.chown_if_root(paths["metrics_token"], uid, gid)
    for path in (paths["config"], paths["certs"], paths["etc"]):
        system.chown_if_root(path, 0, gid)
    # Not enabled while a file its config needs is missing: it would refuse to start, and systemd start it
    # again every 10 s. Judged by the config, not the certificate file: a board without MQTT needs none
    # (round 2: such a board was never enabled, and never ran)
    result.daemon_waits_for = [key for key, path in config.required_files()
                               if not (root / str(path).lstrip("/")).is_file()]
    result.changes += system.install_units(root, units_src, opts.agent_bin,
                                           daemon_enabled=not result.daemon_waits_for)
    if on_host and opts.activate and result.state != "awaiting-certificate":
        system.activate_on_host(restart_for(result.changes), daemon_enabled=not result.daemon_waits_for)
    return result


def restart_for(changes: list[str]) -> list[str]:
    """The changes a running daemon takes only by a restart (READ_AT_START). A renewed certificate too:
    HTTPS on the web and metrics ports loads it at start only (a review: the board served the old, revoked
    one until it expired, and every HTTPS client failed)."""
    return [what for what in changes if what.startswith(READ_AT_START)]


def _refuse_links_out_of(root: Path, paths: list[Path]) -> None:
    """An image's absolute links (etc/edge-agent -> /data/edge-agent) mean paths inside the image; followed
    from this computer they lead onto its own disk, and the boards' keys, pseudonym secrets and configs
    landed there (three boards sharing one key). Refused before anything is written."""
    inside = os.path.realpath(root)
    for path in paths:
        probe = path
        while not os.path.lexists(probe) and probe != root:
            probe = probe.parent
        real = os.path.realpath(probe)
        if os.path.commonpath([inside, real]) != inside:
            raise ProvisioningError(
                f"{probe} leads to {real}, outside the image {root} (a link meant for the board itself): "
                "provisioning would write onto this computer. Make the link relative, or provision on the "
                "board"
            )


def _note(result: Result, changed: bool, what: str) -> None:
    if changed:
        result.changes.append(what)


def _make_dirs(paths: dict[str, Path], uid: int, gid: int, result: Result) -> None:
    for key, mode in (
        ("etc", 0o750),
        ("certs", 0o750),
        ("secrets", 0o700),
        ("state", 0o700),
        ("cache", 0o700),
        ("logs", 0o700),
    ):
        _note(result, ensure_dir(paths[key], mode), f"directory {paths[key]}")
        owner = (0, gid) if key in ("etc", "certs") else (uid, gid)
        system.chown_if_root(paths[key], *owner)


def _make_inbox(inbox: Path, uid: int, gid: int, result: Result) -> None:
    """The model inbox and its done/, owned by the daemon as its own mkdir makes them: one made by root
    (by hand, the daemon not restarted) stopped every package with "could not move ... Permission denied:
    .../inbox/done"."""
    for folder in (inbox, inbox / "done"):
        _note(result, ensure_dir(folder, 0o700), f"directory {folder}")
        system.chown_if_root(folder, uid, gid)


def _make_secrets(paths: dict[str, Path], uid: int, gid: int, result: Result) -> None:
    """Created on the board, never overwritten: a new pseudonym key would orphan every student's history."""
    makers = {
        "key": lambda: key_to_pem(new_ec_key()),
        "pseudonym": lambda: secrets.token_hex(32).encode() + b"\n",
        "token": lambda: secrets.token_urlsafe(32).encode() + b"\n",
    }
    for name, make in makers.items():
        path = paths[name]
        if not path.exists():
            write_private(path, make())
            result.changes.append(f"secret {path.name}")
        elif path.stat().st_mode & 0o077:
            path.chmod(0o600)
            result.changes.append(f"mode of {path.name}")
        system.chown_if_root(path, uid, gid)


def _make_csr(paths: dict[str, Path], board: Board, result: Result) -> None:
    from cryptography import x509

    key = load_private_key(paths["key"])
    if paths["csr"].exists():
        try:
            csr = x509.load_pem_x509_csr(paths["csr"].read_bytes())
            if same_public_key(csr, key) and common_name(csr.subject) == board.device_id:
                return
        except ValueError:
            pass
    write_public(paths["csr"], make_csr(key, board.device_id, board.tenant, board.site))
    result.changes.append("device.csr")


def _install_cert(
    paths: dict[str, Path], board: Board, opts: Options, ca_pem: bytes | None, result: Result
) -> bool:
    key = load_private_key(paths["key"])
    current = paths["cert"].read_bytes() if paths["cert"].exists() else None
    installed_ca = paths["ca"].read_bytes() if paths["ca"].exists() else None
    supplied = _read(opts.cert_file, "device certificate") if opts.cert_file is not None else None
    now = opts.clock()
    revoked = current is not None and opts.ca_dir is not None and _revoked(current, opts.ca_dir)
    if revoked and not opts.replaces:
        # kept, whether in date or not: a revocation is usually meant, and renewing it (near or past its
        # expiry) let a revoked board back without a word; so did --replace in a run for the whole
        # inventory, meant for another board (a review: a stolen board's key certified again, live)
        live = [row.serial for row in FleetCA(opts.ca_dir).index()  # type: ignore[arg-type]
                if row.common_name.lower() == board.device_id.lower() and not row.revoked
                and row.superseded_by is None]
        log.warning(
            "%s: its installed certificate is revoked in the fleet CA, so the broker refuses this board; %s",
            board.device_id,
            f"another board now holds this id (certificate {live[0]}), which --replace "
            + ("here" if opts.one_board else "in a run for this board alone") + " would revoke"
            if live else "to bring it back, run for it alone with --replace (--root <its folder> "
                         f"--device-id {board.device_id}, or a one-board inventory): it gets a new key, as "
                         "the revoked one may be in someone else's hands",
        )
        result.state = "revoked"  # not "provisioned" in the run's summary (a review: read as ready)
        return True
    csr = paths["csr"].read_bytes()
    if revoked:
        # brought back on purpose: on a new key, as the old one may have left with the stolen board, and a
        # new teacher-view token, as a thief's copy opened the returned or replacing board's view (round 2
        # of the review). The pseudonym key stays: a new one would orphan every student's history. Made in
        # memory and written once the certificate is signed: a CA that refused (a ca.key others can read)
        # left the board a new key and token, and every retry rotated them again.
        key = new_ec_key()
        csr = make_csr(key, board.device_id, board.tenant, board.site)
    if current is not None and installed_ca is not None and (ca_pem is None or ca_pem == installed_ca) and (
        not revoked
    ):
        try:
            end = load_cert(current, "device certificate").not_valid_after_utc
            # an expired one is checked as of its last second: its expiry is the renewal's, below (it was
            # "unusable, replacing it", with no word of the clock that said so)
            check_device_cert(current, installed_ca, key, board.device_id,
                              now=min(now, end - dt.timedelta(seconds=1)))
            days = (end - now).days
            why = reissue_reason(current, board_names(board.device_id, opts.web_names(board.device_id)))
            if supplied in (None, current):
                if days > RENEW_WITHIN_DAYS and why is None:
                    return True
                expired = end <= now
                if expired:  # the clock named, as it may be the one that is wrong (ahead)
                    why = (f"it expired on {end:%Y-%m-%d} by this board's clock, which says "
                           f"{now:%Y-%m-%d %H:%M} UTC (if that is wrong, set it: timedatectl set-ntp true, "
                           "or timedatectl set-time)")
                why = why or f"it expires in {days} days"
                if opts.ca_dir is None:
                    log.warning(
                        "the device certificate needs signing again (%s): have the fleet CA sign %s "
                        "again, then re-run with --cert and --ca-cert", why, paths["csr"],
                    )
                    return not expired
                (log.warning if expired else log.info)("renewing the device certificate: %s", why)
        except ProvisioningError as exc:
            log.warning("installed certificate unusable, replacing it: %s", exc)
    if opts.ca_dir is not None:
        cert, revoked_now = FleetCA(opts.ca_dir).sign_and_revoke(
            csr, replace=opts.replaces, names=opts.web_names(board.device_id)
        )
        for row in revoked_now:  # --replace revokes: say which, or another board just stops
            log.warning("%s: revoked certificate %s of %s; the broker accepts it until it has the new CRL: "
                        "copy %s to the broker and `systemctl reload mosquitto`", board.device_id, row.serial,
                        row.common_name, FleetCA(opts.ca_dir).crl_path)
    elif supplied is not None:
        cert = supplied
    else:
        log.info(
            "CSR ready at %s: have the fleet CA sign it, then re-run with --cert and --ca-cert", paths["csr"]
        )
        return False
    assert ca_pem is not None
    check_device_cert(cert, ca_pem, key, board.device_id, now=now)  # refuse before installing anything
    try:
        if revoked:
            _write_new_identity(paths, key, csr, result)
        _note(result, write_public(paths["ca"], ca_pem), "ca.pem")
        _note(result, write_public(paths["cert"], cert), "device.pem")
    except OSError:
        if opts.ca_dir is not None:  # signed by this run and installed nowhere: not left live in the index
            FleetCA(opts.ca_dir).withdraw(load_cert(cert, "device certificate").serial_number)
        raise
    return True


def _write_new_identity(
    paths: dict[str, Path], key: ec.EllipticCurvePrivateKey, csr: bytes, result: Result
) -> None:
    """A revoked board's new key, teacher-view token and CSR, owned as _make_secrets left the old ones:
    written as root's 0600, the daemon could not read its new key."""
    write_private_for_daemon(paths["key"], key_to_pem(key), owner_of=paths["pseudonym"])
    result.changes.append("secret device.key (new: its certificate was revoked)")
    token = secrets.token_urlsafe(32).encode() + b"\n"
    write_private_for_daemon(paths["token"], token, owner_of=paths["pseudonym"])
    result.changes.append(f"secret {paths['token'].name} (new: the certificate was revoked)")
    write_public(paths["csr"], csr)
    result.changes.append("device.csr")


def _revoked(cert_pem: bytes, ca_dir: Path) -> bool:
    """Re-provisioning a revoked board said "nothing to change" while the broker refused it (2026-12-02).
    An installed file that is no certificate is not revoked (it is replaced as unusable)."""
    try:
        cert = load_cert(cert_pem, "device certificate")
    except ProvisioningError:
        return False
    ca = FleetCA(ca_dir)
    if cert.issuer != load_cert(ca.cert_path.read_bytes(), "CA certificate").subject:
        return False  # another CA's serial numbers say nothing here
    return any(row.serial == cert.serial_number and row.revoked for row in ca.index())


def provision_inventory(inventory: Path, roots: Path, opts: Options) -> list[Result]:
    """Bulk: each board of the inventory into ``roots/<device_id>`` (image builds, labs, tests)."""
    boards = load_inventory(inventory)
    # a one-board inventory is a run for that board alone, as --root is (round 3: the way the warning
    # gave to bring a revoked board back did nothing); known before the checks, which judge --replace by it
    opts = dataclasses.replace(opts, one_board=len(boards) == 1)
    if opts.replace and not opts.one_board:
        log.warning("--replace acts in a run for one board only (--root ROOTS/<device id> --device-id ID, or "
                    "a one-board inventory): this run for %d boards revokes no certificate", len(boards))
    problems: list[str] = []
    for board in boards:  # every config must render before the first board is touched
        try:
            _preflight(board, opts, roots / board.device_id)
        except ProvisioningError as exc:  # all boards' problems at once, not one per run
            if str(exc) not in problems:
                problems.append(str(exc))
    if problems:
        raise ProvisioningError("\n".join(problems))
    return [provision_board(board, roots / board.device_id, opts) for board in boards]


def check_root(root: Path) -> None:
    """Validate the installed config with edge_agent.config.load_config, its paths re-rooted at ``root``
    (so secret modes and certificate files inside the target root are checked too)."""
    import tempfile

    from edge_agent.config import load_config, parse_config

    installed = _read(_layout(root)["config"], "installed config").decode()
    device = parse_config(installed).device
    board = Board(device.tenant, device.site, device.class_id, device.device_id)
    text, _ = render_config(installed, board, prefix=root)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8")
        load_config(path, this_machine=False)  # the board's addresses and KT package are not this machine's
