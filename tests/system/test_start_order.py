"""While the engines load (a TensorRT build takes minutes), the board's web answers: status and 503s."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from edge_agent.assembly import build
from edge_agent.config import Config
from edge_agent.inference.engine_set import EngineSet
from tests.system.harness import answer, http, local_config

pytestmark = pytest.mark.timeout(120)


def test_the_web_answers_while_the_engines_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second review: with the engines allowed to load as long as they need, the web (started after
    # them) refused connections for the whole build: minutes of a dark teacher view after an update.
    loading = threading.Event()
    real_load = EngineSet._load

    def slow_load(self: EngineSet, manifest: object) -> object:
        loading.set()
        time.sleep(4.0)
        return real_load(self, manifest)  # type: ignore[arg-type]

    monkeypatch.setattr(EngineSet, "_load", slow_load)
    config = Config.model_validate(local_config(tmp_path, faces=None))
    assembly = build(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(assembly.daemon.run()), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.web.port}"
    try:
        assert loading.wait(20)
        status, body = http("GET", f"{base}/api/v1/status")
        # what the engines say they do, not "not started" (a third review)
        assert status == 200 and "engines are still loading" in json.dumps(body), body
        posted, _ = http("POST", f"{base}/api/v1/answers", {"answers": [answer("s1", "x", "y", True, "e1")]})
        assert posted == 503
        ready, _ = http("GET", f"{base}/readyz")
        assert ready == 503
    finally:
        loop.call_soon_threadsafe(assembly.daemon.request_stop)
        thread.join(30)
