"""A model_update URL that matches the command's pattern but does not read as a URL.

A review: ``https://[::1/kt.tar`` passed ``^https://[^\\s]+$``, was "accepted", and urlsplit's ValueError
("Invalid IPv6 URL") then ended the download with a traceback: a result without its ``request <id>:``, no
``model_update_refused`` count, and the download's hidden ``.command`` note left in the inbox.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.config import DeviceSettings, UpdateSettings
from edge_agent.provisioning.model_package import generate_signing_key
from edge_agent.sync.commands import CommandDispatcher
from edge_agent.telemetry import metrics
from edge_agent.updates import DownloadFailed, ModelUpdates, check_host, download

UPDATE = {"type": "model_update", "request_id": "r-url", "model": "kt", "version": "9.9",
          "sha256": "a" * 64, "signature": "c2lnbmF0dXJlLWJ5dGVz"}
UNREADABLE = ["https://[::1/kt.tar", "https:///kt.tar", "https://models.example:99999/kt.tar",
              "https://models.example:port/kt.tar"]


@pytest.mark.parametrize("url", UNREADABLE)
def test_an_update_whose_url_does_not_read_is_refused_as_invalid_naming_the_url(url: str) -> None:
    taken: list[object] = []
    commands = CommandDispatcher(DeviceSettings())
    commands.register("model_update", taken.append)
    assert not commands.handle(commands.topic, json.dumps(UPDATE | {"url": url}).encode())
    [outcome] = commands.recent_outcomes()
    assert taken == [] and outcome["reason"] == "invalid" and outcome["request_id"] == "r-url", outcome
    assert outcome["detail"] == "model_update.url: value_error", outcome  # the field, never the value


def test_urls_that_read_still_pass() -> None:
    taken: list[object] = []
    commands = CommandDispatcher(DeviceSettings())
    commands.register("model_update", taken.append)
    for url in ("https://models.example/kt-9.9.tar", "https://[::1]:8443/kt.tar", "https://10.0.0.5/a?b=c"):
        assert commands.handle(commands.topic, json.dumps(UPDATE | {"url": url}).encode()), url
    assert len(taken) == 3


def test_a_download_of_a_url_that_does_not_read_fails_as_a_download(tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match="the URL does not read"):
        download("https://[::1/kt.tar", tmp_path / "kt.tar", "a" * 64, timeout_s=5, max_bytes=1 << 20)
    with pytest.raises(DownloadFailed, match="the URL does not read"):
        check_host("https://[::1/kt.tar", ["models.example"])
    assert list(tmp_path.iterdir()) == []


def test_such_a_url_ends_its_update_with_the_requests_outcome_and_leaves_no_note(tmp_path: Path) -> None:
    # as a command the schema did not check would reach the inbox thread (the review's, before the fix)
    generate_signing_key(tmp_path / "sign.key", tmp_path / "sign.pub")
    settings = UpdateSettings(public_key_file=tmp_path / "sign.pub", poll_interval_s=0.1)
    updates = ModelUpdates(settings, tmp_path, lambda _: None, lambda _: None)
    command = SimpleNamespace(request_id="r-ipv6", model="kt", version="9.9", url="https://[::1/kt.tar",
                              sha256="a" * 64)
    alert = {"kind": "model_update_refused"}
    refused = metrics.REGISTRY.get_sample_value("edge_alerts_total", alert) or 0

    async def scenario() -> None:
        await updates.start()
        try:
            updates.handle_command(command)
            for _ in range(100):
                if updates.last_download is not None:
                    break
                await asyncio.sleep(0.05)
        finally:
            await updates.stop()

    asyncio.run(scenario())
    outcome = updates.last_outcome()
    assert outcome["ok"] is False, outcome
    assert str(outcome["result"]).startswith("request r-ipv6: model download refused: the URL does not read")
    assert metrics.REGISTRY.get_sample_value("edge_alerts_total", alert) == refused + 1
    assert [p.name for p in updates.inbox.iterdir()] == []  # no hidden .kt-9.9.tar.command left
