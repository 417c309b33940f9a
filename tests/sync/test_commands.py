"""Command messages: validated before anything acts; every rejection counted by reason."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import DeviceSettings, UpdateSettings
from edge_agent.errors import CommandRefused
from edge_agent.store.outbox import Outbox
from edge_agent.sync.commands import MAX_COMMAND_BYTES, CommandDispatcher, ConfigReload, ModelUpdate
from edge_agent.sync.mqtt import MqttConnection
from edge_agent.sync.publisher import Publisher
from edge_agent.sync.receiver import Receiver
from edge_agent.telemetry import metrics
from edge_agent.updates import ModelUpdates
from tests.brokers import Broker
from tests.sync.conftest import plain_settings

TOPIC = "edge/demo-district/demo-school/board-0001/cmd"
UPDATE = {
    "type": "model_update",
    "request_id": "r-1",
    "model": "kt",
    "version": "1.2.0",
    "url": "https://models.example/kt-1.2.0.tar",
    "sha256": "a" * 64,
    "signature": "c2lnbmF0dXJlLWJ5dGVz",
}


@pytest.fixture()
def dispatcher() -> tuple[CommandDispatcher, list[object]]:
    seen: list[object] = []
    d = CommandDispatcher(DeviceSettings())
    d.register("config_reload", seen.append)
    d.register("model_update", seen.append)
    return d, seen


def test_valid_commands_reach_their_handlers(dispatcher: tuple[CommandDispatcher, list[object]]) -> None:
    d, seen = dispatcher
    assert d.topic == TOPIC
    assert d.handle(TOPIC, json.dumps({"type": "config_reload", "request_id": "r-0"}).encode())
    assert d.handle(TOPIC, json.dumps(UPDATE).encode())
    assert isinstance(seen[0], ConfigReload)
    assert isinstance(seen[1], ModelUpdate) and seen[1].sha256 == "a" * 64


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (
            "edge/demo-district/demo-school/other-board/cmd",
            b'{"type":"config_reload","request_id":"x"}',
            "unknown_topic",
        ),
        (TOPIC, b"{" + b" " * MAX_COMMAND_BYTES + b"}", "oversized"),
        (TOPIC, b"not json", "malformed"),
        (TOPIC, b"\xff\xfe", "malformed"),
        (TOPIC, b"[" * 5000 + b"]" * 5000, "malformed"),  # fits the size limit, deeper than json parses
        (TOPIC, b'{"type":"reboot","request_id":"x"}', "invalid"),
        (TOPIC, b'{"type":"config_reload"}', "invalid"),
        (TOPIC, b'{"type":"config_reload","request_id":"x","extra":1}', "invalid"),
        (TOPIC, json.dumps({**UPDATE, "sha256": "xyz"}).encode(), "invalid"),
        (TOPIC, json.dumps({**UPDATE, "url": "http://insecure.example/x"}).encode(), "invalid"),
        (TOPIC, json.dumps({**UPDATE, "version": 3}).encode(), "invalid"),
        (TOPIC, json.dumps({**UPDATE, "request_id": "a b"}).encode(), "invalid"),
        (TOPIC, b"[1, 2]", "invalid"),
    ],
)
def test_bad_commands_are_rejected_counted_and_never_dispatched(
    dispatcher: tuple[CommandDispatcher, list[object]], topic: str, payload: bytes, reason: str
) -> None:
    d, seen = dispatcher
    before = metrics.sample("edge_mqtt_rejected_total", {"reason": reason})
    assert not d.handle(topic, payload)
    assert seen == []
    assert metrics.sample("edge_mqtt_rejected_total", {"reason": reason}) == before + 1


@pytest.mark.parametrize(
    ("payload", "detail", "request_id"),
    [
        (b'{"type":"reboot","request_id":"r-9"}', "type: not one of config_reload, model_update", "r-9"),
        (b'{"type":5,"request_id":"r-9"}', "type: not one of config_reload, model_update", "r-9"),
        (b'{"request_id":"r-9"}', "type: missing", "r-9"),
        (b'["r-9"]', "the command is not a JSON object", None),  # it said ": model_attributes_type"
    ],
)
def test_a_command_of_an_unknown_or_missing_type_names_the_type_field(
    dispatcher: tuple[CommandDispatcher, list[object]], payload: bytes, detail: str, request_id: str | None
) -> None:
    # A review from the cloud's side: the outcome said only ": union_tag_invalid", naming no field
    d, _ = dispatcher
    assert not d.handle(TOPIC, payload)
    outcome = d.recent_outcomes()[-1]
    assert (outcome["reason"], outcome["detail"], outcome["request_id"]) == ("invalid", detail, request_id)
    assert "reboot" not in outcome["detail"]  # the value sent is never repeated


def test_a_command_without_a_handler_is_rejected() -> None:
    d = CommandDispatcher(DeviceSettings())
    before = metrics.sample("edge_mqtt_rejected_total", {"reason": "no_handler"})
    assert not d.handle(TOPIC, b'{"type":"config_reload","request_id":"x"}')
    assert metrics.sample("edge_mqtt_rejected_total", {"reason": "no_handler"}) == before + 1


def test_a_command_naming_a_field_twice_says_so_to_the_cloud(
    dispatcher: tuple[CommandDispatcher, list[object]],
) -> None:
    # Round 2: the cloud saw only "not JSON: JSONRefused", with no request_id; the same value twice is taken
    d, seen = dispatcher
    assert not d.handle(TOPIC, b'{"type":"config_reload","request_id":"r-1","request_id":"r-2"}')
    outcome = d.recent_outcomes()[-1]
    assert outcome["reason"] == "malformed" and "'request_id' twice" in outcome["detail"], outcome
    assert seen == []
    assert d.handle(TOPIC, b'{"type":"config_reload","request_id":"r-3","request_id":"r-3"}')


def test_a_failing_handler_is_contained() -> None:
    d = CommandDispatcher(DeviceSettings())

    def broken(_cmd: object) -> None:
        raise RuntimeError("boom")

    d.register("config_reload", broken)
    assert not d.handle(TOPIC, b'{"type":"config_reload","request_id":"x"}')


def test_a_board_whose_signing_key_does_not_read_says_so_when_it_refuses_an_update(tmp_path: Path) -> None:
    # Round 2: the refusal said "no signing key installed" for a key that was there but damaged
    key = tmp_path / "model-signing.pub"
    key.write_text("not a key\n")
    updates = ModelUpdates(UpdateSettings(public_key_file=key), tmp_path, lambda _: None, lambda _: None)
    asyncio.run(updates.start())
    commands = CommandDispatcher(DeviceSettings())
    commands.register("model_update", updates.handle_command)
    assert not commands.handle(commands.topic, json.dumps(UPDATE).encode())
    [outcome] = commands.recent_outcomes()
    assert outcome["reason"] == "refused" and outcome["accepted"] is False
    assert outcome["detail"].startswith("model updates off: ") and "public key" in outcome["detail"], outcome


def test_an_update_sent_while_the_board_starts_is_queued_not_refused(tmp_path: Path) -> None:
    # Round 2: sync connects before the engines load, and an update sent as the board came online was
    # refused for good with the reason "not started"; queued, it is taken once updates run (or, here,
    # where they cannot, it ends with the cause)
    key = tmp_path / "model-signing.pub"
    key.write_text("not a key\n")
    updates = ModelUpdates(UpdateSettings(public_key_file=key), tmp_path, lambda _: None, lambda _: None)
    commands = CommandDispatcher(DeviceSettings())
    commands.register("model_update", updates.handle_command)
    assert commands.handle(commands.topic, json.dumps(UPDATE).encode())
    assert commands.recent_outcomes()[-1]["accepted"] is True
    asyncio.run(updates.start())
    outcome = updates.last_outcome()
    assert outcome["ok"] is False and str(outcome["result"]).startswith("request r-1: model updates off: ")
    # and on a board with updates off (no key installed) it is refused at once, not queued for nothing
    off = ModelUpdates(UpdateSettings(public_key_file=tmp_path / "none.pub"), tmp_path, lambda _: None,
                       lambda _: None)
    commands.register("model_update", off.handle_command)
    assert not commands.handle(commands.topic, json.dumps(UPDATE | {"request_id": "r-2"}).encode())
    assert commands.recent_outcomes()[-1]["detail"].startswith("model updates are off on this board")


def test_registering_an_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        CommandDispatcher(DeviceSettings()).register("reboot", print)


def _wait_until(predicate: Callable[[], bool], timeout: float, pump: MqttConnection) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        pump.loop(0.02)  # the controller's own session: its publishes go out as it loops
    return predicate()


@pytest.mark.broker
def test_a_retained_command_is_refused_at_every_connect_and_a_live_one_still_runs(
    broker: Broker, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    # (review) a retained config_reload ran at every connect: each reload restarts the daemon, which
    # connects and gets it again, until systemd's StartLimitBurst stopped the board
    settings = plain_settings(broker)
    seen: list[ConfigReload] = []
    commands = CommandDispatcher(DeviceSettings())
    commands.register("config_reload", seen.append)
    controller = MqttConnection(settings, "fleet-controller", "", lambda *_: None, will=False)
    controller.connect()
    retained = metrics.sample("edge_mqtt_rejected_total", {"reason": "retained"})
    malformed = metrics.sample("edge_mqtt_rejected_total", {"reason": "malformed"})
    try:
        controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-kept"}', retain=True)
        for start in range(1, 4):  # each daemon start; the last stays up for a live command
            publisher = Publisher(outbox, DeviceSettings(), settings, commands=commands)
            publisher.start()
            try:
                assert _wait_until(lambda want=retained + start: metrics.sample(
                    "edge_mqtt_rejected_total", {"reason": "retained"}) == want, 5, controller)
                if start < 3:
                    continue
                controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-live"}')
                assert _wait_until(lambda: len(seen) == 1, 5, controller)
                controller.publish(commands.topic, b"", retain=True)  # the operator clears the retained one
                _wait_until(lambda: False, 0.5, controller)
            finally:
                publisher.stop()
        assert [c.request_id for c in seen] == ["r-live"]
        assert f"mosquitto_pub -r -n -t '{commands.topic}'" in caplog.text
        assert metrics.sample("edge_mqtt_rejected_total", {"reason": "malformed"}) == malformed
    finally:
        controller.disconnect()


@pytest.mark.broker
def test_a_command_published_retained_while_the_board_is_connected_is_refused(
    broker: Broker, outbox: Outbox
) -> None:
    # (review) the broker clears the retain flag on live delivery unless the subscription asks for
    # Retain-As-Published: every board online ran a retained command, only boards connecting later refused it
    settings = plain_settings(broker)
    seen: list[str] = []
    commands = CommandDispatcher(DeviceSettings())
    commands.register("config_reload", lambda c: seen.append(c.request_id))
    controller = MqttConnection(settings, "fleet-controller", "", lambda *_: None, will=False)
    controller.connect()
    retained = metrics.sample("edge_mqtt_rejected_total", {"reason": "retained"})
    publisher = Publisher(outbox, DeviceSettings(), settings, commands=commands)
    publisher.start()
    try:
        # a live command first: once it runs, the board's subscription is in place
        assert _wait_until(lambda: publisher.status()["connected"], 5, controller)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-live"}')
            _wait_until(lambda: bool(seen), 0.5, controller)
        assert seen[:1] == ["r-live"]
        seen.clear()
        controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-kept"}', retain=True)
        assert _wait_until(lambda: metrics.sample(
            "edge_mqtt_rejected_total", {"reason": "retained"}) == retained + 1, 5, controller), seen
        assert seen == []
    finally:
        controller.publish(commands.topic, b"", retain=True)
        _wait_until(lambda: False, 0.3, controller)
        publisher.stop()
        controller.disconnect()


@pytest.mark.broker
def test_every_command_outcome_reaches_the_cloud_in_the_heartbeats(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    # (review) a refused command (no signature, a bad request_id, an unknown field) left only a local log
    # line, and an accepted config_reload no reply at all: the cloud could not tell what a board did. Then
    # (round 2) commands within a second shared one reply heartbeat, which carried only the latest outcome,
    # and a model_update the board would not carry out was reported accepted.
    settings = plain_settings(broker, heartbeat_s=60.0)  # only the first is due: the rest are replies
    device = DeviceSettings()
    seen: list[str] = []
    commands = CommandDispatcher(device)
    commands.register("config_reload", lambda c: seen.append(c.request_id))

    def update(command: ModelUpdate) -> None:
        if command.model != "kt":
            raise CommandRefused(f"this board does not update {command.model!r}")
        seen.append(command.request_id)

    commands.register("model_update", update)
    receiver = Receiver(tmp_path / "recv.db", settings).start()
    controller = MqttConnection(settings, "fleet-controller", "", lambda *_: None, will=False)
    controller.connect()
    publisher = Publisher(outbox, device, settings, commands=commands)
    publisher.start()

    def outcomes() -> list[dict[str, Any]]:
        heartbeat = receiver.report(device.device_id)["heartbeat"]
        return heartbeat["health"].get("commands", []) if heartbeat else []

    try:
        assert _wait_until(lambda: publisher.status()["connected"]
                           and receiver.report(device.device_id)["heartbeat"] is not None, 5, controller)
        assert outcomes() == []
        unsigned = {k: v for k, v in UPDATE.items() if k != "signature"} | {"request_id": "r-nosig"}
        cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
            (unsigned, {"request_id": "r-nosig", "type": "model_update", "accepted": False,
                        "reason": "invalid", "detail": "model_update.signature: missing"}),
            ({"type": "config_reload", "request_id": "r 42"},
             {"request_id": None, "type": "config_reload", "accepted": False, "reason": "invalid",
              "detail": "config_reload.request_id: string_pattern_mismatch"}),
            ({"type": "config_reload", "request_id": "r-extra", "force": True},
             {"request_id": "r-extra", "type": "config_reload", "accepted": False, "reason": "invalid",
              "detail": "config_reload.force: extra_forbidden"}),
            (UPDATE | {"request_id": "r-attn", "model": "attention"},
             {"request_id": "r-attn", "type": "model_update", "accepted": False, "reason": "refused",
              "detail": "this board does not update 'attention'"}),
            ({"type": "config_reload", "request_id": "r-ok"},
             {"request_id": "r-ok", "type": "config_reload", "accepted": True, "reason": None,
              "detail": "accepted"}),
        ]
        sent = time.time()
        for command, _ in cases:  # back to back, well within a second
            controller.publish(commands.topic, json.dumps(command).encode())
        assert _wait_until(lambda: len(outcomes()) == len(cases), 5, controller), outcomes()
        got = outcomes()
        wanted = [expected for _, expected in cases]
        assert [{k: o[k] for k in e} for o, e in zip(got, wanted, strict=True)] == wanted
        assert all(sent - 1 <= o["at"] <= time.time() for o in got)
        assert seen == ["r-ok"]
    finally:
        publisher.stop()
        controller.disconnect()
        receiver.stop()


@pytest.mark.broker
def test_a_command_taken_just_before_a_stop_still_gets_its_heartbeat(
    broker: Broker, outbox: Outbox, tmp_path: Path
) -> None:
    # A config_reload stops the board at once; its outcome, due at most a second after the last heartbeat,
    # must go out before the disconnect or the cloud never hears of it (the outcome is kept in memory)
    settings = plain_settings(broker, heartbeat_s=60.0)
    device = DeviceSettings()
    seen: list[str] = []
    commands = CommandDispatcher(device)
    commands.register("config_reload", lambda c: seen.append(c.request_id))
    receiver = Receiver(tmp_path / "recv.db", settings).start()
    controller = MqttConnection(settings, "fleet-controller", "", lambda *_: None, will=False)
    controller.connect()
    publisher = Publisher(outbox, device, settings, commands=commands)
    publisher.start()
    try:
        assert _wait_until(lambda: receiver.report(device.device_id)["heartbeat"] is not None, 5, controller)
        controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-stop"}')
        assert _wait_until(lambda: seen == ["r-stop"], 5, controller)
        publisher.stop()
        assert _wait_until(lambda: [o["request_id"] for o in receiver.report(device.device_id)["heartbeat"]
                                    ["health"]["commands"]] == ["r-stop"], 3, controller)
    finally:
        publisher.stop()
        controller.disconnect()
        receiver.stop()


@pytest.mark.broker
def test_a_command_too_large_to_read_is_dropped_by_the_broker_and_a_merely_oversized_one_refused(
    broker: Broker, outbox: Outbox
) -> None:
    # A review: a 64 MiB command was read whole before the 16 KiB check (the daemon's peak memory 128 ->
    # 335 MB). Over MQTT 5 the board tells the broker the largest packet it takes: 1 MiB.
    settings = plain_settings(broker)
    seen: list[str] = []
    commands = CommandDispatcher(DeviceSettings())
    commands.register("config_reload", lambda c: seen.append(c.request_id))
    controller = MqttConnection(settings, "fleet-controller", "", lambda *_: None, will=False)
    controller.connect()
    oversized = metrics.sample("edge_mqtt_rejected_total", {"reason": "oversized"})
    publisher = Publisher(outbox, DeviceSettings(), settings, commands=commands)
    publisher.start()
    try:
        assert _wait_until(lambda: publisher.status()["connected"], 5, controller)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:  # the board's subscription in place
            controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-first"}')
            _wait_until(lambda: bool(seen), 0.5, controller)
        huge = b'{"type":"config_reload","request_id":"r-huge","pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
        controller.publish(commands.topic, huge)
        controller.publish(commands.topic, b'{"pad":"' + b"x" * (MAX_COMMAND_BYTES + 10) + b'"}')
        controller.publish(commands.topic, b'{"type":"config_reload","request_id":"r-after"}')
        assert _wait_until(lambda: "r-after" in seen, 10, controller), seen
        # the 4 MiB one never reached the board; the 16 KiB + 10 one did, and was refused as oversized
        assert metrics.sample("edge_mqtt_rejected_total", {"reason": "oversized"}) == oversized + 1
        assert "r-huge" not in seen
    finally:
        publisher.stop()
        controller.disconnect()
