"""The class roster: its file, its reloads, the answer API refusing students not on it, and the
`edge-agent kt roster` command that makes it from the school's list without writing the raw ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_agent.cli import main as cli_main
from edge_agent.config import KTSettings
from edge_agent.errors import ConfigError
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.pseudonym import Pseudonymizer
from edge_agent.kt.roster import Roster, format_roster, parse_roster, watch_roster
from edge_agent.kt.service import KTService
from edge_agent.web.answers import answer_routes
from tests.kt.test_answers_api import Server, _good

SECRET = b"0123456789abcdef" * 2  # 16 different bytes, as a hex secret has
PSEUDO = Pseudonymizer(SECRET)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watched_roster_of_a(tmp_path: Path) -> tuple[Path, Clock, Roster]:
    """A roster file listing student "a", watched every 2 s of a clock the test moves."""
    path = tmp_path / "roster.txt"
    path.write_text(format_roster([PSEUDO("a")]))
    clock = Clock()
    return path, clock, watch_roster(path, recheck_s=2.0, clock=clock)


def test_a_roster_line_that_is_not_a_pseudonym_is_named_with_its_line() -> None:
    good = PSEUDO("stu-1")
    assert parse_roster(format_roster([good, PSEUDO("stu-2")]), "r") == {good, PSEUDO("stu-2")}
    assert parse_roster(f"# class 3A\n\n{good}  # Li Wei\n", "r") == {good}
    with pytest.raises(ConfigError, match="r line 3 is not a student pseudonym"):
        parse_roster(f"{good}\n\nstu-2\n", "r")  # a raw id: the file was written by hand


def test_the_roster_is_read_again_when_it_changes_and_a_damaged_file_keeps_the_last(tmp_path: Path) -> None:
    path, clock, roster = _watched_roster_of_a(tmp_path)
    assert roster.current() == {PSEUDO("a")}
    assert roster.health().ok and roster.health().detail == f"1 students ({path})"
    path.write_text(format_roster([PSEUDO("a"), PSEUDO("b")]))
    assert roster.current() == {PSEUDO("a")}  # not looked at again within recheck_s
    clock.now = 2.0
    assert roster.current() == {PSEUDO("a")}  # changed since the last check: perhaps still being written
    clock.now = 4.0
    assert roster.current() == {PSEUDO("a"), PSEUDO("b")}  # unchanged for a check: taken
    path.write_text("garbage\n")
    clock.now = 6.0
    roster.current()
    clock.now = 8.0
    assert roster.current() == {PSEUDO("a"), PSEUDO("b")} and "line 1" in (roster.problem or "")
    health = roster.health()  # the daemon's health shows it, not only the log
    assert not health.ok and "line 1" in health.detail
    assert "what was read before stays in use" in health.detail
    path.unlink()
    clock.now = 10.0
    assert roster.current() == {PSEUDO("a"), PSEUDO("b")} and "cannot read" in (roster.problem or "")
    path.write_text(format_roster([PSEUDO("c")]))
    clock.now = 12.0
    roster.current()
    clock.now = 14.0
    assert roster.health().ok and roster.current() == {PSEUDO("c")}
    missing = watch_roster(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="cannot read"):
        missing.current()
    assert not missing.health().ok and "nothing has been read from it" in missing.health().detail


@pytest.fixture(scope="module")
def roster_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

    package = load_package()
    path = tmp_path_factory.mktemp("roster") / "roster.txt"
    path.write_text(format_roster([PSEUDO("stu-1"), PSEUDO("stu-2")]))
    settings = KTSettings()
    svc = KTService(package, OnnxRuntimeEngine(package.step_model), settings, PSEUDO)
    svc.start()
    app = web.Application()
    app.add_routes(answer_routes(svc, settings, watch_roster(path, recheck_s=0.0)))
    server = Server(app)
    yield server, svc, path
    server.close()
    svc.stop()


def test_answers_for_a_student_not_on_the_roster_are_refused_and_nothing_of_the_batch_applied(
    roster_api: tuple[Server, KTService, Path],
) -> None:
    server, svc, _ = roster_api
    package: KTPackage = svc.package
    status, body = server.request("POST", "/api/v1/answers", _good(package, "stu-1", "r-1"))
    assert status == 200 and body["status"] == "applied"
    students = svc.student_count()
    batch = {"answers": [_good(package, "stu-2", "r-2"), _good(package, "invented-9999", "r-3")]}
    status, body = server.request("POST", "/api/v1/answers", batch)
    assert status == 400 and body["field"] == "student_id"
    assert body["error"].startswith("answers[1]: this student is not on the board's class roster")
    assert "invented-9999" not in body["error"]
    assert svc.student_count() == students  # stu-2's answer in the same batch was not applied


def test_a_student_added_to_the_roster_is_taken_and_an_unreadable_roster_refuses_with_503(
    roster_api: tuple[Server, KTService, Path],
) -> None:
    server, svc, path = roster_api
    before = path.read_text()
    try:
        assert server.request("POST", "/api/v1/answers", _good(svc.package, "stu-3", "n-1"))[0] == 400
        path.write_text(before + PSEUDO("stu-3") + "\n")
        # the check at this request sees the change; the next one, with the file unchanged since, takes it
        assert server.request("POST", "/api/v1/answers", _good(svc.package, "stu-1", "n-0"))[0] == 200
        assert server.request("POST", "/api/v1/answers", _good(svc.package, "stu-3", "n-1"))[0] == 200
        path.write_bytes(b"\xff\xfe not text")
        # the last roster read stays in use: the board keeps taking its class's answers
        assert server.request("POST", "/api/v1/answers", _good(svc.package, "stu-3", "n-2"))[0] == 200
    finally:
        path.write_text(before)
    fresh = Server(_routes_with(svc, watch_roster(path.with_name("absent.txt"))))
    try:
        status, body = fresh.request("POST", "/api/v1/answers", _good(svc.package, "stu-1", "n-3"))
        assert status == 503 and "until the class roster can be read" in body["error"]
    finally:
        fresh.close()


def _routes_with(svc: KTService, roster: Roster) -> web.Application:
    app = web.Application()
    app.add_routes(answer_routes(svc, KTSettings(), roster))
    return app


def _board_config(tmp_path: Path, roster: bool = True) -> Path:
    secret = tmp_path / "pseudonym.key"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    config = tmp_path / "config.toml"
    lines = ["[device]", f'pseudonym_secret_file = "{secret}"', "[kt]"]
    if roster:
        lines.append(f'roster_file = "{tmp_path / "roster.txt"}"')
    config.write_text("\n".join(lines) + "\n")
    return config


def test_an_id_with_a_hash_in_it_is_listed_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Privacy review: "3A#07" was cut at the "#" and listed as "3A": 3A#07 refused for good, 3A taken
    config = _board_config(tmp_path)
    ids = tmp_path / "class-3a.txt"
    ids.write_text("# class 3A\n三年级2班#15\n  # left in October\n3A#07\n20260001   # Wang Xiaoming\n"
                   "20260002\t# Li Hua (moved from 3B)\n")
    assert cli_main(["kt", "roster", "set", str(ids), "--config", str(config)]) == 0
    listed = parse_roster((tmp_path / "roster.txt").read_text(), "r")
    assert listed == {PSEUDO("三年级2班#15"), PSEUDO("3A#07"), PSEUDO("20260001"), PSEUDO("20260002")}


def test_the_roster_command_writes_pseudonyms_only_and_adds_removes_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _board_config(tmp_path)
    ids = tmp_path / "class-3a.txt"
    ids.write_text("S2026-001\nS2026-002\n# left in October\n\nS2026-003\n")
    assert cli_main(["kt", "roster", "set", str(ids), "--config", str(config)]) == 0
    roster = tmp_path / "roster.txt"
    text = roster.read_text()
    assert "S2026" not in text and parse_roster(text, "r") == {PSEUDO(f"S2026-00{n}") for n in (1, 2, 3)}
    assert os.stat(roster).st_mode & 0o777 == 0o600
    export = tmp_path / "sis-export.csv"
    export.write_text("\ufeffname,student_no\nLi Wei,S2026-004\nZhang Min,S2026-001\n")
    column = ["--column", "student_no", "--config", str(config)]
    assert cli_main(["kt", "roster", "add", str(export), *column]) == 0
    assert "4 students (was 3)" in capsys.readouterr().out
    leaving = tmp_path / "leaving.txt"
    leaving.write_text("S2026-002\n")
    assert cli_main(["kt", "roster", "remove", str(leaving), "--config", str(config)]) == 0
    assert cli_main(["kt", "roster", "count", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{roster}: 3 students"  # counted, not changed
    assert parse_roster(roster.read_text(), "r") == {PSEUDO(f"S2026-00{n}") for n in (1, 3, 4)}


def test_commands_beside_the_daemon_read_a_config_holding_a_newer_release_key_as_the_daemon_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # After a rollback the daemon runs on such a config; these refused it as a typo ("check spelling")
    config = _board_config(tmp_path)
    text = config.read_text().replace("[device]\n", "[device]\nfuture_key = 1\n")
    config.write_text(text + f'[web]\nclient_tokens_file = "{tmp_path / "clients"}"\n')
    for command in (["kt", "roster", "count"], ["web", "clients", "list"], ["config", "show"]):
        assert cli_main([*command, "--config", str(config)]) == 0, command
        named = "device.future_key (line 2) is not a key this release knows; ignored"
        assert named in capsys.readouterr().err
    assert cli_main(["config", "check", "--config", str(config), "--no-files"]) == 1  # where it is written


def test_the_roster_command_says_what_is_wrong_and_leaves_the_roster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unset = tmp_path / "unset"
    unset.mkdir()
    assert cli_main(["kt", "roster", "count", "--config", str(_board_config(unset, roster=False))]) == 2
    assert "kt.roster_file is not set" in capsys.readouterr().out
    config = _board_config(tmp_path)
    export = tmp_path / "export.csv"
    export.write_text("name,id\nLi Wei,S1\n")
    column = ["--column", "student_no", "--config", str(config)]
    assert cli_main(["kt", "roster", "set", str(export), *column]) == 1
    assert "has no column 'student_no' (its columns: name, id)" in capsys.readouterr().out
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    assert cli_main(["kt", "roster", "set", str(empty), "--config", str(config)]) == 1
    assert "holds no student ids" in capsys.readouterr().out
    assert cli_main(["kt", "roster", "add", "--config", str(config)]) == 2
    # Review: a tab-separated export read without --column listed "S1<TAB>Li Wei", whom the answer API
    # refuses whatever a clicker sends (control character); said, and nothing written
    tabbed = tmp_path / "export.tsv"
    tabbed.write_text("S1\tLi Wei\nS2\tWang Fang\n")
    assert cli_main(["kt", "roster", "set", str(tabbed), "--config", str(config)]) == 1
    assert "is not a student id the answer API accepts" in capsys.readouterr().out
    assert not (tmp_path / "roster.txt").exists()


def test_a_roster_caught_half_saved_keeps_the_students_read_before(tmp_path: Path) -> None:
    # Review: an editor saving in place truncates first; read at that moment, every listed student was
    # refused (400, which clients do not retry) until the next check, and nothing showed in health.
    path, clock, roster = _watched_roster_of_a(tmp_path)
    assert roster.current() == {PSEUDO("a")}
    path.write_text("")
    clock.now = 2.0
    assert roster.current() == {PSEUDO("a")} and roster.health().ok
    path.write_text(format_roster([PSEUDO("a"), PSEUDO("b")]))
    clock.now = 4.0
    roster.current()
    clock.now = 6.0
    assert roster.current() == {PSEUDO("a"), PSEUDO("b")}
    # emptied on purpose (still empty three checks later): taken, not ignored for ever
    path.write_text("")
    for now in (8.0, 10.0, 12.0):
        clock.now = now
        assert roster.current() == {PSEUDO("a"), PSEUDO("b")}
    clock.now = 14.0
    roster.current()
    assert roster.current() != {PSEUDO("a"), PSEUDO("b")} or not roster.health().ok


def test_doctor_reports_the_roster_count_or_why_it_cannot_be_read(tmp_path: Path) -> None:
    from edge_agent.doctor import check_roster

    path = tmp_path / "roster.txt"
    assert not check_roster(path).ok
    path.write_text("# empty for now\n")
    empty = check_roster(path)
    assert empty.ok and empty.warning and "every answer is refused" in empty.detail
    path.write_text(format_roster([PSEUDO("a"), PSEUDO("b")]))
    assert check_roster(path).detail.startswith("2 students")
    path.write_text("stu-1\n")
    broken = check_roster(path)
    assert not broken.ok and "line 1" in broken.detail


def test_roster_changes_run_together_lose_no_student(tmp_path: Path) -> None:
    # A review: 8 'kt roster add' run at once left 7 students, each run saying its student was added
    import subprocess
    import sys

    config = _board_config(tmp_path)
    lists = []
    for n in range(8):
        path = tmp_path / f"one-{n}.txt"
        path.write_text(f"S9-{n}\n")
        lists.append(path)
    runs = [subprocess.Popen([sys.executable, "-m", "edge_agent", "kt", "roster", "add", str(p), "--config",
                              str(config)], stdout=subprocess.DEVNULL) for p in lists]
    assert [r.wait(60) for r in runs] == [0] * 8
    assert parse_roster((tmp_path / "roster.txt").read_text(), "r") == {PSEUDO(f"S9-{n}") for n in range(8)}


def test_a_class_list_that_is_not_utf8_says_how_to_convert_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gbk = tmp_path / "班级.csv"
    gbk.write_bytes("学号\n20260001\n".encode("gbk"))
    assert cli_main(["kt", "roster", "set", str(gbk), "--config", str(_board_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "is not UTF-8 text (GBK, perhaps" in out and "CSV UTF-8" in out and "iconv -f GBK" in out


def test_a_quoted_one_column_list_is_read_unquoted_and_set_replaces_a_roster_of_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: '"20260001"' was listed with its quotes (so no real student was accepted), and a class
    # list copied over the roster by hand could not be replaced: 'set' said to make it with 'kt roster'
    config = _board_config(tmp_path)
    roster = tmp_path / "roster.txt"
    roster.write_text("20260001\n20260002\n")  # the raw list, not pseudonyms
    quoted = tmp_path / "export.csv"
    quoted.write_text('"20260001"\n"20260002"\n')
    assert cli_main(["kt", "roster", "add", str(quoted), "--config", str(config)]) == 1  # add keeps it
    assert cli_main(["kt", "roster", "set", str(quoted), "--config", str(config)]) == 0
    assert "2 students (was 0)" in capsys.readouterr().out
    assert parse_roster(roster.read_text(), "r") == {PSEUDO("20260001"), PSEUDO("20260002")}


def test_a_roster_saved_with_a_bom_is_changed_as_the_daemon_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a roster saved once by Notepad (UTF-8 with a BOM) was read by the daemon and doctor, but
    # `kt roster add` and `count` refused it ("line 1 is not a student pseudonym")
    config = _board_config(tmp_path)
    roster = tmp_path / "roster.txt"
    roster.write_bytes(b"\xef\xbb\xbf" + format_roster([PSEUDO("stu-01"), PSEUDO("stu-02")]).encode())
    assert watch_roster(roster).current() == {PSEUDO("stu-01"), PSEUDO("stu-02")}  # as the daemon reads it
    more = tmp_path / "more.txt"
    more.write_text("stu-03\n")
    assert cli_main(["kt", "roster", "add", str(more), "--config", str(config)]) == 0, capsys.readouterr()
    assert cli_main(["kt", "roster", "count", "--config", str(config)]) == 0
    assert parse_roster(roster.read_text(), "r") == {PSEUDO(f"stu-0{n}") for n in (1, 2, 3)}
