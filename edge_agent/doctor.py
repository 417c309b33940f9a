"""``edge-agent doctor``: check everything a board needs and say how to fix what is wrong.

Each check is a small function returning a :class:`CheckResult`; none raises and each network or device
wait has a timeout, so the doctor finishes on a broken board too. Exit code 0 when every check passes
(warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import grp
import json
import os
import pwd
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import (
    DAEMON_USER,
    Config,
    InferenceSettings,
    PathSettings,
    find_config_path,
    load_config_ignoring_unknown,
    unreadable_config,
    without_credentials,
)
from edge_agent.errors import CameraError, ConfigError, EdgeAgentError
from edge_agent.inference.manifest import Manifest
from edge_agent.provisioning.enroll import connect_tcp_within
from edge_agent.provisioning.system import DEFAULT_BIN
from edge_agent.store.db import environment_error, storage_read_only
from edge_agent.vision.camera_hours import CameraHours, board_clock, opening_text

MIN_FREE_BYTES = 1 << 30  # engines and the outbox need room; below 1 GiB the store starts refusing
CERT_WARN_DAYS = 30  # = provisioning.ca.RENEW_WITHIN_DAYS: once this warns, re-running provisioning renews
PLAUSIBLE_YEARS = (2025, 2100)  # a board whose RTC battery died boots in 1970 or 2000


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # passes, but needs attention soon (e.g. a certificate about to expire)


def check_config(path: Path) -> tuple[CheckResult, Config | None]:
    """The config, also when only the files it names are missing, so the other checks still run."""
    if _unreadable_to_this_user(path):
        # a review: run without sudo, "Permission denied ... fix: edit config.toml" sent IT to the editor
        detail = f"{path}: permission denied (only root and the {DAEMON_USER} user may read the config)"
        return CheckResult("config", False, detail, f"run it as root: sudo {_own_command()} doctor"), None
    found = [(str(path), unreadable)] if (unreadable := unreadable_config(path)) else []
    try:
        config, ignored = load_config_ignoring_unknown(path)
    except ConfigError as exc:
        found += exc.problems
        try:
            config, ignored = load_config_ignoring_unknown(path, check_files_exist=False)
        except ConfigError:
            return _config_failed(path, found), None
    if found:
        return _config_failed(path, found), config
    if ignored:  # the daemon runs without them (a typo, or a newer release's keys after a rollback)
        detail = f"{path}: this release ignores {', '.join(ignored)}"
        fix = f"correct a typo, or remove keys of a newer release from {path}"
        return CheckResult("config", True, detail, fix, warning=True), config
    return CheckResult("config", True, f"{path} is valid"), config


def _config_failed(path: Path, problems: list[tuple[str, str]]) -> CheckResult:
    detail = "; ".join(f"{key}: {msg}" for key, msg in problems)
    return CheckResult("config", False, detail, f"edit {path}, then run: edge-agent config check")


def _unreadable_to_this_user(path: Path) -> bool:
    """Not root, and the config is there (or in a folder this user cannot enter) but not readable."""
    if os.geteuid() == 0 or os.access(path, os.R_OK):
        return False
    try:
        path.stat()
    except PermissionError:  # a folder on the way this user may not enter
        return True
    except OSError:  # not there, a link loop, a name too long: reading it says so
        return False
    return True


def _own_command() -> str:
    """This command's whole path: sudo's PATH lacks the release's venv (install.sh links nothing into
    /usr/bin)."""
    run = sys.argv[0]
    return os.path.abspath(run) if Path(run).name == "edge-agent" else DEFAULT_BIN


def _size(n: int) -> str:
    """In GiB, or MiB below one: 47 MB free read "0.0 GiB free of 0.1 GiB" (a review)."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_disk(label: str, path: Path, min_free: int = MIN_FREE_BYTES) -> CheckResult:
    name = f"disk {label}"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the folder may not exist yet; its filesystem does
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return CheckResult(name, False, f"cannot stat {path}: {exc}", f"check that {path} is mounted")
    detail = f"{path}: {_size(usage.free)} free of {_size(usage.total)}"
    if probe == path and storage_read_only(path):
        fix = ("Linux remounts a file system read-only after disk errors (dmesg): the SD card or eMMC may "
               "be failing; reboot, and replace the storage if it happens again")
        return CheckResult(name, False, f"{detail}, but read-only", fix)
    if usage.free < min_free:
        return CheckResult(name, False, detail, f"free space on the filesystem of {path} (old logs, journal)")
    return CheckResult(name, True, detail)


