"""Clicker tokens (web.client_tokens_file): each may only post answers, has a name, and can be revoked
without touching the teacher's token. Over real HTTP from the LAN address, with the real KT service."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import main as cli_main
from edge_agent.config import KTSettings, read_token_file
from edge_agent.errors import ConfigError
from edge_agent.kt.package import load_package
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.service import KTService
from edge_agent.live import LiveBoard
from edge_agent.telemetry import metrics
from edge_agent.web.answers import answer_routes
from edge_agent.web.camera_pause import camera_routes
from edge_agent.web.clients import parse_clients, watch_clients
from tests.web.conftest import WEB_TOKEN
from tests.web.harness import ServerThread, non_loopback_ipv4
from tests.web.test_access import _request

SECRET = b"fedcba9876543210" * 2  # 16 different bytes, as a hex secret has


def _board_config(tmp_path: Path, clients: bool = True) -> Path:
    secret = tmp_path / "pseudonym.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    lines = ["[device]", f'pseudonym_secret_file = "{secret}"', "[web]"]
    if clients:
        lines.append(f'client_tokens_file = "{tmp_path / "web-clients"}"')
    config = tmp_path / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def _add(config: Path, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(["web", "clients", "add", name, "--config", str(config)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{name}: ")
    return line.split(": ", 1)[1]


def test_a_client_line_that_does_not_fit_is_named_with_its_line() -> None:
    token = "t" * 24
    parsed = parse_clients(f"# clickers\nacme-3a {token}  # room 3A\n", "f")
    assert parsed.name_of(token) == "acme-3a" and parsed.name_of("t" * 25) is None
    for text, problem in [
        (f"acme {token} extra\n", "line 1 is not 'name token'"),
        (f"\n-acme {token}\n", "line 2 has a name other than"),
        ("acme short\n", "line 1 has a token shorter than 16"),
        (f"a {token}\nb {token}\n", "line 2 repeats a name or a token"),
        (f"a {token}\na {'u' * 24}\n", "line 2 repeats a name or a token"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse_clients(text, "f")


@pytest.fixture()
def lan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, Any]]:
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    config = _board_config(tmp_path)
    token = _add(config, "acme-3a", capsys)
    package = load_package()
    settings = KTSettings()
    svc = KTService(package, OnnxRuntimeEngine(package.step_model), settings, Pseudonymizer(SECRET))
    svc.start()
    board = LiveBoard()
    server = ServerThread(board, token=WEB_TOKEN, host="0.0.0.0", client_tokens=tmp_path / "web-clients",
                          route_tables=[answer_routes(svc, settings), camera_routes(lambda: None)]).start()
    yield {"address": address, "port": server.port, "token": token, "config": config, "package": package,
           "server": server}
    server.stop()
    svc.stop()


def _post(lan: dict[str, Any], bearer: str, event: str) -> tuple[int, dict[str, Any]]:
    item = lan["package"].items[0]
    body = json.dumps({"student_id": "stu-1", "item_id": item.id, "correct": True,
                       "answered_at": time.time(), "client_event_id": event})
    status, _, raw = _request(lan["address"], lan["port"], "/api/v1/answers", {
        "Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}, "POST", body)
    return status, json.loads(raw)


def _client_requests(name: str) -> float:
    return metrics.REGISTRY.get_sample_value("edge_web_client_requests_total", {"client": name}) or 0.0


def test_a_clicker_token_posts_answers_and_opens_nothing_else(lan: dict[str, Any]) -> None:
    before = _client_requests("acme-3a")
    status, body = _post(lan, lan["token"], "c-1")
    assert status == 200 and body["status"] == "applied"
    assert _client_requests("acme-3a") == before + 1
    for path in ("/", "/api/v1/live", "/api/v1/class/mastery"):
        clicker = {"Authorization": f"Bearer {lan['token']}"}
        status, _, raw = _request(lan["address"], lan["port"], path, clicker)
        assert status == 403 and json.loads(raw)["error"] == "client_scope", path
        assert "acme-3a" in json.loads(raw)["detail"]
    # the teacher's token still opens everything
    teacher = {"Authorization": f"Bearer {WEB_TOKEN}"}
    status, _, _ = _request(lan["address"], lan["port"], "/api/v1/live", teacher)
    assert status == 200
    assert _post(lan, "not-a-client-token-at-all", "c-2")[0] == 401


def test_a_clicker_token_cannot_pause_the_camera_and_the_teacher_hears_when_there_is_none(
    lan: dict[str, Any],
) -> None:
    body = json.dumps({"minutes": 45})
    for bearer, status, says in ((lan["token"], 403, "may only post answers"),
                                 (WEB_TOKEN, 409, "the camera is not in use on this board")):
        headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
        got, _, raw = _request(lan["address"], lan["port"], "/api/v1/camera/pause", headers, "POST", body)
        reply = json.loads(raw)
        assert got == status and says in reply.get("detail", reply.get("error", "")), reply


def test_a_revoked_clicker_is_refused_within_seconds_and_the_others_keep_working(
    lan: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    other = _add(lan["config"], "tablets-3a", capsys)
    deadline = time.monotonic() + 8
    while _post(lan, other, "t-1")[0] != 200:  # the board reads the file again within about 4 s
        assert time.monotonic() < deadline, "the new client's token was not taken within 8 s"
        time.sleep(0.2)
    assert cli_main(["web", "clients", "remove", "acme-3a", "--config", str(lan["config"])]) == 0
    assert "revoked" in capsys.readouterr().out
    deadline = time.monotonic() + 8
    while _post(lan, lan["token"], f"c-{time.monotonic()}")[0] != 401:
        assert time.monotonic() < deadline, "the revoked token still worked after 8 s"
        time.sleep(0.2)
    assert _post(lan, other, "t-2")[0] == 200


def test_a_clicker_removed_by_an_edit_that_leaves_a_bad_line_is_refused_and_nothing_new_is_granted(
    lan: dict[str, Any], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    # A review: IT deleted acme-3a's line by hand and left a typo on another; the whole file was refused and
    # "what was read before stays in use", so the revoked token kept getting 200 until the typo was found.
    other = _add(lan["config"], "tablets-3a", capsys)
    deadline = time.monotonic() + 8
    while _post(lan, other, "e-1")[0] != 200:
        assert time.monotonic() < deadline, "the new client's token was not taken within 8 s"
        time.sleep(0.2)
    path = lan["config"].parent / "web-clients"
    newcomer = "n" * 24
    path.write_text(f"tablets-3a {other}\nnew-3b {newcomer}\nrooom-3c short\n")  # acme-3a's line is gone
    deadline = time.monotonic() + 8
    while _post(lan, lan["token"], f"e-{time.monotonic()}")[0] != 401:
        assert time.monotonic() < deadline, "the token whose line was deleted still worked after 8 s"
        time.sleep(0.2)
    assert _post(lan, other, "e-2")[0] == 200  # its line is still there, unchanged
    assert _post(lan, newcomer, "e-3")[0] == 401  # nothing new is granted from a file with a bad line
    health = lan["server"].component.clients.health()
    assert not health.ok and "line 3 has a token shorter than 16" in health.detail
    assert "acme-3a" in caplog.text and "refused" in caplog.text


def test_the_clients_command_keeps_tokens_private_and_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _board_config(tmp_path)
    token = _add(config, "acme-3a", capsys)
    path = tmp_path / "web-clients"
    assert os.stat(path).st_mode & 0o777 == 0o600 and token in path.read_text()
    assert cli_main(["web", "clients", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "acme-3a"  # names only, never the tokens
    assert cli_main(["web", "clients", "add", "acme-3a", "--config", str(config)]) == 1
    assert "already has a token" in capsys.readouterr().out
    assert cli_main(["web", "clients", "remove", "nobody", "--config", str(config)]) == 1
    assert cli_main(["web", "clients", "add", "bad name!", "--config", str(config)]) == 2
    with pytest.raises(SystemExit) as no_name:  # argparse: "the following arguments are required: name"
        cli_main(["web", "clients", "add", "--config", str(config)])
    assert no_name.value.code == 2
    path.chmod(0o644)
    assert cli_main(["web", "clients", "list", "--config", str(config)]) == 1
    assert "readable by group or others" in capsys.readouterr().out
    path.chmod(0o600)
    path.write_bytes(b"acme \xff\xfe" + b"x" * 30 + b"\n")
    assert cli_main(["web", "clients", "add", "other", "--config", str(config)]) == 1
    assert "utf-8" in capsys.readouterr().out.lower()
    unset = tmp_path / "unset"
    unset.mkdir()
    assert cli_main(["web", "clients", "list", "--config", str(_board_config(unset, clients=False))]) == 2


def test_files_saved_by_notepad_with_a_byte_order_mark_are_read_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: Notepad's BOM made config.toml "Invalid statement (line 1, column 1)", the clicker tokens
    # file "line 1 is not 'name token'" (line 1 was a comment), and web.token a token nobody could type.
    config = _board_config(tmp_path)
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes().replace(b"\n", b"\r\n"))
    token = _add(config, "acme-3a", capsys)
    clients = tmp_path / "web-clients"
    clients.write_bytes(b"\xef\xbb\xbf# clicker tokens\r\n" + clients.read_bytes())
    assert cli_main(["web", "clients", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "acme-3a"
    watched = watch_clients(clients)  # as the daemon reads it
    assert watched.current().name_of(token) == "acme-3a" and watched.problem is None
    web_token = tmp_path / "web.token"
    web_token.write_bytes(b"\xef\xbb\xbf" + token.encode() + b"\r\n")
    web_token.chmod(0o600)
    assert read_token_file(web_token) == token


@pytest.mark.skipif(os.geteuid() != 0, reason="the file is given to the daemon's user only when run as root")
def test_a_board_not_yet_provisioned_gets_no_token_written_that_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Round 2: with no pseudonym.key (whose owner the file is given to) the command failed with "[Errno 2]"
    # after writing the new token, which was never printed; the next add said the name already had one
    config = _board_config(tmp_path)
    (tmp_path / "pseudonym.key").unlink()
    assert cli_main(["web", "clients", "add", "acme-3a", "--config", str(config)]) == 1
    assert "provision this board first" in capsys.readouterr().out
    assert not (tmp_path / "web-clients").exists()


def test_the_clients_command_takes_config_before_or_after_the_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `web clients add --config F NAME` failed ("unrecognized arguments: NAME") where the others worked.
    config = str(_board_config(tmp_path))
    for argv in (["web", "clients", "add", "--config", config, "c0"],
                 ["web", "clients", "add", "c1", "--config", config],
                 ["web", "clients", "--config", config, "add", "c2"],
                 ["--config", config, "web", "clients", "add", "c3"]):
        assert cli_main(argv) == 0, argv
    capsys.readouterr()
    assert cli_main(["web", "clients", "list", "--config", config]) == 0
    assert capsys.readouterr().out.split() == ["c0", "c1", "c2", "c3"]
    assert cli_main(["web", "clients", "remove", "--config", config, "c0"]) == 0


def test_doctor_says_how_many_clicker_tokens_or_which_line_is_wrong(tmp_path: Path) -> None:
    from edge_agent.doctor import check_client_tokens

    path = tmp_path / "web-clients"
    path.write_text(f"acme-3a {'a' * 24}\ntablets {'b' * 24}\n")
    assert check_client_tokens(path).detail.startswith("2 clients may post answers")
    path.write_text(f"acme-3a {'a' * 24}\ntablets\n")
    broken = check_client_tokens(path)
    assert not broken.ok and "line 2 is not 'name token'" in broken.detail


def test_a_deleted_clients_file_refuses_every_clicker_after_an_editors_grace(tmp_path: Path) -> None:
    # A review: after `rm` the old tokens were still taken 10 s later and the board went 503 (the file was
    # "unreadable", what was read before stayed in use). Deleting it now revokes them all, as emptying it.
    from edge_agent.watched_file import EMPTY_GRACE_CHECKS
    from edge_agent.web.clients import watch_clients
    from tests.kt.test_roster import Clock

    path = tmp_path / "web-clients"
    token = "t" * 24
    path.write_text(f"acme-3a {token}\n")
    clock = Clock()
    clients = watch_clients(path, recheck_s=2.0, clock=clock)
    assert clients.current().name_of(token) == "acme-3a"
    path.unlink()
    clock.now = 2.0
    assert clients.current().name_of(token) == "acme-3a"  # an editor may rename it away and write anew
    clock.now = 2.0 + EMPTY_GRACE_CHECKS * 2.0
    assert clients.current().name_of(token) is None
    health = clients.health()
    assert health.ok and health.detail == f"no clicker tokens: every clicker is refused ({path} is missing)"
    path.write_text(f"acme-3a {token}\n")
    clock.now += 2.0
    clients.current()  # back: taken once it has not changed for a check
    clock.now += 2.0
    assert clients.current().name_of(token) == "acme-3a"
    assert clients.health().detail == f"1 clicker tokens ({path})"
    # Moved away and back unchanged within the grace, then truncated by an editor saving in place: the
    # truncation gets its own grace (a second review: the first grace's timer ran on, refused at once).
    aside = tmp_path / "web-clients.bak"
    path.rename(aside)
    clock.now += 2.0
    assert clients.current().name_of(token) == "acme-3a"
    aside.rename(path)
    clock.now += 2.0
    assert clients.current().name_of(token) == "acme-3a"
    clock.now += 2.0
    path.write_text("")
    clock.now += 2.0
    assert clients.current().name_of(token) == "acme-3a"


def test_a_clients_file_with_a_bad_line_keeps_only_the_clients_still_written_in_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from edge_agent.web.clients import watch_clients
    from tests.kt.test_roster import Clock

    path = tmp_path / "web-clients"
    a, b, c = "a" * 24, "b" * 24, "c" * 24
    path.write_text(f"acme-3a {a}\ntablets-3a {b}\nvendor-3c {c}\n")
    clock = Clock()
    clients = watch_clients(path, recheck_s=2.0, clock=clock)
    # acme-3a commented out, vendor-3c's token given to another name, and a byte that is not UTF-8
    path.write_bytes(f"# acme-3a {a}\ntablets-3a {b}\nother {c}\n".encode() + b"caf\xe9 " + b"d" * 24 + b"\n")
    clock.now = 2.0
    clients.current()  # the check that sees the change; the next one reads it
    clock.now = 4.0
    now = clients.current()
    assert (now.name_of(a), now.name_of(b), now.name_of(c)) == (None, "tablets-3a", None)
    assert "acme-3a, vendor-3c no longer in" in caplog.text
    health = clients.health()
    assert not health.ok and "utf-8" in health.detail.lower()
    assert "only what the file still lists stays in use (1 clicker tokens)" in health.detail
    path.write_text(f"acme-3a {a}\ntablets-3a {b}\nbad\n")  # put back, but still broken: not taken
    clock.now = 6.0
    clients.current()
    clock.now = 8.0
    assert clients.current().name_of(a) is None and "line 3 is not 'name token'" in clients.health().detail
    path.write_text(f"acme-3a {a}\ntablets-3a {b}\n")  # fixed: the file is what counts again
    clock.now = 10.0
    clients.current()
    clock.now = 12.0
    assert clients.current().name_of(a) == "acme-3a" and clients.health().ok


def test_a_wrong_clicker_token_is_told_to_get_a_clicker_token_not_the_boards_web_token(
    lan: dict[str, Any], capsys: pytest.CaptureFixture[str],
) -> None:
    # Review: a revoked or mistyped clicker token got "Ask your school IT for the board's web token", which
    # sent the vendor for the token that also opens the teacher view and the class data.
    assert cli_main(["web", "clients", "remove", "acme-3a", "--config", str(lan["config"])]) == 0
    deadline = time.monotonic() + 8
    while (refused := _post(lan, lan["token"], f"r-{time.monotonic()}"))[0] != 401:  # revoked within ~4 s
        assert time.monotonic() < deadline, "the revoked token still worked after 8 s"
        time.sleep(0.2)
    for bearer in (lan["token"], "mistyped-clicker-token"):
        status, body = refused if bearer == lan["token"] else _post(lan, bearer, "r-typo")
        assert status == 401 and body["error"] == "bad_token", body
        assert "not (or no longer) a clicker token of this board" in body["detail"], body
        assert "edge-agent web clients add NAME" in body["detail"] and "web token" not in body["detail"]
    # and one sent with no token at all is told the same, not to sign in with the web token
    status, _, raw = _request(lan["address"], lan["port"], "/api/v1/answers",
                              {"Content-Type": "application/json"}, "POST", "{}")
    assert status == 401 and "clicker token" in json.loads(raw)["detail"], raw
    assert "web token" not in json.loads(raw)["detail"], raw
    # the teacher view keeps its wording
    status, _, raw = _request(lan["address"], lan["port"], "/api/v1/live",
                              {"Authorization": "Bearer mistyped-clicker-token"})
    assert status == 401 and "the board's web token" in json.loads(raw)["detail"]


def test_clients_added_together_are_all_kept_with_the_tokens_they_printed(tmp_path: Path) -> None:
    # A review: six `web clients add` run at once each printed a token, but the file kept fewer of them
    # (each read the old file and the last rename won); they now take the lock `kt roster` takes.
    import subprocess
    import sys

    config = _board_config(tmp_path)
    runs = [subprocess.Popen([sys.executable, "-m", "edge_agent", "web", "clients", "add", f"room-{n}",
                              "--config", str(config)], stdout=subprocess.PIPE, text=True) for n in range(8)]
    printed = {}
    for run in runs:
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0, out
        name, token = out.splitlines()[0].split(": ", 1)
        printed[name] = token
    kept = parse_clients((tmp_path / "web-clients").read_text(), "f")
    assert {kept.name_of(token) for token in printed.values()} == {f"room-{n}" for n in range(8)}
