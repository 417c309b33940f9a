"""`edge-agent config check` names the exact key path (and line) of every problem."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import (
    Config,
    ConfigError,
    find_config_path,
    load_config,
    load_config_ignoring_unknown,
    masked_dump,
    parse_config,
    without_credentials,
)


def _write_secret(path: Path, mode: int = 0o600) -> Path:
    path.write_bytes(os.urandom(32).hex().encode())  # as provisioning writes it
    path.chmod(mode)
    return path


def _valid_config_text(tmp_path: Path) -> str:
    secret = _write_secret(tmp_path / "pseudonym.key")
    return f"""
[device]
tenant = "district-9"
site = "school-3"
class_id = "grade7-2"
device_id = "board-0042"
pseudonym_secret_file = "{secret}"

[paths]
state_dir = "{tmp_path / "state"}"
cache_dir = "{tmp_path / "cache"}"

[mqtt]
enabled = false

[web]
token_file = ""
"""


def test_a_valid_config_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _valid_config_text(tmp_path).replace('token_file = ""\n', "")
    token = _write_secret(tmp_path / "web.token")
    text += f'token_file = "{token}"\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


BROKEN = [
    # (what is wrong, replacement applied to the valid text, expected key path, expected line or None)
    (
        "unknown key",
        ('class_id = "grade7-2"', 'class_id = "grade7-2"\nclassroom = "x"'),
        "device.classroom",
        6,
    ),
    ("unknown section", ("[mqtt]", "[mqqt]\nhost = 'x'\n[mqtt]"), "mqqt", 13),
    ("wrong type", ("enabled = false", 'enabled = false\nport = "eighty"'), "mqtt.port", 15),
    ("out of range port", ("enabled = false", "enabled = false\nport = 70000"), "mqtt.port", 15),
    ("bad enum", ("[mqtt]", '[inference]\nbackend = "cuda"\n[mqtt]'), "inference.backend", 14),
    ("relative state dir", (str(Path("/")), "/"), None, None),  # placeholder, replaced below
    ("id with a slash", ('device_id = "board-0042"', 'device_id = "board/42"'), "device.device_id", 6),
    ("negative fps", ("[mqtt]", "[camera]\nanalysis_fps = -5\n[mqtt]"), "camera.analysis_fps", 14),
    (
        "backoff order",
        ("[mqtt]", "[camera]\nreconnect_min_s = 30.0\nreconnect_max_s = 5.0\n[mqtt]"),
        "camera.reconnect_max_s",  # the key the check is about, not the section (a review)
        15,
    ),
    (
        "camera hours that are not days and times",
        ("[mqtt]", '[camera]\nactive_hours = ["weekdays 8-5"]\n[mqtt]'),
        "camera.active_hours",
        14,
    ),
    (
        "closed dates that are not dates",
        ("[mqtt]", '[camera]\nclosed_dates = ["1 Oct - 7 Oct"]\n[mqtt]'),
        "camera.closed_dates",
        14,
    ),
    (
        "a time zone misspelt",
        ('class_id = "grade7-2"', 'class_id = "grade7-2"\ntimezone = "Asia/Shangai"'),
        "device.timezone",
        6,
    ),
    (
        "share above one",
        ("[mqtt]", "[attention]\nlow_attention_share = 1.5\n[mqtt]"),
        "attention.low_attention_share",
        14,
    ),
    # pydantic took true as 1: k-anonymity off (a review)
    ("true for a number", ("[mqtt]", "[kt]\nmin_group_size = true\n[mqtt]"), "kt.min_group_size", 14),
]


def test_config_check_refuses_what_the_daemon_would_refuse_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a web token of 5 characters, and secret files named by relative paths (they exist where IT
    # runs the check; the daemon runs from / under systemd) passed `config check` and doctor, not the start
    short = tmp_path / "web.token"
    short.write_text("short\n")
    short.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path).replace('token_file = ""', f'token_file = "{short}"'))
    assert main(["config", "check", str(path)]) == 1
    assert "web.token_file" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    _write_secret(tmp_path / "web.token")
    relative = _valid_config_text(tmp_path).replace('token_file = ""', 'token_file = "web.token"')
    relative += '[kt]\nroster_file = "roster.txt"\n'  # round 2: not only secrets (every answer refused)
    path.write_text(relative.replace(str(tmp_path / "pseudonym.key"), "pseudonym.key"))
    assert main(["config", "check", str(path)]) == 1
    said = capsys.readouterr().err
    assert "is a relative path" in said and "kt.roster_file" in said
    assert "web.token_file" in said and "device.pseudonym_secret_file" in said


def test_a_key_in_the_wrong_section_names_the_section_it_belongs_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: [attention] active_hours was "unknown key (check spelling)" to config check, and the daemon
    # ignored it: the camera ran all day while IT believed it closed outside lessons
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path) + '[attention]\nactive_hours = ["mon-fri 07:30-08:00"]\n')
    assert main(["config", "check", "--no-files", str(path)]) == 1
    assert "attention.active_hours (line 19): not a key of this section: it belongs in [camera]" in (
        capsys.readouterr().err
    )
    _, ignored = load_config_ignoring_unknown(path, check_files_exist=False)
    assert ignored == ["attention.active_hours (line 19; it belongs in [camera])"]
    assert main(["config", "show", "--config", str(path)]) == 0
    assert ("attention.active_hours (line 19; it belongs in [camera]): not a key of [attention], so ignored; "
            "move it to [camera]") in capsys.readouterr().err


def test_a_config_saved_in_a_windows_code_page_says_to_save_it_as_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(('[device]\nclass_id = "三年级一班"\n').encode("gbk"))
    assert main(["config", "check", "--no-files", str(path)]) == 1
    assert "save it as UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(("what", "change", "key", "line"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_config_names_the_key_path_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    change: tuple[str, str],
    key: str | None,
    line: int | None,
) -> None:
    text = _valid_config_text(tmp_path)
    if what == "relative state dir":
        text = text.replace(f'state_dir = "{tmp_path / "state"}"', 'state_dir = "var/state"')
        key, line = "paths.state_dir", 10
    else:
        assert change[0] in text
        text = text.replace(change[0], change[1], 1)
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", "--no-files", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"  {key} (line {line}):" in err, err


def test_a_nul_in_a_file_name_is_named_at_its_key_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: stat() raises ValueError for "embedded null byte", which config check did not catch
    path = tmp_path / "config.toml"
    path.write_text('[web]\ntoken_file = "/etc/edge-agent/secrets/web.token\\u0000"\n')
    assert main(["config", "check", str(path)]) == 1
    assert "web.token_file (line 2): Value error, holds a NUL character" in capsys.readouterr().err


def test_malformed_toml_reports_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[device]\ntenant = "a"\nsite = \n')
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "TOML syntax" in err and "line 3" in err


def test_a_config_that_is_not_text_or_not_a_file_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "config.toml"
    binary.write_bytes(b"[device]\ntenant = \"\xff\xfe\"\n")
    folder = tmp_path / "config.d"
    folder.mkdir()
    for path in (binary, folder):
        assert main(["config", "check", str(path)]) == 1
        err = capsys.readouterr().err
        assert str(path) in err and "cannot read config file" in err


def test_demo_refuses_a_port_outside_the_tcp_range(capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("70000", "0", "x"):
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--port", port])
        assert exit_info.value.code == 2
        assert f"'{port}' is not a TCP port (1-65535)" in capsys.readouterr().err


def test_a_world_readable_secret_is_refused_with_the_chmod_fix(tmp_path: Path) -> None:
    text = _valid_config_text(tmp_path)
    (tmp_path / "pseudonym.key").chmod(0o644)
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    ((where, message),) = info.value.problems
    assert where == "device.pseudonym_secret_file"
    assert "chmod 600" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="asked only as root (config check under sudo)")
def test_config_check_as_root_names_a_secret_the_daemons_user_cannot_read(
    request: pytest.FixtureRequest,
) -> None:
    # Left for the team at stop 38: as root os.access said yes to a root-owned 0600 secret, config check
    # said OK, and the daemon (User=edge-agent) could not read it. "nobody" stands in for edge-agent here.
    import pwd

    from edge_agent.config import unreadable_by_daemon

    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-test-", dir="/tmp"))  # pytest's base folder is 0700
    request.addfinalizer(lambda: shutil.rmtree(folder))
    folder.chmod(0o755)
    secret = _write_secret(folder / "pseudonym.key")
    said = unreadable_by_daemon(secret, f"chown nobody {secret}", "nobody")
    assert said is not None and "owner root, mode 600" in said and f"chown nobody {secret}" in said
    os.chown(secret, nobody.pw_uid, nobody.pw_gid)
    assert unreadable_by_daemon(secret, "", "nobody") is None
    folder.chmod(0o700)
    said = unreadable_by_daemon(secret, "", "nobody")
    assert said is not None and f"cannot enter {folder} (owner root, mode 700)" in said
    assert unreadable_by_daemon(secret, "", "no-such-user-here") is None  # a development machine


@pytest.mark.skipif(os.geteuid() != 0, reason="asked only as root (config check under sudo)")
def test_config_check_as_root_names_a_config_file_the_daemons_user_cannot_read(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: config.toml's group set to root; the daemon stopped on "Permission denied" while config
    # check and doctor (as root) said it was valid. "nobody" stands in for the edge-agent user.
    import edge_agent.config as config_module
    from edge_agent import doctor

    monkeypatch.setattr(config_module, "DAEMON_USER", "nobody")
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-test-", dir="/tmp"))  # pytest's base folder is 0700
    request.addfinalizer(lambda: shutil.rmtree(folder))
    folder.chmod(0o755)
    path = folder / "config.toml"
    path.write_text(_valid_config_text(folder))
    path.chmod(0o640)
    assert main(["config", "check", str(path)]) == 1
    said = capsys.readouterr().err
    assert "who cannot read" in said and f"chgrp nobody {path} && chmod 640 {path}" in said
    result, config = doctor.check_config(path)
    assert not result.ok and f"chgrp nobody {path}" in result.detail and config is not None
    os.chown(path, 0, pwd.getpwnam("nobody").pw_gid)  # root:edge-agent 0640, as provisioning writes it
    assert doctor.check_config(path)[0].ok


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    text = _valid_config_text(tmp_path)
    (tmp_path / "pseudonym.key").unlink()
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0][0] == "device.pseudonym_secret_file"
    assert "does not exist" in info.value.problems[0][1]


def test_a_pseudonym_secret_the_daemon_would_refuse_is_named_by_config_check(tmp_path: Path) -> None:
    # Round 2: a zeroed secret stopped knowledge tracing at start, while config check and doctor said OK
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path))
    (tmp_path / "pseudonym.key").write_bytes(b"\0" * 48)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0][0] == "device.pseudonym_secret_file"
    assert "only 1 different bytes in it" in info.value.problems[0][1]


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[mqtt]\nport = 0\nhost = 5\n[web]\nlanguage = "fr"\n')
    paths = {p for p, _ in info.value.problems}
    assert paths == {"mqtt.port (line 2)", "mqtt.host (line 3)", "web.language (line 5)"}


def test_checks_between_keys_are_listed_with_the_rest_at_their_keys_line(tmp_path: Path) -> None:
    # A review: min > max was said only once the section's other keys were fixed (IT mended the lines
    # listed and the board failed again at the next start), and at the section's header line.
    with pytest.raises(ConfigError) as info:
        parse_config("[mqtt]\nprotocol = 5\nbackoff_min_s = 10.0\nbackoff_max_s = 5.0\n"
                     "[camera]\nreconnect_min_s = 30.0\nreconnect_max_s = 5.0\n")
    problems = dict(info.value.problems)
    assert set(problems) == {"mqtt.protocol (line 2)", "mqtt.backoff_max_s (line 4)",
                             "camera.reconnect_max_s (line 7)"}, problems
    assert "backoff_max_s must be >= backoff_min_s" in problems["mqtt.backoff_max_s (line 4)"]
    # but not against a default put in for a key that is wrong itself (round 2)
    with pytest.raises(ConfigError) as info:
        parse_config('[mqtt]\nbackoff_min_s = "0.2s"\nbackoff_max_s = 0.5\n')
    assert [where for where, _ in info.value.problems] == ["mqtt.backoff_min_s (line 2)"], info.value.problems


def test_config_path_order_is_flag_then_environment_then_etc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_CONFIG", "/env/config.toml")
    assert find_config_path("/flag.toml") == Path("/flag.toml")
    assert find_config_path(None) == Path("/env/config.toml")
    monkeypatch.delenv("EDGE_AGENT_CONFIG")
    assert find_config_path(None) == Path("/etc/edge-agent/config.toml")


def test_every_key_has_a_default() -> None:
    config = Config()
    assert config.mqtt.inflight_max == 20
    assert config.kt.min_group_size == 5


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path))
    shown = masked_dump(load_config(path, check_files_exist=False))
    assert "secret, contents not shown" in shown["device"]["pseudonym_secret_file"]
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "show", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'device_id = "board-0042"' in out
    assert (tmp_path / "pseudonym.key").read_bytes().hex() not in out


# Camera sources with a proxy's or an XMEye camera's credentials, each with what must show and the secrets
# that must not. A review: proxy-id/proxy-pw and a scheme-less proxy=user:pw@host were shown as written, and
# an XMEye password holding '&' was cut there, leaving "Kr3t9" in view.
PROXY_AND_XMEYE_SOURCES = [
    ("rtspsrc location=rtsp://10.0.0.9/s proxy=http://proxy:3128 proxy-id=puser proxy-pw=ProxyPw1 ! fakesink",
     "rtspsrc location=rtsp://10.0.0.9/s proxy=http://proxy:3128 proxy-id=*** proxy-pw=*** ! fakesink",
     ["puser", "ProxyPw1"]),
    ("rtspsrc location=rtsp://10.0.0.9/s proxy=puser:ProxyPw3@proxy:554 ! fakesink",
     "rtspsrc location=rtsp://10.0.0.9/s proxy=***@proxy:554 ! fakesink", ["puser", "ProxyPw3"]),
    ('rtspsrc location=rtsp://10.0.0.9/s proxy = "puser:Pro@xyPw5@proxy:554" ! fakesink',
     'rtspsrc location=rtsp://10.0.0.9/s proxy = "***@proxy:554" ! fakesink', ["puser", "Pro", "xyPw5"]),
    ("rtspsrc location=rtsp://10.0.0.9/s proxy=rtsp://puser:ProxyPw2@proxy:554 ! fakesink",
     "rtspsrc location=rtsp://10.0.0.9/s proxy=rtsp://***@proxy:554 ! fakesink", ["puser", "ProxyPw2"]),
    ("rtsp://10.0.0.9:554/user=admin&password=se&Kr3t9&channel=1&stream=0.sdp",
     "rtsp://10.0.0.9:554/user=***&password=***&channel=1&stream=0.sdp", ["admin", "se&", "Kr3t9"]),
    ("rtsp://10.0.0.9:554/user=admin&password=se&Kr3t9&stream=0.sdp?",
     "rtsp://10.0.0.9:554/user=***&password=***&stream=0.sdp?", ["admin", "se&", "Kr3t9"]),
    ("rtsp://10.0.0.9:554/user=admin&password=se&Kr3t9", "rtsp://10.0.0.9:554/user=***&password=***",
     ["admin", "se&", "Kr3t9"]),
    ("souphttpsrc location=http://10.0.0.9/mjpg proxy-id=p proxy-pw=SoupProxyPw ! jpegdec ! appsink",
     "souphttpsrc location=http://10.0.0.9/mjpg proxy-id=*** proxy-pw=*** ! jpegdec ! appsink",
     ["SoupProxyPw"]),
    ("srtsrc uri=srt://10.0.0.9:9000?passphrase=SrtPass1&mode=caller passphrase=SrtPass2 ! appsink",
     "srtsrc uri=srt://10.0.0.9:9000?passphrase=***&mode=caller passphrase=*** ! appsink",
     ["SrtPass1", "SrtPass2"]),
    ("http://10.0.0.9/videostream.cgi?loginuse=admin&loginpas=Fosc4m&access_token=T0k",
     "http://10.0.0.9/videostream.cgi?loginuse=***&loginpas=***&access_token=***",
     ["admin", "Fosc4m", "T0k"]),
    ("videotestsrc ! x264enc key-int-max=30 ! appsink", "videotestsrc ! x264enc key-int-max=30 ! appsink",
     []),
    # XMEye's '_' form: the user name ran to the end, hiding the channel and stream the installer checks
    ("rtsp://10.0.0.9:554/user=admin_password=Xm3y3_channel=1_stream=0.sdp",
     "rtsp://10.0.0.9:554/user=***_password=***_channel=1_stream=0.sdp", ["admin", "Xm3y3"]),
]


# A review: an Authorization or Cookie header a source sends, and a URL password holding a raw "/", "?" or
# "#" (FFmpeg then fails to connect, and the failure's log line showed the password), were shown as written.
HEADER_AND_RAW_PASSWORD_SOURCES = [
    ('souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Authorization=(string)\\"Basic YWRtaW4=\\""'
     " ! jpegdec ! appsink",
     'souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Authorization=(string)***"'
     " ! jpegdec ! appsink",
     ["YWRtaW4=", "Basic"]),
    ('souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Cookie=(string)sid=C00kie9, x=1" ! appsink',
     'souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Cookie=(string)***, x=1" ! appsink',
     ["C00kie9"]),
    ("Authorization: Bearer eyJ0.eyJ1.sig9", "Authorization: ***", ["eyJ0", "sig9"]),
    ("rtsp://admin:pa/ss@10.0.0.9:554/Streaming/Channels/101", "rtsp://***@10.0.0.9:554/Streaming/Channels/101",
     ["admin", "pa/ss"]),
    ("rtsp://admin:pa#s?s@10.0.0.9/live", "rtsp://***@10.0.0.9/live", ["admin", "pa#s"]),
    ("rtsp://admin:p/w@[fe80::1]:554/s", "rtsp://***@[fe80::1]:554/s", ["admin", "p/w"]),
    # round 2: any scheme word, every cookie, and no part of a password holding both '@' and '/'
    ("Authorization: Token T0kenSecret", "Authorization: ***", ["T0kenSecret"]),
    ("Cookie: lang=en; sid=S3ssion", "Cookie: ***", ["S3ssion"]),
    ("rtsp://admin:p@ss/w0rd@10.0.0.9/live", "rtsp://***@10.0.0.9/live", ["admin", "w0rd", "ss/"]),
    # Digest: its quoted, comma-separated parameters showed the user name (and the response after it)
    ('Authorization: Digest username="admin", realm="cam", response="6629fae4"', "Authorization: ***",
     ["admin", "6629fae4"]),
    ('souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Authorization=(string)\\"Digest '
     'username=\\\\\\"admin\\\\\\", response=\\\\\\"6629fae4\\\\\\"\\"" ! appsink',
     'souphttpsrc location=http://10.0.0.9/mjpg extra-headers="h, Authorization=(string)***',
     ["admin", "6629fae4"]),
    # no credentials: a port, a path, a fragment stay as they are, '@' in a query too (round 2: shown as
    # "http://***@school.cn", the camera's address gone)
    ("rtsp://[fe80::1]:554/s", "rtsp://[fe80::1]:554/s", []),
    ("http://10.0.0.9:8080/cgi?a=1#frag", "http://10.0.0.9:8080/cgi?a=1#frag", []),
    ("http://10.0.0.9:8080/snapshot.cgi?notify=it@school.cn", "http://10.0.0.9:8080/snapshot.cgi?notify=it@school.cn",
     []),
    ("rtsp://10.0.0.9:554/live?ch=1&tag=cam@room101", "rtsp://10.0.0.9:554/live?ch=1&tag=cam@room101", []),
    # round 2 of 2026-12-03: the rule for a password with a space took an IPv6 address for a user
    ("http://[fe80::1]/video failed; see admin@school.edu",
     "http://[fe80::1]/video failed; see admin@school.edu", []),
    ("rtsp://admin:Zq9 Secret@10.0.0.9/s", "rtsp://***@10.0.0.9/s", ["admin", "Secret"]),
    # a review: a quote in a URL's password ended what was hidden (quotes end a URL only in a pipeline)
    ("rtsp://admin:Tom's2024@10.0.0.9:554/s", "rtsp://***@10.0.0.9:554/s", ["admin", "Tom", "2024"]),
    ('rtsp://admin:pa"ss1@10.0.0.9/s', "rtsp://***@10.0.0.9/s", ["admin", "pa", "ss1"]),
    ("rtsp://o'brien:Pw1@10.0.0.9/s", "rtsp://***@10.0.0.9/s", ["brien", "Pw1"]),
    ('rtspsrc location="rtsp://admin:Pw2@10.0.0.9/s" ! appsink',
     'rtspsrc location="rtsp://***@10.0.0.9/s" ! appsink', ["admin", "Pw2"]),
]


@pytest.mark.parametrize(
    ("source", "shown", "secrets"), PROXY_AND_XMEYE_SOURCES + HEADER_AND_RAW_PASSWORD_SOURCES,
    ids=[f"proxy-xmeye{n}" for n in range(len(PROXY_AND_XMEYE_SOURCES))]
    + [f"header-raw{n}" for n in range(len(HEADER_AND_RAW_PASSWORD_SOURCES))],
)
def test_every_credential_form_a_camera_source_may_hold_is_hidden_whole(
    source: str, shown: str, secrets: list[str]
) -> None:
    masked = without_credentials(source)
    assert masked == shown
    for secret in secrets:
        assert secret not in masked, secret


def test_config_show_hides_a_proxy_login_and_an_xmeye_password_with_an_ampersand(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    source = ('rtspsrc location="rtsp://10.0.0.9:554/user=admin&password=se&Kr3t9&channel=1&stream=0.sdp" '
              "proxy=puser:ProxyPw3@proxy:554 proxy-id=puser proxy-pw=ProxyPw1 ! decodebin ! appsink")
    path.write_text(_valid_config_text(tmp_path) + f"\n[camera]\nsource = '{source}'\n")
    out = subprocess.run([sys.executable, "-m", "edge_agent", "config", "show", "--config", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "password=***&channel=1&stream=0.sdp" in out and "proxy-pw=***" in out, out
    for secret in ["admin", "Kr3t9", "puser", "ProxyPw3", "ProxyPw1"]:
        assert secret not in out, (secret, out)


def test_output_piped_into_a_reader_that_quits_ends_quietly(tmp_path: Path) -> None:
    """`edge-agent config show | head -1`: the reader closes the pipe; no traceback, 141 as for SIGPIPE."""
    config = tmp_path / "config.toml"
    config.write_text('[device]\ndevice_id = "b-1"\n')
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "config", "show", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert "Traceback" not in err


def test_update_hosts_are_bare_host_names_or_addresses() -> None:
    from edge_agent.config import UpdateSettings

    assert UpdateSettings(allowed_hosts=["Updates.District.example", "10.0.0.5", "::1"]).allowed_hosts == [
        "updates.district.example", "10.0.0.5", "::1"
    ]
    for bad in ("https://updates.district.example", "updates.district.example:443", "a/b", ""):
        with pytest.raises(ValueError, match="is not a host name"):
            UpdateSettings(allowed_hosts=[bad])


# Each was taken by `config check` and crashed at run time what it reached (a review): the MQTT session
# (OverflowError in int(), nothing delivered), the publisher thread, the telemetry thread.
RUN_TIME_CRASHES = [
    ("[mqtt]\nmessage_expiry_days = inf", "mqtt.message_expiry_days", "finite number"),
    ("[mqtt]\nmessage_expiry_days = 1e300", "mqtt.message_expiry_days", "less than or equal"),
    ("[mqtt]\nconnect_timeout_s = inf", "mqtt.connect_timeout_s", "finite number"),
    ("[metrics]\ntelemetry_interval_s = inf", "metrics.telemetry_interval_s", "finite number"),
    ("[metrics]\ntelemetry_interval_s = 9.3e9", "metrics.telemetry_interval_s", "less than or equal"),
    # the value and both bounds, not only the one broken (a review)
    ("[web]\nport = 210030", "web.port", "(the file says 210030; allowed: >= 1 and <= 65535)"),
    ("[kt]\nfeedback_timeout_s = inf", "kt.feedback_timeout_s", "finite number"),
    ("[kt]\nlesson_gap_s = nan", "kt.lesson_gap_s", "finite number"),
    ("[store]\nmax_age_days = inf", "store.max_age_days", "finite number"),
    ("[mqtt]\nbackoff_min_s = 600\nbackoff_max_s = 5", "mqtt.backoff_max_s",
     "backoff_max_s must be >= backoff_min_s"),
    # read as the folder "." (under systemd "/"): every picture on the disk analysed as class frames
    ('[camera]\nsource = ""', "camera.source", "set camera.enabled = false"),
    ('[camera]\nsource = "  "', "camera.source", "is empty"),
]


@pytest.mark.parametrize(("text", "key", "message"), RUN_TIME_CRASHES, ids=[r[0] for r in RUN_TIME_CRASHES])
def test_a_time_that_would_crash_at_run_time_is_refused_by_config_check(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, check_files_exist=False)
    problems = {where.split(" ")[0]: why for where, why in caught.value.problems}
    assert message in problems[key], problems


def test_an_empty_camera_source_is_taken_while_the_camera_is_off(tmp_path: Path) -> None:
    # Upgrade review: earlier releases took it, and an upgraded board stopped, told to set camera.enabled =
    # false, which its config already did
    path = tmp_path / "config.toml"
    path.write_text('[camera]\nenabled = false\nsource = ""\n')
    assert load_config(path, check_files_exist=False).camera.enabled is False


@pytest.mark.parametrize(
    ("web_host", "metrics_host", "metrics_enabled", "refused"),
    [
        ("0.0.0.0", "0.0.0.0", True, True),
        ("127.0.0.1", "0.0.0.0", True, True),  # the wildcard takes loopback too
        ("::", "127.0.0.1", True, True),  # :: takes IPv4 too (dual stack)
        ("localhost", "127.0.0.1", True, True),  # a name may be the other address
        ("127.0.0.1", "127.0.0.1", False, False),  # metrics off: no second listener
        ("127.0.0.1", "127.0.0.2", True, False),  # two addresses of their own
    ],
)
def test_web_and_metrics_on_one_port_are_refused_by_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], web_host: str, metrics_host: str,
    metrics_enabled: bool, refused: bool,
) -> None:
    # A review: web.port = metrics.port passed, then the answer API failed with "address already in use
    # (does another program use it? change web.port)", the daemon's own metrics exporter holding it.
    text = _valid_config_text(tmp_path) + f'host = "{web_host}"\nport = 18080\n'
    text += f'[metrics]\nenabled = {str(metrics_enabled).lower()}\nhost = "{metrics_host}"\nport = 18080\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == (1 if refused else 0)
    out = capsys.readouterr()
    if refused:
        assert "web.port and metrics.port are both 18080" in out.out + out.err
        assert "give one of them another (default 9108)" in out.out + out.err


def test_web_on_the_default_metrics_port_is_refused_without_a_metrics_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second review: the check ran only with a [metrics] table (a field validator skips defaults)
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path) + 'host = "0.0.0.0"\nport = 9108\n')
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr()
    assert "web.port and metrics.port are both 9108" in out.out + out.err
    assert "give one of them another port" in out.out + out.err


def test_demo_refuses_one_port_for_the_teacher_view_and_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "demo-state"
    assert main(["demo", "--port", "9108", "--state-dir", str(state)]) == 2
    assert "--port and --metrics-port are both 9108" in capsys.readouterr().err
    assert not state.exists()


def test_a_secret_path_through_a_file_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Round 2: web.token_file = ".../config.toml/web.token" raised NotADirectoryError in config check, and
    # in a reload's check (SIGHUP: a traceback; config_reload: "handler_error", no key named)
    path = tmp_path / "config.toml"
    through = _valid_config_text(tmp_path).replace('token_file = ""', f'token_file = "{path}/web.token"')
    path.write_text(through)
    assert main(["config", "check", str(path)]) == 1
    assert "web.token_file" in capsys.readouterr().err


def test_a_chinese_class_name_goes_in_display_name_and_class_id_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: IT typed the class's Chinese name as class_id and `config check` said only "String should
    # match pattern '^[A-Za-z0-9]...'"; the name has its own key, shown by the teacher view.
    path = tmp_path / "config.toml"
    text = _valid_config_text(tmp_path)
    path.write_text(text.replace('class_id = "grade7-2"', 'class_id = "初一3班"'))
    assert main(["config", "check", str(path)]) == 1
    said = capsys.readouterr().err
    assert "device.class_id (line 5)" in said
    assert "class_id may hold letters, digits and _ . - only" in said
    assert "put a Chinese class name in device.display_name" in said
    named = 'class_id = "grade7-2"\ndisplay_name = " 初一（3）班 "'
    path.write_text(text.replace('class_id = "grade7-2"', named))
    assert main(["config", "check", str(path)]) == 0
    assert load_config(path).device.display_name == "初一（3）班"  # spaces around it stripped
    assert parse_config("").device.display_name is None  # unset: the view shows class_id


@pytest.mark.parametrize(("name", "said"), [
    ("   ", "1 to 32 characters"),
    ("一" * 33, "1 to 32 characters"),
    (r"初一\t3班", "control characters"),  # TOML escapes: a tab, a line break, a zero-width space
    (r"初一\n3班", "control characters"),
    (r"初一\u200b3班", "control characters"),
])
def test_a_display_name_too_long_empty_or_with_control_characters_is_refused(name: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f'[device]\ndisplay_name = "{name}"\n')
    assert "device.display_name" in str(info.value) and said in str(info.value)


def test_a_display_name_of_32_characters_is_taken() -> None:
    assert parse_config('[device]\ndisplay_name = "' + "班" * 32 + '"\n').device.display_name == "班" * 32


def test_metrics_tls_files_are_checked_as_the_web_ones_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a missing metrics certificate or key, or a world-readable key, passed config check (and the
    # check before a reload) while the same under [web] was refused; the metrics listener then failed.
    from edge_agent.config import start_problems

    path = tmp_path / "config.toml"
    base = _valid_config_text(tmp_path)
    missing = tmp_path / "missing"
    path.write_text(base + f'[metrics]\ntls_cert_file = "{missing}/cert.pem"\n'
                           f'tls_key_file = "{missing}/key.pem"\n')
    assert main(["config", "check", str(path)]) == 1
    said = capsys.readouterr().err
    assert "metrics.tls_cert_file" in said and "metrics.tls_key_file" in said
    assert {key for key, _ in start_problems(path)} >= {"metrics.tls_cert_file", "metrics.tls_key_file"}
    cert, key = _https_files(tmp_path)
    key.chmod(0o644)  # world-readable private key
    path.write_text(base + f'[metrics]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    assert main(["config", "check", str(path)]) == 1
    said = capsys.readouterr().err
    assert "metrics.tls_key_file" in said and f"chmod 600 {key}" in said
    key.chmod(0o600)
    assert main(["config", "check", str(path)]) == 0


def _https_files(base: Path) -> tuple[Path, Path]:
    """A certificate from a fleet CA and its key, as provisioning installs them."""
    from edge_agent.provisioning.ca import FleetCA, key_to_pem, make_csr, new_ec_key
    from edge_agent.provisioning.files import write_private, write_public

    key = new_ec_key()
    cert = FleetCA.create(base / "ca", "test fleet CA").sign_csr(make_csr(key, "board-0042", "d", "s"))
    write_private(base / "key.pem", key_to_pem(key))
    write_public(base / "cert.pem", cert)
    return base / "cert.pem", base / "key.pem"


@pytest.mark.parametrize("section", ["web", "metrics"])
def test_a_key_that_does_not_belong_to_the_https_certificate_fails_the_check_before_a_reload(
    tmp_path: Path, section: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a half-done rotation (the new key, the old certificate) passed the check before a reload,
    # and the restarted web component could not serve, tried again only every 300 s.
    from edge_agent.config import start_problems
    from edge_agent.provisioning.ca import key_to_pem, new_ec_key
    from edge_agent.provisioning.files import write_private

    cert, key = _https_files(tmp_path)
    text = _valid_config_text(tmp_path) + ("" if section == "web" else f"[{section}]\n")  # [web] ends it
    path = tmp_path / "config.toml"
    path.write_text(text + f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    assert start_problems(path) == []
    write_private(key, key_to_pem(new_ec_key()))  # rotated: the certificate for it not yet installed
    problems = start_problems(path)
    assert [k for k, _ in problems] == [f"{section}.tls_cert_file"]
    assert f"cannot serve HTTPS with {cert} and {key}" in problems[0][1]
    assert main(["config", "check", str(path)]) == 1
    assert "the key belonging to the certificate" in capsys.readouterr().err


@pytest.mark.parametrize(("section", "key"), [
    ("kt", "package_dir"),
    ("updates", "models_dir"),
    ("updates", "inbox_dir"),
    ("updates", "download_ca_file"),
    ("paths", "model_mirror"),
])
def test_an_empty_optional_path_means_unset_as_the_readme_says(
    tmp_path: Path, section: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: the README says "empty means ..." of these, but "" was Path("."), and config check refused
    # it as a relative path.
    text = _valid_config_text(tmp_path)
    if section == "paths":
        text = text.replace("[paths]\n", f'[paths]\n{key} = ""\n')
    else:
        text += f'[{section}]\n{key} = ""\n'
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 0, capsys.readouterr().err
    assert getattr(getattr(load_config(path), section), key) is None


def test_a_relative_camera_source_is_refused_by_config_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: source = "faces" (a folder where IT stood) passed config check and doctor; the daemon runs
    # from / under systemd and found no camera.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()
    (tmp_path / "lesson.mp4").write_bytes(b"\0")
    path = tmp_path / "config.toml"
    base = _valid_config_text(tmp_path)
    for source in ("faces", "lesson.mp4", "./faces"):
        path.write_text(base + f'[camera]\nsource = "{source}"\n')
        assert main(["config", "check", str(path)]) == 1, source
        said = capsys.readouterr().err
        assert "camera.source" in said and "is a relative path" in said
    for source in (str(tmp_path / "faces"), "0", "/dev/video0", "rtsp://admin:pw@10.0.0.5/stream",
                   "v4l2src device=/dev/video0 ! videoconvert ! appsink"):
        path.write_text(base + f'[camera]\nsource = "{source}"\n')
        assert main(["config", "check", str(path)]) == 0, (source, capsys.readouterr().err)
    path.write_text(base + '[camera]\nenabled = false\nsource = "faces"\n')  # never opened
    assert main(["config", "check", str(path)]) == 0


@pytest.mark.parametrize(("section", "written", "said"), [
    ("web", "http://127.0.0.1", 'holds a scheme: the host alone goes here; write host = "127.0.0.1"'),
    ("mqtt", "mqtts://broker.district.example:8883",
     'write host = "broker.district.example" and port = 8883'),
    ("metrics", "127.0.0.1:9108", 'holds a port: the host alone goes here; write host = "127.0.0.1" and '
                                  "port = 9108"),
    ("mqtt", "broker district", "is not a host name or an IP address"),
    ("web", "", "is empty"),
])
def test_a_host_with_a_scheme_or_a_port_is_refused_by_config_check_saying_what_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, written: str, said: str
) -> None:
    # A review: host keys were free text; "http://127.0.0.1" or "mqtts://broker:8883" passed config check,
    # and the listener (or the broker connection) failed at run time.
    path = tmp_path / "config.toml"
    text = _valid_config_text(tmp_path).replace("[mqtt]\nenabled = false\n", "")
    if section == "web":
        path.write_text(text.replace("[web]\n", f'[web]\nhost = "{written}"\n'))
    else:
        path.write_text(text + f'[{section}]\nhost = "{written}"\n')
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{section}.host" in err and said in err, err


def test_spaces_around_a_host_are_no_part_of_it() -> None:
    # A review: web.host = "127.0.0.1 " (copy-pasted) passed config check, and the teacher view did not
    # start ("component web failed")
    config = parse_config('[web]\nhost = " 127.0.0.1 "\n[metrics]\nhost = "::1 "\n'
                          '[mqtt]\nhost = " broker.district.example."\n')
    assert (config.web.host, config.metrics.host) == ("127.0.0.1", "::1")
    assert config.mqtt.host == "broker.district.example."
    assert parse_config('[web]\nenabled = false\nhost = ""\n').web.enabled is False  # off: never bound


@pytest.mark.parametrize("written", [
    "mqtts://board7:Pa55word@broker.school.cn:8883", "board7:Pa55word@broker.school.cn",
    "mqtts://board7:Pa55/word@broker.school.cn:8883/", "broker.school.cn?password=Pa55word",
])
def test_a_password_typed_into_a_host_is_not_repeated_by_the_refusal(written: str) -> None:
    # A review: the message quoted the whole value, and it reaches the log, the heartbeat's config_reload
    # refusal sent to the cloud and the support bundle (doctor.json, config-problems.txt)
    with pytest.raises(ConfigError) as refused:
        parse_config(f'[mqtt]\nhost = "{written}"\n')
    said = str(refused.value)
    assert "Pa55" not in said and "mqtt.host" in said, said
    if "@" in written:
        assert 'write host = "broker.school.cn"' in said and "***@" in said, said


def test_a_state_dir_that_is_a_file_is_refused_by_config_check_and_doctor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: paths.state_dir named a file (the database's path): config check and doctor said OK, and
    # the daemon did not start.
    from edge_agent import doctor

    state = tmp_path / "state"
    state.write_text("x\n")
    path = tmp_path / "config.toml"
    path.write_text(_valid_config_text(tmp_path) + "[camera]\nenabled = false\n")
    assert main(["config", "check", str(path)]) == 1
    assert f"paths.state_dir: {state} is a file, not a folder" in capsys.readouterr().err
    result, config = doctor.check_config(path)
    assert not result.ok and "paths.state_dir" in result.detail and config is not None
    path.write_text(path.read_text().replace(f'"{state}"', f'"{state / "sub"}"'))  # under a file
    assert main(["config", "check", str(path)]) == 1
    assert f"cannot be made: {state} is a file" in capsys.readouterr().err
    state.unlink()  # not made yet: the daemon makes it
    assert main(["config", "check", str(path)]) == 0


def test_a_config_path_in_a_link_loop_or_too_long_is_refused_by_name_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: only not-found, permission and is-a-directory were caught; a symlink loop or a name too
    # long was a traceback from config check, show, run and doctor.
    from edge_agent import doctor

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    long = tmp_path / ("c" * 300 + ".toml")
    for path in (loop, long):
        assert main(["config", "check", str(path)]) == 1
        err = capsys.readouterr().err
        assert str(path) in err and "cannot read config file" in err and "Traceback" not in err
        with pytest.raises(ConfigError):
            load_config(path)
        result, config = doctor.check_config(path)
        assert not result.ok and "cannot read config file" in result.detail and config is None
