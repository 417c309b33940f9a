"""`edge-agent doctor --bundle` on a board as schools have them: a web proxy in the environment, another
program on the web port, a disk with no room left."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.support_bundle import collect, write_bundle
from tests.ext4 import ext4_unavailable, failing_ext4
from tests.proxies import PROXY_502, SSH_BANNER, RecordingListener, json_reply
from tests.system.harness import REPO, DaemonProcess, NotifySocket, local_config, secret_file, write_config


def unpack(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_a_bundle_on_a_board_with_the_schools_proxy_asks_the_daemon_itself_and_no_token_reaches_the_proxy(
    tmp_path: Path, notify: NotifySocket, daemons: Callable[..., DaemonProcess]
) -> None:
    # A review: http_proxy in /etc/environment (sudo's pam_env reads it) sent the status request with the
    # web token and the metrics request with the metrics token to the proxy, and status.json said 502.
    cfg = local_config(tmp_path, faces=None)
    web_token = secret_file(tmp_path / "secrets/web.token")
    metrics_token = secret_file(tmp_path / "secrets/metrics.token")
    cfg["web"]["token_file"], cfg["metrics"]["token_file"] = str(web_token), str(metrics_token)
    config = write_config(tmp_path / "config.toml", cfg)
    daemons(config, notify, tmp_path / "daemon.log").start().wait_running(60)
    proxy = RecordingListener(PROXY_502)
    with proxy.running():
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        env |= {name: proxy_url for name in ("http_proxy", "https_proxy", "HTTP_PROXY")}
        bundle = tmp_path / "board-t-support.tar.gz"
        done = subprocess.run([sys.executable, "-m", "edge_agent", "doctor", "--config", str(config),
                               "--bundle", str(bundle)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=180, check=False)
    assert "support bundle:" in done.stderr, done.stderr
    assert proxy.heads == []
    parts = unpack(bundle)
    assert "kt" in {c["name"] for c in json.loads(parts["status.json"])["components"]}, parts["status.json"]
    assert b"edge_answers_total" in parts["metrics.txt"], parts["metrics.txt"][:300]


def test_a_bundle_sends_the_web_token_only_where_the_daemon_needs_it(tmp_path: Path) -> None:
    # Loopback needs no web token (web/access.py): the bundle sent it all the same. The metrics port needs
    # its own token on loopback too, when metrics.token_file is set.
    cfg = local_config(tmp_path, faces=None)
    web_token = secret_file(tmp_path / "secrets/web.token")
    metrics_token = secret_file(tmp_path / "secrets/metrics.token")
    daemon_web, daemon_metrics = RecordingListener(json_reply(b"{}")), RecordingListener(json_reply(b""))
    cfg["web"] |= {"token_file": str(web_token), "port": daemon_web.port}
    cfg["metrics"] |= {"token_file": str(metrics_token), "port": daemon_metrics.port}
    config = write_config(tmp_path / "config.toml", cfg)
    with daemon_web.running(), daemon_metrics.running():
        collect(config, "[]")
    assert len(daemon_web.heads) == 1 and "authorization:" not in daemon_web.heads[0].lower()
    token = metrics_token.read_text().strip()
    assert len(daemon_metrics.heads) == 1 and f"Authorization: Bearer {token}" in daemon_metrics.heads[0]


def test_a_bundle_where_another_program_answers_on_the_web_port_says_so_and_is_written(
    tmp_path: Path,
) -> None:
    # A review: an SSH banner on the web port ended `doctor --bundle` in a BadStatusLine traceback, no bundle
    cfg = local_config(tmp_path, faces=None)
    other = RecordingListener(SSH_BANNER)
    cfg["web"]["port"] = other.port
    config = write_config(tmp_path / "config.toml", cfg)
    with other.running():
        parts = collect(config, "[]")
    assert "config.toml" in parts and other.heads, parts.get("config-problems.txt")
    status = parts["status.json"]
    assert "what answered there is not edge-agent (BadStatusLine(" in status, status
    assert "check the port in the config and that no other program listens on it" in status


@pytest.mark.skipif(ext4_unavailable() is not None, reason=str(ext4_unavailable()))
def test_a_bundle_a_full_disk_refuses_leaves_no_file_and_the_same_name_works_once_there_is_room(
    tmp_path: Path,
) -> None:
    # A review: the write failed midway and left a truncated .tar.gz (sent with a support request, it does
    # not open), and the retry with the same name was refused: "File exists".
    parts = {"doctor.json": "[]", "journal.txt": os.urandom(256 * 1024).hex()}  # more than the disk holds
    with failing_ext4(tmp_path / "disk", size_mib=16) as disk:
        filler = disk.path / "filler"
        with filler.open("wb", buffering=0) as out:
            for chunk in (1 << 20, 4096, 1):  # to the last byte (root may use the reserved blocks too)
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0" * chunk)
        bundle = disk.path / "np-3a-01.tar.gz"
        with pytest.raises(OSError, match="No space left on device"):
            write_bundle(bundle, parts)
        assert not bundle.exists()
        filler.unlink()
        write_bundle(bundle, parts)
        assert unpack(bundle) == {name: text.encode() for name, text in parts.items()}
