"""`edge-agent doctor --bundle FILE`: one file a school's IT person can send with a support request.

A gzipped tar of what a vendor asks for first: doctor's results, the effective config (secret files named,
their contents not shown), versions, the daemon's own status and metrics as it reports them on this
board, its journal and the kernel's since this boot (storage, thermal and out-of-memory errors show there).
It holds no database, no camera frame and no secret, and no student data beyond what the daemon logs
(pseudonyms at most, never a raw id); it is written mode 0600, whole or not at all.
What it reads to make it is more: the config's secret files, as `config check` reads them, to say whether
the daemon would take them (a pseudonym key of too few bytes, a token of the wrong form); the metrics
token, and the web token where web.host is not loopback (loopback needs none), sent to the daemon on
this board only, never through a proxy. The doctor's checks before it read the database (read-only) and
one camera frame: only their results go in.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import platform
import shutil
import subprocess
import tarfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

from edge_agent import __build__, __version__
from edge_agent.config import (
    Config,
    ConfigError,
    load_config_ignoring_unknown,
    masked_dump,
    read_token_file,
    to_toml,
)
from edge_agent.web.local_api import board_opener, local_url, web_token_for

COMMAND_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 3.0
JOURNAL_LINES = 5000
KERNEL_LINES = 500
UNITS = ("edge-agent.service", "edge-agent-engines.service", "edge-agent-retry.service",
         "edge-agent-retry.timer")
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "numpy", "opencv-python-headless", "paho-mqtt", "aiohttp",
            "cuda-python", "pycuda", "tensorrt")


def _command(argv: list[str]) -> str:
    """The command's output, or a line saying why there is none (not installed, failed, timed out)."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed here\n"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False,
                              errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{' '.join(argv)}` failed: {exc}\n"
    return done.stdout + (f"\n[exit {done.returncode}] {done.stderr}" if done.returncode else "")


def _local_get(url: str, tls: bool, token: str | None = None) -> str:
    """GET from the daemon on this board, never through a proxy (the web port needs no token on loopback,
    its own token on any other address; the metrics port needs its own when metrics.token_file is set); its
    own certificate is not checked."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        request = urllib.request.Request(url, headers=headers)
        with board_opener(tls).open(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.read(4 * 2**20).decode("utf-8", "replace")  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        return f"GET {url} failed: {exc} (is the daemon running and listening there?)\n"
    except http.client.HTTPException as exc:  # not HTTP (an SSH banner), a reply cut short (a traceback)
        return (f"GET {url}: what answered there is not edge-agent ({exc!r}): check the port in the config "
                "and that no other program listens on it\n")


def _versions(config_path: Path) -> str:
    lines = [f"edge-agent {__version__} (build {__build__})", f"python {platform.python_version()}",
             f"platform {platform.platform()}", f"config {config_path}"]
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            lines.append(f"{name} {metadata.version(name)}")
    for release in (Path("/etc/nv_tegra_release"), Path("/etc/os-release")):
        if release.is_file():
            lines.append(f"--- {release}\n{release.read_text(errors='replace').strip()}")
    return "\n".join(lines) + "\n"


def collect(config_path: Path, doctor_json: str) -> dict[str, str]:
    """Every part of the bundle by file name; ``doctor_json``: doctor's results as `doctor --json` prints."""
    parts = {"versions.txt": _versions(config_path), "doctor.json": doctor_json}
    config: Config | None = None
    ignored: list[str] = []
    try:
        config, ignored = load_config_ignoring_unknown(config_path)
    except ConfigError as exc:
        parts["config-problems.txt"] = "".join(f"{where}: {message}\n" for where, message in exc.problems)
        # as doctor does: a file it names missing (a device certificate: exactly when IT sends a bundle)
        # left the config, status and metrics out (a review)
        with contextlib.suppress(ConfigError):
            config, ignored = load_config_ignoring_unknown(config_path, check_files_exist=False)
    if config is not None:
        parts["config.toml"] = to_toml(masked_dump(config)) + "".join(f"# ignored: {k}\n" for k in ignored)
    units = [arg for unit in UNITS for arg in ("-u", unit)]
    parts["journal.txt"] = _command(["journalctl", "-b", *units, "--no-pager", "-o", "short-iso",
                                     "-n", str(JOURNAL_LINES)])
    parts["kernel.txt"] = _command(["journalctl", "-k", "-b", "--no-pager", "-o", "short-iso",
                                    "-n", str(KERNEL_LINES)])
    parts["systemctl.txt"] = _command(["systemctl", "status", "--no-pager", "--lines=0", *UNITS])
    if config is not None:
        web, metrics = config.web, config.metrics
        parts["status.json"] = _local_get(local_url(web, "/api/v1/status"), web.tls_cert_file is not None,
                                          web_token_for(web))
        try:
            token = read_token_file(metrics.token_file, "metrics.token_file")
        except ConfigError as exc:  # e.g. not run as root: the file is the daemon's, mode 0600
            parts["metrics.txt"] = "".join(f"{where}: {message}\n" for where, message in exc.problems)
            parts["metrics.txt"] += "the metrics need that token: run doctor --bundle as root (sudo)\n"
        else:
            tls = metrics.tls_cert_file is not None
            parts["metrics.txt"] = _local_get(local_url(metrics, "/metrics"), tls, token)
    return parts


def write_bundle(path: Path, parts: dict[str, str]) -> Path:
    """A .tar.gz of the parts under one folder named after the file, created mode 0600. An existing file
    (or a link planted in /tmp) is refused with FileExistsError, never written through. Whole or not at
    all: a write that fails (a full disk) removes the file it created, so no truncated bundle is sent and
    the same name works again (a review: a 0-byte archive stayed, and the retry said "File exists")."""
    folder = path.name.removesuffix(".tar.gz").removesuffix(".tgz") or "edge-agent-support"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w:gz") as tar:
                for name, text in parts.items():
                    data = text.encode("utf-8", "replace")
                    info = tarfile.TarInfo(f"{folder}/{name}")
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                    tar.addfile(info, io.BytesIO(data))
            out.flush()
            os.fsync(out.fileno())  # a disk that cannot hold it says so now, not after "support bundle: ..."
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()  # this call's own file: O_EXCL above refused any other
        raise
    return path
