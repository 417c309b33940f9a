"""`edge-agent demo` with a port another program holds: it says so and exits, posting nothing there."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]


class _ForeignServer(http.server.ThreadingHTTPServer):
    """Another program's web server on the port the demo wants; counts what is posted to it."""

    posts: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _ForeignServer

    def do_POST(self) -> None:
        self.server.posts.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def foreign_server() -> Iterator[_ForeignServer]:
    server = _ForeignServer(("127.0.0.1", free_port()), _Handler)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("busy", ["--port", "--metrics-port"])
def test_a_demo_on_a_port_another_program_holds_says_so_and_exits(
    tmp_path: Path, model_mirror: Path, foreign_server: _ForeignServer, busy: str
) -> None:
    # A review: with another program on 8080 the demo printed "edge-agent demo is running / teacher view:
    # http://127.0.0.1:8080/", posted its answers to that program and reported answers_sent: 0.
    taken = foreign_server.server_address[1]
    ports = {"--port": free_port(), "--metrics-port": free_port()} | {busy: taken}
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", "--state-dir", str(tmp_path / "state"),
         "--duration", "30", *(str(a) for pair in ports.items() for a in pair)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, EDGE_AGENT_MODEL_MIRROR=str(model_mirror)),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "demo is running" not in done.stdout
    assert f"cannot listen on 127.0.0.1:{taken}" in done.stderr and "address already in use" in done.stderr
    assert f"pick another with {busy}" in done.stderr
    assert foreign_server.posts == []