def check_cache_owner(cache: Path) -> CheckResult | None:
    """Files in the daemon's cache folder that are not the folder owner's (the daemon's account, which
    systemd's CacheDirectory= gives it): a model or plan root wrote there with a release before
    2026-12-05 (`sudo edge-agent doctor` fetching a missing model) was root's, mode 0600, and the daemon
    failed on 'Permission denied'. None where the folder is root's (a development machine) or unreadable."""
    try:
        owner = cache.stat()
        if owner.st_uid == 0:
            return None
        foreign = [p for p in cache.rglob("*") if p.lstat().st_uid != owner.st_uid]
    except OSError:
        return None
    if not foreign:
        return CheckResult("cache owner", True, f"{cache}: every file is the daemon's account's")
    try:
        user = f"{pwd.getpwuid(owner.st_uid).pw_name}:{grp.getgrgid(owner.st_gid).gr_name}"
    except KeyError:
        user = f"{owner.st_uid}:{owner.st_gid}"
    return CheckResult(
        "cache owner", False,
        f"{len(foreign)} file(s) in {cache} belong to another account than the daemon's ({user}), such as "
        f"{foreign[0]}: the daemon may not read them",
        f"chown -R {user} {cache}",
    )


def check_database(path: Path) -> CheckResult:
    """PRAGMA quick_check on a read-only connection: never changes or creates the file."""
    if not path.exists():
        return CheckResult("database", True, f"{path} not created yet (the daemon creates it on start)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if environment_error(exc):  # not damage: this account, the disk (a review: "unable to open" as
            return CheckResult(      # a non-root user was "damaged", with advice to stop the daemon)
                "database", False, f"{path} cannot be read here: {exc}",
                "run edge-agent doctor as root (sudo), or as the daemon's user; if it says the same, check "
                "the disk (dmesg)")
        rows = [str(exc)]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows == ["ok"]:
        return CheckResult("database", True, f"{path} passed quick_check")
    return CheckResult(
        "database", False, f"{path} is damaged: {'; '.join(rows[:3])}",
        "stop edge-agent; it moves a corrupt database aside on start, unsent aggregates in it are lost",
    )


STALE_BACKLOG_DAYS = 7.0  # a school week without sync: worth a look before store.max_age_days drops data


def check_outbox(path: Path, max_age_days: float, now: float | None = None) -> CheckResult:
    """Unsent aggregates and what the limits dropped since this database was made (the counters are kept
    in it, so they survive restarts; Prometheus' edge_outbox_drops_total starts again at 0)."""
    if not path.exists():
        return CheckResult("outbox", True, "no database yet")
    fix = "check sync (the broker checks above); unsent data older than store.max_age_days is dropped"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            backlog, oldest = conn.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
            drops = dict(conn.execute("SELECT reason, count FROM drop_counters WHERE count > 0").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:  # damaged, or an older schema: the database check says more
        return CheckResult("outbox", True, f"cannot read the outbox: {exc}", warning=True)
    age_days = 0.0 if oldest is None else max(0.0, ((now or time.time()) - oldest) / 86400.0)
    detail = f"{backlog} unsent" + (f", the oldest {age_days:.1f} days old" if backlog else "")
    if drops:
        detail += "; dropped since this database was made: " + ", ".join(f"{k} {v}" for k, v in drops.items())
    stale = backlog and age_days >= min(STALE_BACKLOG_DAYS, max_age_days / 2)
    if drops.get("max_rows") or drops.get("max_bytes"):  # the size limits, not the age, dropped data
        fix += "; a board offline for long keeps more with higher store.max_rows / store.max_bytes"
    if drops.get("store_error") or drops.get("queue_full"):  # the disk, not sync (a review: "check sync")
        fix += ("; store_error and queue_full are writes the disk refused or could not keep up with (full, "
                "failing, or held by another program for over 10 minutes): the daemon's log says which")
    return CheckResult("outbox", True, detail, fix if stale or drops else "", warning=bool(stale or drops))


def check_camera(source: str, timeout_s: float = 10.0, *, service_running: bool = False) -> CheckResult:
    """Open the source as the daemon does and read one frame, in a thread so a hung driver cannot hang us.
    A V4L2 camera the running daemon holds is not opened again: a second open fails as busy, and doctor
    told IT to check a cable on a board that worked (a review)."""
    from edge_agent.vision.sources import classify, folder_images, open_source

    source = source.strip()
    if Path(source).is_dir():
        images = folder_images(Path(source))  # as the daemon reads it: subfolders too
        if images:
            return CheckResult("camera", True, f"folder {source} holds {len(images)} images")
        return CheckResult("camera", False, f"folder {source} holds no images", "put .jpg/.png files there")
    shown = without_credentials(source)  # the result goes into support bundles
    if service_running and classify(source) == "v4l2":
        return CheckResult("camera", True, f"{shown!r} is held by the running edge-agent, so not opened here "
                           "(the service line above names a camera that does not work)")
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            opened = open_source(source)  # the daemon's own: device links, pipelines, URLs with a "!"
        except CameraError as exc:
            outcome["error"] = str(exc)
            return
        outcome["opened"] = True
        try:
            frame = opened.read()
            outcome["shape"] = frame.shape if frame is not None and frame.size else None
        finally:
            opened.release()

    worker = threading.Thread(target=probe, name="doctor-camera", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "://" in source:
        fix = (f"check the camera's address, user and password in [camera] source ({shown!r}), and that "
               "this board reaches it (ping the camera; a firewall must let its RTSP port through)")
    else:
        fix = f"check the cable and that {shown!r} is right in [camera] source (ls /dev/video*)"
    if worker.is_alive():
        return CheckResult("camera", False, f"opening {shown!r} took more than {timeout_s:.0f} s", fix)
    if not outcome.get("opened"):
        why = outcome.get("error", "")
        return CheckResult("camera", False, f"{shown!r} cannot be opened" + (f": {why}" if why else ""), fix)
    if outcome.get("shape") is None:
        return CheckResult("camera", False, f"{shown!r} opened but delivered no frame", fix)
    height, width = outcome["shape"][:2]
    return CheckResult("camera", True, f"{shown!r} delivered a {width}x{height} frame")


def check_models(config: Config, manifests_dir: Path | None = None) -> tuple[CheckResult, list[Manifest]]:
    """The ONNX of every model this config loads (board_model_names, as the daemon and `engines fetch`
    take them) present in the cache (or the mirror) with the pinned sha256. Every manifest known failed a
    board whose models came from the internet for ever: yunet-2023mar is never fetched, and with the
    camera off neither are the face and pose models (a review)."""
    from edge_agent.inference import fetch, manifest

    try:
        manifests = manifest.load_manifests(manifests_dir or manifest.ENGINES_DIR)
    except EdgeAgentError as exc:
        return CheckResult("models", False, str(exc), "reinstall edge-agent (engines/ is damaged)"), []
    try:
        from edge_agent.inference.cli_engines import as_the_daemon_runs

        manifests = {m.name: m for m in as_the_daemon_runs(list(manifests.values()), config)}
    except (OSError, EdgeAgentError) as exc:
        return CheckResult("models", False, f"cannot tell which KT package the daemon runs: {exc}",
                           f"run it as root: sudo {_own_command()} doctor"), []
    wanted = set(manifest.board_model_names(config))
    found: list[Manifest] = []
    problems: list[str] = []
    unreadable: list[str] = []
    mirror = fetch.mirror_dir(config.paths)
    for name, entry in sorted(manifests.items()):
        if name not in wanted:
            continue
        want = entry.source.sha256
        candidates = [entry.source.repo_path] if entry.source.repo_path else [
            fetch.cached_model_path(entry, config.paths),
            *([mirror / entry.source.mirror_path] if mirror else []),
        ]
        matched, denied = False, ""
        for p in candidates:
            try:
                matched = bool(p and p.is_file() and (want is None or fetch.sha256_file(p) == want))
            except OSError as exc:
                # The cache is the daemon's (root, 0600): doctor run without sudo cannot hash it, and
                # that is no sign of a missing or tampered model (a review: a traceback, no table).
                denied = denied or f"{name}: cannot read {p}: {exc.strerror or exc}"
            if matched:
                break
        if matched:
            found.append(entry)
        elif denied:
            unreadable.append(denied)
        else:
            where = ", ".join(map(str, candidates))
            problems.append(f"{name}: no file with sha256 {(want or '?')[:12]}… in {where}")
    if unreadable:
        return CheckResult("models", False, "; ".join(unreadable + problems),
                           f"run it as root: sudo {_own_command()} doctor"), found
    if problems:
        return CheckResult(
            "models", False, "; ".join(problems),
            f"copy the models into a mirror folder and set ${fetch.MIRROR_ENV} or paths.model_mirror, "
            "or connect the board to the internet and restart edge-agent",
        ), found
    if not wanted:
        return CheckResult("models", True, "no model: this config loads none (kt and camera are off)"), found
    return CheckResult("models", True, f"{len(found)} model files present, sha256 verified"), found


EngineLoader = Callable[[Manifest, InferenceSettings, PathSettings], Any]  # -> select.LoadedEngine


def _select_loader(entry: Manifest, settings: InferenceSettings, paths: PathSettings) -> Any:
    from edge_agent.inference.select import load_engine

    return load_engine(entry, settings, paths)


def check_engine(entry: Manifest, config: Config, loader: EngineLoader = _select_loader) -> CheckResult:
    """Build or load the engine exactly as the daemon would, and report the backend it ended up on."""
    name = f"engine {entry.name}"
    try:
        loaded = loader(entry, config.inference, config.paths)
    except EdgeAgentError as exc:
        if "could not be obtained" in str(exc):  # the model file, not the build (a review: a full cache)
            fix = "the message says what to do: free the cache folder, or copy the model into a mirror"
        else:
            fix = 'see the build log in the cache folder, or set inference.backend = "onnxruntime"'
        return CheckResult(name, False, str(exc), fix)
    try:
        detail = f"{loaded.backend} {loaded.precision}"
        fallback = loaded.fallback or ""
    finally:
        loaded.engine.close()
    if fallback.startswith("TensorRT") and "unavailable" not in fallback:
        # TensorRT exists here but failed: the board runs, slower; worth a look, not a failure
        fix = "run: edge-agent engines build, and read its log"
        return CheckResult(name, True, f"{detail} ({fallback})", fix, warning=True)
    return CheckResult(name, True, f"{detail} ({fallback})" if fallback else detail)


def check_reachable(host: str, port: int, timeout_s: float = 5.0) -> CheckResult:
    name = "broker reachable"
    try:
        with connect_tcp_within(host, port, timeout_s):  # all of the name's addresses within timeout_s
            pass
    except OSError as exc:
        return CheckResult(
            name, False, f"{host}:{port}: {exc.strerror or exc}",
            "check [mqtt] host/port, the network cable or Wi-Fi, and that the school firewall lets it out",
        )
    return CheckResult(name, True, f"{host}:{port} accepts connections")


def _days_left(not_after: dt.datetime, now: dt.datetime) -> float:
    return (not_after - now).total_seconds() / 86400.0


def check_certificate_file(
    path: Path, now: dt.datetime | None = None, device_id: str | None = None
) -> CheckResult:
    """Days until this device's own certificate expires (the broker refuses it afterwards), and whether it
    names this board (``device_id``): the broker's ACL lets a board write only under its certificate's CN."""
    from cryptography import x509

    from edge_agent.provisioning.ca import common_name

    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return CheckResult("device certificate", False, f"{path}: {exc}", "re-run provisioning")
    cn = common_name(cert.subject)
    if device_id is not None and cn != device_id:  # a board re-provisioned under a new id kept the old one
        return CheckResult(
            "device certificate", False, f"{path} is for {cn!r}, this board is {device_id!r}: the broker "
            "refuses its messages", "re-run provisioning (it requests a certificate for the new id); with a "
            "CA by hand, sign the board's new device.csr and install it")
    days = _days_left(cert.not_valid_after_utc, now)
    return _expiry_result("device certificate", str(path), days, "re-run provisioning to renew it")


def check_https_certificate(
    cert_file: Path, key_file: Path, device_id: str, now: dt.datetime | None = None, *, port: str = "web"
) -> CheckResult:
    """HTTPS on the web (or metrics) port: the certificate and key serve, browsers and Prometheus will
    accept the certificate's use and names, and how long it stays valid."""
    from edge_agent.errors import ConfigError, ProvisioningError
    from edge_agent.provisioning.ca import board_names, load_cert, reissue_reason
    from edge_agent.web.connections import server_tls_context

    name, fix = f"{port} certificate", "re-run provisioning to have it signed again"
    try:
        server_tls_context(cert_file, key_file, f"{port}.tls_cert_file")
        pem = cert_file.read_bytes()
        why = reissue_reason(pem, board_names(device_id))
        cert = load_cert(pem, name)
    except (ConfigError, ProvisioningError, OSError) as exc:
        return CheckResult(name, False, str(exc), fix)
    if why is not None:
        return CheckResult(name, True, f"{cert_file}: browsers or Prometheus will refuse it: {why}", fix,
                           warning=True)
    days = _days_left(cert.not_valid_after_utc, now or dt.datetime.now(dt.timezone.utc))
    return _expiry_result(name, str(cert_file), days, fix)


def check_roster(path: Path) -> CheckResult:
    """The class roster the answer API admits students by: readable, and how many it lists."""
    from edge_agent.errors import ConfigError
    from edge_agent.kt.roster import watch_roster

    try:
        students = watch_roster(path).current()
    except ConfigError as exc:
        return CheckResult("class roster", False, exc.problems[0][1],
                           "make it with `edge-agent kt roster set LIST` (answers are refused meanwhile)")
    if not students:
        return CheckResult("class roster", True, f"{path} lists no students: every answer is refused",
                           "add the class with `edge-agent kt roster add LIST`", warning=True)
    return CheckResult("class roster", True, f"{len(students)} students ({path})")


def check_client_tokens(path: Path) -> CheckResult:
    """The clicker tokens file: readable and well-formed, and how many clients it lets post answers."""
    from edge_agent.errors import ConfigError
    from edge_agent.web.clients import watch_clients

    try:
        clients = watch_clients(path).current()
    except ConfigError as exc:
        fix = "fix the line named, or remove that client and add it again (edge-agent web clients)"
        return CheckResult("clicker tokens", False, exc.problems[0][1], fix)
    return CheckResult("clicker tokens", True, f"{len(clients.by_digest)} clients may post answers ({path})")


def _expiry_result(name: str, what: str, days: float, fix: str) -> CheckResult:
    if days < 0:
        return CheckResult(name, False, f"{what} expired {-days:.0f} days ago", fix)
    if days < CERT_WARN_DAYS:
        return CheckResult(name, True, f"{what} expires in {days:.0f} days", fix, warning=True)
    return CheckResult(name, True, f"{what} valid for {days:.0f} more days")


def check_tls(
    host: str, port: int, ca: Path, cert: Path, key: Path, *, timeout_s: float = 5.0,
    now: dt.datetime | None = None,
) -> CheckResult:
    """Full TLS handshake with the board's client certificate; reports the broker certificate's expiry."""
    name = "broker TLS"
    fix = "check mqtt.ca_file/cert_file/key_file match the fleet CA, and the board clock (doctor: clock)"
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(name, False, f"cannot load certificates: {exc}", fix)
    try:
        with connect_tcp_within(host, port, timeout_s) as raw, context.wrap_socket(
            raw, server_hostname=host
        ) as tls:
            peer = tls.getpeercert() or {}
            version = tls.version()
            refused = _refused_after_handshake(tls)
        if refused:
            return CheckResult(
                name, False, f"the broker refused this board's certificate after the {version} handshake "
                f"({refused})", "revoked, or not from the CA in the broker's cafile, or the broker's CRL "
                "has expired (edge-agent-ca crl, then copy it to the broker): the broker's log says which")
    except ssl.SSLCertVerificationError as exc:
        return CheckResult(name, False, f"broker certificate rejected: {exc.verify_message}", fix)
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(name, False, f"handshake with {host}:{port} failed: {exc}", fix)
    not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(peer["notAfter"])), dt.timezone.utc)
    days = _days_left(not_after, now or dt.datetime.now(dt.timezone.utc))
    what = f"{version} handshake ok; broker certificate"
    return _expiry_result(name, what, days, "renew the broker certificate")


def _refused_after_handshake(tls: ssl.SSLSocket, wait_s: float = 2.0) -> str | None:
    """In TLS 1.3 the client's side of the handshake ends before the server has judged the client's
    certificate: a broker refusing it (revoked, an expired CRL) answers with an alert or closes only then.
    A broker that took it waits, silent, for MQTT's CONNECT. What it refused with, or None."""
    tls.settimeout(wait_s)
    try:
        data = tls.recv(1)
    except TimeoutError:
        return None
    except ssl.SSLError as exc:
        return str(exc)
    except OSError as exc:
        return f"connection closed: {exc}"
    return None if data else "connection closed"


def clock_sync_status(root: Path = Path("/"), timeout_s: float = 3.0) -> tuple[bool | None, str]:
    """(synchronised?, how we know); None when nothing can tell."""
    from edge_agent.clock_sync import CHRONY_RUN_DIR, TIMESYNC_FLAG, chrony_synchronised

    if (root / TIMESYNC_FLAG).exists():
        return True, "systemd-timesyncd synchronized"
    # As the daemon asks it (a chronyd serving only its own clock, `local stratum`, is not synchronised)
    if (root / CHRONY_RUN_DIR).is_dir() and (synced := chrony_synchronised()) is not None:
        return synced, "chronyd tracking"
    if shutil.which("timedatectl") is not None:
        command = ["timedatectl", "show", "-p", "NTPSynchronized", "--value"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip() != "yes":
            return False, "timedatectl"
        if done is not None and done.returncode == 0:
            # Said "synchronised" here while the daemon, which can ask only these two from its sandbox,
            # took the clock as unknown: no outbox row aged out, answers 30 days ahead taken (a review)
            return None, ("timedatectl says synchronised, but not through systemd-timesyncd or chronyd, "
                          "the two edge-agent can ask: it takes the clock as not synchronised")
    return None, "no timesyncd flag, chronyd or timedatectl"


def check_clock(now: dt.datetime, synced: bool | None, how: str) -> CheckResult:
    fix = "enable NTP: timedatectl set-ntp true (and allow UDP 123 outbound); TLS fails with a wrong clock"
    if not PLAUSIBLE_YEARS[0] <= now.year <= PLAUSIBLE_YEARS[1]:
        return CheckResult("clock", False, f"system time {now:%Y-%m-%d} is implausible", fix)
    if synced is False:
        return CheckResult("clock", False, f"clock not synchronised ({how})", fix)
    if synced is None:
        detail = f"{now:%Y-%m-%d %H:%M} UTC; sync unknown ({how})"
        if how.startswith("timedatectl says synchronised"):  # ntpd or the like: NTP is on already
            fix = "use systemd-timesyncd (timedatectl set-ntp true) or chrony: edge-agent can ask those two"
        return CheckResult("clock", True, detail, fix, warning=True)
    return CheckResult("clock", True, f"synchronised ({how})")


SERVICE = "edge-agent.service"
RETRY_TIMER = "edge-agent-retry.timer"  # started by the service's OnFailure= once systemd gave up on it
HEALTHY_STATUS = "running: all components healthy"  # STATUS= as Daemon.status_line says it then
SERVICE_PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "StatusText")


def service_status(root: Path = Path("/"), timeout_s: float = 5.0) -> dict[str, str] | None:
    """edge-agent.service as systemd sees it, or None where no systemd runs (a dev machine, a container,
    a target root)."""
    booted = Path("/run/systemd/system").is_dir()  # sd_booted(): systemd is PID 1
    if root.resolve() != Path("/") or not booted or not shutil.which("systemctl"):
        return None
    try:
        done = subprocess.run(["systemctl", "show", SERVICE, RETRY_TIMER, "-p", ",".join(SERVICE_PROPERTIES)],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    service, _, timer = done.stdout.partition("\n\n")  # one block per unit, in the order asked
    props = dict(line.split("=", 1) for line in service.splitlines() if "=" in line)
    retry = dict(line.split("=", 1) for line in timer.splitlines() if "=" in line)
    props["RetryTimer"] = retry.get("ActiveState", "?")
    return props


def check_service(props: dict[str, str]) -> CheckResult:
    """Whether systemd runs the daemon, and what stopped it. Once systemd gave up (5 starts in 10 minutes,
    restarts by hand count too), edge-agent-retry.timer starts it again 15 minutes later. The Result is
    then the last start's ("exit-code" under systemd 252), or "start-limit-hit" for a start by hand."""
    state, result = props.get("ActiveState", "?"), props.get("Result", "?")
    restarts = int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else 0
    if props.get("LoadState") == "not-found":
        return CheckResult("service", False, f"{SERVICE} is not installed",
                           "provision the board (edge-agent-provision), which installs and enables it")
    if state == "failed":
        fixes = {
            "start-limit-hit": "systemctl reset-failed edge-agent && systemctl start edge-agent (systemd "
            "gave up after 5 starts in 10 minutes)",
            "watchdog": "a worker hung and the watchdog killed it: journalctl -u edge-agent -b names the "
            "component; then systemctl start edge-agent",
        }
        fix = fixes.get(result, "journalctl -u edge-agent -b shows why; then systemctl start edge-agent")
        if props.get("RetryTimer") == "active":
            fix = f"systemd starts it again within 15 minutes of the failure ({RETRY_TIMER}); now: {fix}"
        return CheckResult("service", False, f"{SERVICE} failed ({result})", fix)
    sub = props.get("SubState", "?")
    if state == "activating" and sub == "auto-restart":  # between a crash and systemd's next start
        return CheckResult("service", False, f"{SERVICE} is crashing: it stopped and systemd restarts it "
                           f"({restarts} restarts since started)",
                           "journalctl -u edge-agent -b shows why it stopped")
    if state == "activating":  # started, not yet READY (the store opening)
        return CheckResult("service", True, f"{SERVICE} is starting ({sub})",
                           "run edge-agent doctor again in a minute", warning=True)
    if state != "active":
        return CheckResult("service", False, f"{SERVICE} is {state} ({sub})",
                           "systemctl start edge-agent (stopped by hand, e.g. to calibrate the camera?)")
    status = props.get("StatusText", "")
    detail = f"active: {status or sub}"
    advice: list[str] = []
    # The daemon's STATUS= names what does not work (a web port it cannot listen on, a camera that does
    # not open), yet it runs: systemd says active all the same.
    if status and status != HEALTHY_STATUS:
        advice.append("journalctl -u edge-agent -b and /api/v1/status say more; fix what the status names, "
                     "then systemctl restart edge-agent")
    if restarts:
        detail += f"; restarted by systemd {restarts} times since started"
        advice.append("journalctl -u edge-agent -b shows why it restarted")
    return CheckResult("service", True, detail, "; ".join(advice), warning=bool(advice))


# tzdata's names for UTC itself, not for a place that is at UTC+0 (a board fresh from its image is on one)
UTC_ZONES = frozenset(
    prefix + zone
    for prefix in ("", "Etc/")
    for zone in ("UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich")
)


def check_camera_hours(hours: CameraHours, now: dt.datetime, zone_set: bool = False) -> CheckResult:
    """Whether the camera is open now by camera.active_hours and camera.closed_dates, in the board's time
    (``now``, aware: in device.timezone when ``zone_set``, else the system's zone).

    A board left on UTC with no device.timezone reads "07:30" as 07:30 UTC: in China the camera would open
    at 15:30. A holiday list with no day after today is last year's: next term's holidays are watched."""
    zone = now.tzname() or "?"
    local = now.replace(tzinfo=None)
    opens = hours.next_open(local)
    when = "not within a year" if opens is None else opening_text(opens, local)
    state = "open now" if hours.is_open(local) else f"closed now, opens {when}"
    detail = f"{state} (board time {local:%a %Y-%m-%d %H:%M} {zone})"
    # by the zone's name, not its offset: London, Lisbon, Reykjavik and Accra are at UTC+0 in winter too
    # (a review: they were told to set device.timezone). board_clock names the system's zone where it can;
    # with no name (a copied zone file, a POSIX rule) UTC+0 is still asked about
    name = getattr(now.tzinfo, "key", None)
    unset = name in UTC_ZONES or (name is None and now.utcoffset() == dt.timedelta(0))
    if not zone_set and unset:
        fix = (
            "the hours are read in the board's time zone, here UTC: set device.timezone = "
            '"Asia/Shanghai" (or the school\'s zone) in the config'
        )
        return CheckResult("camera hours", True, detail, fix, warning=True)
    if hours.closed and all(last < local.date() for _, last in hours.closed):
        fix = "every day in camera.closed_dates is past: add the coming holidays"
        return CheckResult("camera hours", True, detail, fix, warning=True)
    return CheckResult("camera hours", True, detail)


def camera_closed_now(hours: CameraHours | None, pause_file: Path, now: dt.datetime) -> str | None:
    """Why the camera is closed at ``now`` (aware, the board's time), or None when it is open: the README
    says no frame is read then, and doctor opened it anyway and read one (a review: a closed date, and a
    teacher's pause of an RTSP camera the running daemon held closed)."""
    if hours is not None and not hours.is_open(now.replace(tzinfo=None)):
        return "camera.active_hours / camera.closed_dates"
    try:
        text = pause_file.read_text(encoding="utf-8").strip()
        until = dt.datetime.fromisoformat(text) if text else None
    except (OSError, ValueError):  # none, or not a pause: the daemon does not pause on it either
        return None
    if until is not None and until.tzinfo is not None and until > now:
        return f"paused by the teacher until {until:%H:%M}"
    return None


def check_chinese_font(timeout_s: float = 10.0, env: dict[str, str] | None = None) -> CheckResult:
    """Whether a browser on this board's own screen can draw the teacher view's Chinese: the page names
    fonts it does not carry (Noto Sans CJK SC, Microsoft YaHei...), so a board image without one showed
    every Chinese word as empty boxes (a review). A teacher's laptop brings its own fonts."""
    command = ["fc-list", ":lang=zh-cn", "family"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env=env)
    except FileNotFoundError:
        return CheckResult("Chinese font", True, "no fontconfig: no browser on this board's own screen "
                           "(laptops and PCs show the teacher view with their own fonts)")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("Chinese font", True, f"fc-list did not answer: {exc}", warning=True,
                           fix="check fontconfig: fc-list :lang=zh-cn")
    families = sorted({f.split(",")[0].strip() for f in done.stdout.splitlines() if f.strip()})
    if not families:
        return CheckResult(
            "Chinese font", True, "no font with Chinese glyphs: the teacher view on this board's own screen "
            "shows Chinese as empty boxes", warning=True,
            fix="apt install fonts-noto-cjk (or copy a font with Chinese glyphs to /usr/local/share/fonts)",
        )
    more = f" and {len(families) - 1} more" if len(families) > 1 else ""
    return CheckResult("Chinese font", True, f"{families[0]}{more}")


def run_checks(
    config_path: Path,
    *,
    engine_loader: EngineLoader = _select_loader,
    root: Path = Path("/"),
    manifests_dir: Path | None = None,
) -> list[CheckResult]:
    """Every check in a fixed order; later checks are skipped when the config cannot be read."""
    result, config = check_config(config_path)
    results = [result]
    props = service_status(root)
    if props is not None:
        results.append(check_service(props))
    synced, how = clock_sync_status(root)
    results.append(check_clock(dt.datetime.now(dt.timezone.utc), synced, how))
    if config is None:
        return results
    results += [check_disk("state", config.paths.state_dir), check_disk("cache", config.paths.cache_dir)]
    cache_owner = check_cache_owner(config.paths.cache_dir)
    if cache_owner is not None:
        results.append(cache_owner)
    results.append(check_database(config.database_path))
    results.append(check_outbox(config.database_path, config.store.max_age_days))
    if config.camera.enabled:
        running = props is not None and props.get("ActiveState") == "active"
        hours = config.camera.hours()
        now = board_clock(config.device.timezone)()
        closed = camera_closed_now(hours, config.paths.state_dir / "camera-pause", now)
        if closed is not None:
            shown = without_credentials(config.camera.source.strip())
            results.append(CheckResult("camera", True, f"{shown!r} not opened: the camera is closed now "
                                       f"({closed}), and no frame is read while it is; run doctor again "
                                       "while it is open to check it"))
        else:
            results.append(check_camera(config.camera.source, service_running=running))
        if hours is not None:
            results.append(check_camera_hours(hours, now, zone_set=bool(config.device.timezone)))
    if config.kt.enabled and config.kt.roster_file is not None:
        results.append(check_roster(config.kt.roster_file))
    models, verified = check_models(config, manifests_dir)
    results.append(models)
    results += [check_engine(entry, config, engine_loader) for entry in verified]
    mqtt = config.mqtt
    if mqtt.enabled:
        reach = check_reachable(mqtt.host, mqtt.port, mqtt.connect_timeout_s)
        results.append(reach)
        if mqtt.tls:
            results.append(check_certificate_file(mqtt.cert_file, device_id=config.device.device_id))
            if reach.ok:
                results.append(check_tls(mqtt.host, mqtt.port, mqtt.ca_file, mqtt.cert_file, mqtt.key_file,
                                         timeout_s=mqtt.connect_timeout_s))
    web = config.web
    if web.enabled and web.tls_cert_file is not None and web.tls_key_file is not None:
        results.append(check_https_certificate(web.tls_cert_file, web.tls_key_file, config.device.device_id))
    if web.enabled and web.client_tokens_file is not None:
        results.append(check_client_tokens(web.client_tokens_file))
    if web.enabled:
        results.append(check_chinese_font())
    metrics = config.metrics
    if metrics.enabled and metrics.tls_cert_file is not None and metrics.tls_key_file is not None:
        results.append(check_https_certificate(metrics.tls_cert_file, metrics.tls_key_file,
                                             config.device.device_id, port="metrics"))
    return results


def render_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        status = "FAIL" if not r.ok else "WARN" if r.warning else "ok"
        lines.append(f"{status:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix and (not r.ok or r.warning):
            lines.append(f"{'':<4}  {'':<{width}}  fix: {r.fix}")
    failed = sum(not r.ok for r in results)
    warned = sum(r.ok and r.warning for r in results)  # counted as passed, "16 passed" read as all clear
    lines.append(f"\n{len(results) - failed - warned} passed, {warned} warning{'' if warned == 1 else 's'}, "
                 f"{failed} failed")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge_agent.core_dumps import forbid_core_dumps

    # The camera check holds a frame of the class in memory, as `run` does (a review carved one, faces
    # readable, from the core a SIGABRT left while doctor waited on the broker)
    forbid_core_dumps()
    path = find_config_path(getattr(args, "config", None))
    results = run_checks(path)
    as_json = json.dumps([asdict(r) for r in results], ensure_ascii=False, indent=2)
    print(as_json if args.json else render_table(results))
    if args.bundle:
        from edge_agent.support_bundle import collect, write_bundle

        try:
            bundle = write_bundle(Path(args.bundle), collect(path, as_json))
        except FileExistsError as exc:  # never overwritten, nor written through a link
            print(f"support bundle not written: {exc}; name a new file", file=sys.stderr)
            return 2
        except OSError as exc:  # a full disk, a folder not there: nothing of it is left, the name works again
            print(f"support bundle not written, nothing of it left: {exc}; free space there (or name a file "
                  "in another folder) and run it again", file=sys.stderr)
            return 2
        print(f"support bundle: {bundle} ({bundle.stat().st_size / 1024:.0f} KiB); no secrets, database or "
              "images in it", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def add_doctor_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="check config, disk, database, camera, models, engines, broker, TLS and clock"
    )
    # SUPPRESS: unset here, it must not hide `edge-agent --config X doctor` (term audit)
    parser.add_argument(
        "--config", default=argparse.SUPPRESS,
        help="config file (default: $EDGE_AGENT_CONFIG, then /etc/edge-agent/config.toml)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--bundle", metavar="FILE.tar.gz",
        help="also write a support bundle for a support request: these results, the config (secrets not "
        "read), versions, the daemon's status, metrics and journal, and the kernel's messages since boot",
    )
    parser.set_defaults(func=cmd_doctor)
    return parser
