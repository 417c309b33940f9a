"""`edge-agent-ca`, the lab or small-district CA, run as provisioning/README.md shows it, on real files."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from edge_agent.errors import ProvisioningError
from edge_agent.provisioning.ca import FleetCA, main, make_csr, new_ec_key


def _board_csr(path: Path, device_id: str) -> Path:
    path.write_bytes(make_csr(new_ec_key(), device_id, "demo-district", "demo-school"))
    return path


def _names(cert: x509.Certificate) -> list[str]:
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in alt.get_values_for_type(x509.DNSName)] + [
        str(v) for v in alt.get_values_for_type(x509.IPAddress)
    ]


def test_the_ca_command_takes_a_fleet_from_init_to_a_revoked_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())

    csr = _board_csr(tmp_path / "board.csr", "np-3a-01")
    out = tmp_path / "board.pem"
    argv = ["sign", str(ca_dir), str(csr), "--out", str(out), "--name", "np-3a-01.school.example",
            "--name", "10.1.3.21"]
    assert main(argv) == 0
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "np-3a-01"
    assert {"np-3a-01.school.example", "10.1.3.21"} <= set(_names(cert))

    # A second board's key under the same id is refused, with what to do; --replace revokes the first.
    other = _board_csr(tmp_path / "other.csr", "np-3a-01")
    capsys.readouterr()
    assert main(["sign", str(ca_dir), str(other), "--out", str(tmp_path / "other.pem")]) == 2
    assert "already has a live certificate" in capsys.readouterr().err
    assert not (tmp_path / "other.pem").exists()
    assert main(["sign", str(ca_dir), str(other), "--out", str(tmp_path / "other.pem"), "--replace"]) == 0

    broker_dir = tmp_path / "broker"
    assert main(["server", str(ca_dir), "mqtt.district.example", "--out-dir", str(broker_dir)]) == 0
    assert stat.S_IMODE((broker_dir / "server.key").stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((broker_dir / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert _names(server) == ["mqtt.district.example"]

    capsys.readouterr()
    assert main(["list", str(ca_dir)]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(cn, state) for _, cn, _, state in listed if cn == "np-3a-01"] == [
        ("np-3a-01", "revoked"), ("np-3a-01", "live")
    ]

    assert main(["revoke", str(ca_dir), "np-3a-01"]) == 0
    # the broker took the revoked board until it had the CRL, and revoke did not say so (fleet review)
    assert "the broker accepts it until it has this CRL" in capsys.readouterr().out
    assert main(["crl", str(ca_dir)]) == 0
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    replaced = x509.load_pem_x509_certificate((tmp_path / "other.pem").read_bytes())
    assert {r.serial_number for r in crl} == {cert.serial_number, replaced.serial_number}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sign", "{ca}", "{garbage}", "--out", "{out}"], "not a PEM certificate signing request"),
        (["sign", "{ca}", "{bad_cn}", "--out", "{out}"], "is not a valid device id"),
        (["sign", "{ca}", "{missing}", "--out", "{out}"], "No such file"),
        (["sign", "{nowhere}", "{good}", "--out", "{out}"], "error:"),
        (["init", "{ca}"], "a CA already exists"),
        (["revoke", "{ca}", "np-9z-99"], "no live certificate with serial or device id 'np-9z-99'"),
        (["list", "{damaged}"], "is damaged"),
        (["server", "{ca}", "not a host!", "--out-dir", "{out}"], "neither an IP address nor a DNS name"),
    ],
    ids=["garbage-csr", "csr-cn-not-a-device-id", "missing-csr", "no-ca-there", "ca-exists",
         "revoke-unknown", "damaged-index", "bad-server-name"],
)
def test_bad_input_to_the_ca_command_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    damaged = tmp_path / "damaged-ca"
    assert main(["init", str(damaged)]) == 0
    (damaged / "index.json").write_text("[{not json")
    (tmp_path / "garbage.csr").write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE "
                                           b"REQUEST-----\n")
    _board_csr(tmp_path / "bad_cn.csr", "np 3a/01")
    _board_csr(tmp_path / "good.csr", "np-3a-01")
    paths = {"ca": ca_dir, "damaged": damaged, "nowhere": tmp_path / "nowhere", "out": tmp_path / "out.pem",
             "garbage": tmp_path / "garbage.csr", "bad_cn": tmp_path / "bad_cn.csr",
             "good": tmp_path / "good.csr", "missing": tmp_path / "missing.csr"}
    capsys.readouterr()
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.pem").exists()


def test_the_command_is_installed_beside_the_interpreter() -> None:
    command = Path(sys.executable).parent / "edge-agent-ca"
    done = subprocess.run([str(command), "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "revoke" in done.stdout


def test_a_monthly_crl_rebuild_never_lets_the_broker_refuse_the_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mosquitto refuses every board once the CRL's next update has passed. Rebuilt on the 1st of each
    month, a 30-day CRL (as before) lapsed on the 31st of 31-day months until the next rebuild."""
    import datetime as dt

    from edge_agent.provisioning import ca as ca_module

    ca_dir = tmp_path / "fleet-ca"
    first = dt.datetime(2027, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(ca_module, "utcnow", lambda: first)
    assert main(["init", str(ca_dir)]) == 0
    installed = tmp_path / "mosquitto" / "crl.pem"
    capsys.readouterr()
    assert main(["crl", str(ca_dir), "--install", str(installed)]) == 0
    assert "valid until 2027-02-15 03:00 UTC" in capsys.readouterr().out
    assert installed.read_bytes() == (ca_dir / "crl.pem").read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644  # mosquitto's own user reads it
    crl = x509.load_pem_x509_crl(installed.read_bytes())
    next_rebuild = dt.datetime(2027, 2, 1, 3, 0, tzinfo=dt.timezone.utc)
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - next_rebuild >= dt.timedelta(days=14)


def test_signing_a_boards_key_again_supersedes_its_certificate_and_revokes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A renewal on the same key revoked the board's certificate ("copy crl.pem to the broker"): once the
    broker had the CRL (the weekly timer), the board was cut off until someone installed the new one on
    it, and the revocation protected nothing, the key holding the new one (school IT review)."""
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    certs: dict[str, list[int]] = {}
    for board in ("np-3a-01", "np-3a-02"):
        csr = _board_csr(tmp_path / f"{board}.csr", board)
        for out in (tmp_path / f"{board}-1.pem", tmp_path / f"{board}-2.pem"):
            assert main(["sign", str(ca_dir), str(csr), "--out", str(out)]) == 0
            certs.setdefault(board, []).append(x509.load_pem_x509_certificate(out.read_bytes()).serial_number)
        said = capsys.readouterr().out
        assert "revoked certificate" not in said and "copy" not in said
        assert f"certificate {certs[board][0]} of {board} (the same key) is superseded, not revoked" in said
    missing = tmp_path / "no-such-folder" / "third.pem"
    assert main(["sign", str(ca_dir), str(csr), "--out", str(missing)]) == 2  # refused before signing
    assert "cannot write into" in capsys.readouterr().err
    assert main(["list", str(ca_dir)]) == 0
    states = {line.split("\t")[0]: line.split("\t")[3] for line in capsys.readouterr().out.splitlines()}
    assert [states[str(serial)] for serial in certs["np-3a-01"] + certs["np-3a-02"]] == [
        "superseded", "live", "superseded", "live"
    ]
    assert main(["crl", str(ca_dir)]) == 0
    assert list(x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())) == []  # the board keeps working
    # another board's key under that id is refused naming the current certificate, not the superseded one
    # (round 2: "valid until 2029" of a board whose certificate ran to 2033, read as stale)
    other = _board_csr(tmp_path / "other.csr", "np-3a-02")
    assert main(["sign", str(ca_dir), str(other), "--out", str(tmp_path / "other.pem")]) == 2
    assert f"(serial {certs['np-3a-02'][1]}," in capsys.readouterr().err
    # revoking a board, by its id or by its certificate's serial, revokes every certificate of its key
    assert main(["revoke", str(ca_dir), "np-3a-01"]) == 0
    assert main(["revoke", str(ca_dir), str(certs["np-3a-02"][1])]) == 0
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert sorted(r.serial_number for r in crl) == sorted(certs["np-3a-01"] + certs["np-3a-02"])
    # a key whose certificate was revoked on purpose is not signed again (a review: a stolen board's CSR
    # was taken at once, back on the broker)
    capsys.readouterr()
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "again.pem")]) == 2
    assert "was revoked: the key may be in someone else's hands" in capsys.readouterr().err
    assert not (tmp_path / "again.pem").exists()


def test_board_and_broker_certificates_are_valid_for_825_days_at_most_as_apple_platforms_require(
    tmp_path: Path,
) -> None:
    # A review: valid from 5 minutes before signing to 825 days after it, 825 days and 5 minutes, where
    # Apple's platforms refuse a TLS server certificate valid for more than 825 days: the board's serves
    # the teacher view over HTTPS, the broker's MQTT
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    out = tmp_path / "board.pem"
    csr = _board_csr(tmp_path / "board.csr", "np-3a-01")
    assert main(["sign", str(ca_dir), str(csr), "--out", str(out)]) == 0
    assert main(["server", str(ca_dir), "mqtt.district.example", "--out-dir", str(tmp_path / "broker")]) == 0
    lifetimes = {}
    for path in (ca_dir / "ca.pem", out, tmp_path / "broker/server.pem"):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        lifetimes[path.name] = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetimes == {"ca.pem": dt.timedelta(days=3650), "board.pem": dt.timedelta(days=825),
                         "server.pem": dt.timedelta(days=825)}


@pytest.mark.parametrize("days", ["0", "-30"])
def test_a_lifetime_of_no_days_is_refused_by_init_and_sign_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    # A review: `init --days 0` was a traceback, `sign --days -30` said "the fleet CA expired" of a CA
    # years from its end, and `sign --days 0` signed a certificate valid for 5 minutes
    ca_dir = tmp_path / "fleet-ca"
    with pytest.raises(SystemExit) as exited:
        main(["init", str(tmp_path / "no-ca"), "--days", days])
    assert exited.value.code == 2 and not (tmp_path / "no-ca").exists()
    assert f"argument --days: '{days}': give at least 1" in capsys.readouterr().err
    assert main(["init", str(ca_dir)]) == 0
    index = (ca_dir / "index.json").read_bytes()
    out = tmp_path / "board.pem"
    with pytest.raises(SystemExit) as exited:
        main(["sign", str(ca_dir), str(_board_csr(tmp_path / "b.csr", "np-3a-01")), "--out", str(out),
              "--days", days])
    assert exited.value.code == 2 and not out.exists() and (ca_dir / "index.json").read_bytes() == index
    assert f"argument --days: '{days}': give at least 1" in capsys.readouterr().err


def test_the_brokers_certificate_can_carry_its_address_as_well_as_its_name(tmp_path: Path) -> None:
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    out = tmp_path / "broker"
    assert main(["server", str(ca_dir), "mqtt.district.example", "--out-dir", str(out),
                 "--name", "10.1.0.5", "--name", "mqtt"]) == 0
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    assert _names(server) == ["mqtt.district.example", "mqtt", "10.1.0.5"]
    assert main(["server", str(ca_dir), "mqtt.district.example", "--out-dir", str(out), "--name", "a b"]) == 2


def test_ca_commands_run_at_once_keep_every_row_and_every_revocation(tmp_path: Path) -> None:
    """IT shells (or a parallel loop) signing boards while another revokes a stolen one: each command
    read index.json, changed it and wrote it back, so 8 `sign`s at once left 7 rows (the 8th certificate
    valid but unrevocable) and a `revoke` among them was undone in 2 of 5 rounds."""
    import json

    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    stolen = _board_csr(tmp_path / "stolen.csr", "stolen-01")
    assert main(["sign", str(ca_dir), str(stolen), "--out", str(tmp_path / "stolen.pem")]) == 0
    command = [sys.executable, "-m", "edge_agent.provisioning.ca"]
    runs = []
    for i in range(8):
        csr = _board_csr(tmp_path / f"b{i}.csr", f"np-3a-{i:02d}")
        runs.append([*command, "sign", str(ca_dir), str(csr), "--out", str(csr.with_suffix(".pem"))])
    runs.insert(3, [*command, "revoke", str(ca_dir), "stolen-01"])
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for argv in runs]
    assert [p.wait(timeout=120) for p in procs] == [0] * 9

    rows = json.loads((ca_dir / "index.json").read_text())
    signed = {x509.load_pem_x509_certificate(p.read_bytes()).serial_number for p in tmp_path.glob("*.pem")}
    assert {row["serial"] for row in rows} == signed  # every certificate issued can be revoked
    assert [row["revoked"] for row in rows if row["common_name"] == "stolen-01"] == [True]
    assert main(["crl", str(ca_dir)]) == 0
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    stolen_serial = x509.load_pem_x509_certificate((tmp_path / "stolen.pem").read_bytes()).serial_number
    assert [r.serial_number for r in crl] == [stolen_serial]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run one command as another account")
def test_roots_weekly_crl_run_leaves_the_operators_ca_usable_by_the_operator() -> None:
    """edge-agent-crl.service runs `crl` as root in a CA the operator's account owns: a lock file it made
    (root, 0644) refused the operator's next sign and revoke with 'Permission denied' (round-2 review)."""
    operator = 65534
    with tempfile.TemporaryDirectory(prefix="ca-owner.", dir="/tmp") as folder:  # pytest's is root's, 0700
        os.chmod(folder, 0o755)
        os.chown(folder, operator, operator)
        _operator_and_root_share_a_ca(Path(folder), operator)


def _operator_and_root_share_a_ca(tmp_path: Path, operator: int) -> None:
    ca_dir = tmp_path / "fleet-ca"

    def as_operator(*argv: str) -> int:
        # forked, not a new interpreter: this one may live where that account cannot read
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.setgid(operator)
                os.setuid(operator)
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert as_operator("init", str(ca_dir)) == 0
    for lock in ca_dir.glob(".*lock"):  # as a CA made by an earlier release, which had none
        lock.unlink()
    assert main(["crl", str(ca_dir)]) == 0  # root, as the timer
    csr = _board_csr(tmp_path / "b.csr", "np-3a-01")
    assert as_operator("sign", str(ca_dir), str(csr), "--out", str(ca_dir / "b.pem")) == 0
    assert as_operator("revoke", str(ca_dir), "np-3a-01") == 0
    assert not list(ca_dir.glob(".*lock*"))


def test_a_ca_machine_whose_clock_is_set_back_signs_and_writes_nothing(tmp_path: Path) -> None:
    """With the clock at 2024-06-01 (faketime) a CA of 2026 signed a certificate already expired in real
    time and wrote a CRL whose next update had passed: Mosquitto refused every board (school IT review)."""
    import datetime as dt

    from edge_agent.errors import ProvisioningError
    from edge_agent.provisioning.ca import FleetCA

    now = dt.datetime.now(dt.timezone.utc)
    ca_dir = FleetCA.create(tmp_path / "fleet-ca", "fleet CA", clock=lambda: now - dt.timedelta(days=30)).dir
    ca_start = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes()).not_valid_before_utc
    FleetCA(ca_dir).sign_csr(make_csr(new_ec_key(), "np-3a-01", "d", "s"))
    last = dt.datetime.fromisoformat(FleetCA(ca_dir).index()[-1].issued_at)  # the CA's last signature: now
    before = {path.name: path.read_bytes() for path in ca_dir.iterdir()}
    csr = make_csr(new_ec_key(), "np-3a-02", "d", "s")
    args = {"sign_csr": (csr,), "revoke": ("np-3a-01",), "issue_server": ("mqtt.district.example",),
            "write_crl": ()}
    june = dt.datetime(2024, 6, 1, 8, 0, tzinfo=dt.timezone.utc)
    cases = (  # before the CA's start: nothing; after it, before its last signature: no signature
        (june, ("sign_csr", "revoke", "issue_server", "write_crl"), "the CA certificate's start", ca_start),
        (now - dt.timedelta(days=10), ("sign_csr", "revoke", "issue_server"),
         "the CA's last signature or revocation", last),
    )
    for clock, refused, what, at in cases:
        ca = FleetCA(ca_dir, clock=lambda clock=clock: clock)
        for method in refused:
            with pytest.raises(ProvisioningError) as error:
                getattr(ca, method)(*args[method])
            assert (f"this machine's clock says {clock:%Y-%m-%d %H:%M} UTC, before {what} at "
                    f"{at:%Y-%m-%d %H:%M} UTC: set the clock (NTP") in str(error.value)
            assert "nothing was signed" in str(error.value)
    assert {path.name: path.read_bytes() for path in ca_dir.iterdir()} == before
    # a clock a minute behind the CA's last use (two machines on NTP) still signs
    signed = FleetCA(ca_dir, clock=lambda: last - dt.timedelta(minutes=1)).sign_csr(csr)
    assert x509.load_pem_x509_certificate(signed).not_valid_after_utc > now + dt.timedelta(days=800)


def test_the_weekly_crl_heals_a_crl_a_clock_ahead_dated_in_the_future(tmp_path: Path) -> None:
    # Round 2: refused by the index's times from a clock that ran ahead, the unattended weekly `crl` let
    # the CRL lapse, and one dated in the future is "not yet valid" to Mosquitto: every board refused
    import datetime as dt

    from edge_agent.provisioning.ca import FleetCA

    now = dt.datetime.now(dt.timezone.utc)
    ca_dir = FleetCA.create(tmp_path / "fleet-ca", "fleet CA").dir
    ahead = FleetCA(ca_dir, clock=lambda: now + dt.timedelta(days=60))
    ahead.sign_csr(make_csr(new_ec_key(), "np-3a-01", "d", "s"))
    ahead.write_crl()
    week = now + dt.timedelta(days=7)
    FleetCA(ca_dir, clock=lambda: week).write_crl()
    assert x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes()).last_update_utc <= week


def test_a_crl_written_with_the_clock_behind_never_lapses_before_the_last_one(tmp_path: Path) -> None:
    # Round 3: checked against the CA's start only, a clock 50 days behind wrote a CRL already lapsed
    # (weekly `crl`, or a `revoke`), and Mosquitto refused every board
    import datetime as dt

    from edge_agent.provisioning.ca import FleetCA

    now = dt.datetime.now(dt.timezone.utc)
    ca_dir = FleetCA.create(tmp_path / "fleet-ca", "fleet CA", clock=lambda: now - dt.timedelta(days=400)).dir
    old = FleetCA(ca_dir, clock=lambda: now - dt.timedelta(days=100))
    old.sign_csr(make_csr(new_ec_key(), "np-01", "d", "s"))
    last = FleetCA(ca_dir, clock=lambda: now).write_crl()
    behind = FleetCA(ca_dir, clock=lambda: now - dt.timedelta(days=50))
    assert behind.write_crl() == last.replace(microsecond=0)
    behind.revoke("np-01")
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.next_update_utc == last.replace(microsecond=0) and len(list(crl)) == 1


def test_a_ca_run_once_with_its_clock_ahead_signs_again_when_it_is_told_the_clock_is_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # else a record from a clock set to 2031 would stop the CA until 2031 (round 2 of the review's fix)
    import datetime as dt

    from edge_agent.errors import ProvisioningError
    from edge_agent.provisioning.ca import CLOCK_IS_RIGHT_ENV, FleetCA

    today = dt.datetime.now(dt.timezone.utc)
    ca_dir = FleetCA.create(tmp_path / "fleet-ca", "fleet CA", clock=lambda: today).dir
    ahead = dt.datetime(2031, 3, 1, tzinfo=dt.timezone.utc)
    FleetCA(ca_dir, clock=lambda: ahead).sign_csr(make_csr(new_ec_key(), "np-3a-01", "d", "s"))
    csr = make_csr(new_ec_key(), "np-3a-02", "d", "s")
    ca = FleetCA(ca_dir, clock=lambda: today)
    with pytest.raises(ProvisioningError, match=f"Only if today is {today:%Y-%m-%d} .UTC. and that time came "
                                                f"from a clock that was ahead, run with {CLOCK_IS_RIGHT_ENV}="
                                                f"{today:%Y-%m-%d}"):
        ca.sign_csr(csr)
    # "1", or another day than this clock's, is not the word (round 3: a wrong clock re-dated the records
    # for good and signed on)
    for word in ("1", f"{today - dt.timedelta(days=50):%Y-%m-%d}"):
        monkeypatch.setenv(CLOCK_IS_RIGHT_ENV, word)
        with pytest.raises(ProvisioningError, match="before the CA's last signature"):
            ca.sign_csr(csr)
    monkeypatch.setenv(CLOCK_IS_RIGHT_ENV, f"{today:%Y-%m-%d}")
    signed = x509.load_pem_x509_certificate(ca.sign_csr(csr))
    assert signed.not_valid_before_utc < today
    # once told, the 2031 record is dated now: later runs sign without being told again (round 2)
    monkeypatch.delenv(CLOCK_IS_RIGHT_ENV)
    ca.sign_csr(make_csr(new_ec_key(), "np-3a-03", "d", "s"))
    monkeypatch.setenv(CLOCK_IS_RIGHT_ENV, "2024-06-01")
    # never before the CA certificate's own start, and then its index is left as it was
    index = (ca_dir / "index.json").read_bytes()
    with pytest.raises(ProvisioningError, match="before the CA certificate's start"):
        FleetCA(ca_dir, clock=lambda: dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)).sign_csr(csr)
    assert (ca_dir / "index.json").read_bytes() == index


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the broker's files to another account")
def test_renewing_the_brokers_certificate_keeps_the_owner_the_broker_reads_it_as(tmp_path: Path) -> None:
    """After the broker README's `chown -R mosquitto: /etc/mosquitto/edge`, a renewal wrote server.key as
    root's 0600: "Unable to load server key file ... Permission denied", Mosquitto did not start."""
    ca_dir, edge = tmp_path / "fleet-ca", tmp_path / "mosquitto" / "edge"
    assert main(["init", str(ca_dir)]) == 0
    assert main(["server", str(ca_dir), "localhost", "--out-dir", str(edge)]) == 0
    mosquitto = (65534, 100)  # as the README's chown (a user, and a group of another number)
    for path in edge.iterdir():
        os.chown(path, *mosquitto)
    (edge / "server.key").chmod(0o644)  # too wide for a key: narrowed, never widened
    before = (edge / "server.pem").read_bytes()
    assert main(["server", str(ca_dir), "localhost", "--out-dir", str(edge)]) == 0
    assert (edge / "server.pem").read_bytes() != before
    kept = {path.name: (path.stat().st_uid, path.stat().st_gid, stat.S_IMODE(path.stat().st_mode))
            for path in edge.iterdir()}
    assert kept == {"server.key": (*mosquitto, 0o640), "server.pem": (*mosquitto, 0o644)}


def test_a_ca_key_others_can_read_signs_nothing_until_it_is_chmod_600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """ca.key at 0644 in a 0755 folder: `sign` worked without a word (school IT review)."""
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    csr = _board_csr(tmp_path / "board.csr", "np-3a-01")
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "board.pem")]) == 0
    key = ca_dir / "ca.key"
    ca_dir.chmod(0o755)
    key.chmod(0o644)
    before = {path.name: path.read_bytes() for path in ca_dir.iterdir()}
    says = f"CA key {key} is readable by group or others (mode 644); run: chmod 600 {key}"
    other = _board_csr(tmp_path / "other.csr", "np-3a-02")
    for argv in (["sign", str(ca_dir), str(other), "--out", str(tmp_path / "other.pem")],
                 ["server", str(ca_dir), "localhost", "--out-dir", str(tmp_path / "broker")],
                 ["revoke", str(ca_dir), "np-3a-01"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert capsys.readouterr().err == f"error: {says}; nothing was signed\n"
    assert not (tmp_path / "other.pem").exists() and not (tmp_path / "broker").exists()
    assert {path.name: path.read_bytes() for path in ca_dir.iterdir()} == before
    # the weekly CRL rebuild (a timer, nobody at the keyboard) warns and goes on: refused, the CRL would
    # lapse and Mosquitto refuse every board
    assert main(["crl", str(ca_dir)]) == 0
    assert says in caplog.text
    key.chmod(0o600)
    assert main(["sign", str(ca_dir), str(other), "--out", str(tmp_path / "other.pem")]) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run one command as another account")
def test_the_ca_stays_its_operators_after_root_renews_the_brokers_certificate() -> None:
    """README: renew the broker's certificate as root where the CA and the broker are. That rewrote
    index.json as root's 0600, and the operator who owns the CA got "Permission denied" on sign, list and
    revoke, revoking a stolen board included (a review)."""
    operator = 65534
    with tempfile.TemporaryDirectory(prefix="ca-owner.", dir="/tmp") as folder:  # pytest's is root's, 0700
        os.chmod(folder, 0o755)
        os.chown(folder, operator, operator)
        base = Path(folder)
        ca_dir = base / "fleet-ca"
        as_operator = _as(operator)
        assert as_operator("init", str(ca_dir)) == 0
        assert main(["server", str(ca_dir), "mqtt.district.example", "--out-dir", str(base / "broker")]) == 0
        assert main(["crl", str(ca_dir)]) == 0
        owners = {path.name: (path.stat().st_uid, path.stat().st_gid) for path in ca_dir.iterdir()}
        assert owners == dict.fromkeys(["ca.key", "ca.pem", "index.json", "crl.pem"], (operator, operator))
        assert stat.S_IMODE((ca_dir / "index.json").stat().st_mode) == 0o600
        csr = _board_csr(base / "b.csr", "np-3a-01")
        os.chown(csr, operator, operator)
        assert as_operator("sign", str(ca_dir), str(csr), "--out", str(base / "b.pem")) == 0
        assert as_operator("list", str(ca_dir)) == 0
        assert as_operator("revoke", str(ca_dir), "np-3a-01") == 0


def _as(account: int) -> Callable[..., int]:
    def run(*argv: str) -> int:
        # forked, not a new interpreter: this one may live where that account cannot read
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.setgid(account)
                os.setuid(account)
                code = main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    return run


def test_a_ca_restored_from_a_backup_revokes_a_certificate_signed_after_it_by_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The nightly backup restored after the CA's disk died (or a second operator's copy) knew nothing of a
    board signed since: it could not revoke that board's certificate, by id or by serial (a review)."""
    import shutil

    ca_dir, backup = tmp_path / "fleet-ca", tmp_path / "backup"
    assert main(["init", str(ca_dir)]) == 0
    assert main(["sign", str(ca_dir), str(_board_csr(tmp_path / "a.csr", "b-0001")), "--out",
                 str(tmp_path / "a.pem")]) == 0
    shutil.copytree(ca_dir, backup)
    stolen = tmp_path / "b.pem"
    assert main(["sign", str(ca_dir), str(_board_csr(tmp_path / "b.csr", "b-0002")), "--out",
                 str(stolen)]) == 0
    serial = x509.load_pem_x509_certificate(stolen.read_bytes()).serial_number
    shutil.rmtree(ca_dir)
    shutil.copytree(backup, ca_dir)
    capsys.readouterr()

    assert main(["revoke", str(ca_dir), str(serial)]) == 2
    assert "revoke it with --cert FILE" in capsys.readouterr().err
    assert main(["revoke", str(ca_dir), "--cert", str(stolen)]) == 0
    assert str(serial) in capsys.readouterr().out
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert [r.serial_number for r in crl] == [serial]
    capsys.readouterr()
    assert main(["list", str(ca_dir)]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{serial}\t")]
    assert len(listed) == 1 and listed[0].startswith(f"{serial}\tb-0002\t"), listed
    assert listed[0].endswith("\trevoked")

    # only a certificate this CA signed; and a serial or id, or --cert, not both or neither
    other_ca = tmp_path / "other-ca"
    assert main(["init", str(other_ca)]) == 0
    foreign = tmp_path / "foreign.pem"
    assert main(["sign", str(other_ca), str(_board_csr(tmp_path / "f.csr", "b-0003")), "--out",
                 str(foreign)]) == 0
    before = {path.name: path.read_bytes() for path in ca_dir.iterdir()}
    capsys.readouterr()
    assert main(["revoke", str(ca_dir), "--cert", str(foreign)]) == 2
    assert "was not signed by the CA in" in capsys.readouterr().err
    assert main(["revoke", str(ca_dir)]) == 2
    assert main(["revoke", str(ca_dir), "b-0001", "--cert", str(stolen)]) == 2
    assert {path.name: path.read_bytes() for path in ca_dir.iterdir()} == before


def test_device_ids_that_differ_only_in_case_are_one_board_to_the_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inventory takes NP-3A-01 and np-3a-01 for one board; the CA gave each a live certificate, two
    boards under one DNS name (a review)."""
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    assert main(["sign", str(ca_dir), str(_board_csr(tmp_path / "a.csr", "NP-3A-01")), "--out",
                 str(tmp_path / "a.pem")]) == 0
    capsys.readouterr()
    other = _board_csr(tmp_path / "b.csr", "np-3a-01")
    assert main(["sign", str(ca_dir), str(other), "--out", str(tmp_path / "b.pem")]) == 2
    assert "'np-3a-01' already has a live certificate for another board's key" in capsys.readouterr().err
    assert main(["revoke", str(ca_dir), "np-3a-01"]) == 0  # the id as the inventory spells it
    capsys.readouterr()
    assert main(["list", str(ca_dir)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("\trevoked")


@pytest.mark.parametrize(("argv", "says"), [
    (("np-3a-01\n",), "is not a valid device id"),
    (("np-3a-01", "--name", "np-3a-01.school.example\n"), "is neither an IP address nor a DNS name"),
], ids=["id", "name"])
def test_a_device_id_or_name_with_a_trailing_newline_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    """'$' matches before a trailing newline: "np-3a-01\\n" was signed, beside np-3a-01 (a review)."""
    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    csr = _board_csr(tmp_path / "b.csr", argv[0])
    capsys.readouterr()
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "b.pem"), *argv[1:]]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "b.pem").exists()
    assert (ca_dir / "index.json").read_text() == "[]"


def test_a_certificate_that_cannot_be_written_is_not_left_live_in_the_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sign --out DIR` (a folder): signed, recorded live (superseding the board's installed certificate),
    never written (a review). A folder is refused before signing; a write that fails withdraws it."""
    import json

    ca_dir = tmp_path / "fleet-ca"
    assert main(["init", str(ca_dir)]) == 0
    csr = _board_csr(tmp_path / "b.csr", "np-3a-01")
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "b.pem")]) == 0
    index = (ca_dir / "index.json").read_bytes()
    capsys.readouterr()
    (tmp_path / "certs").mkdir()
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "certs")]) == 2
    assert "is a folder: give the certificate's file name" in capsys.readouterr().err
    assert (ca_dir / "index.json").read_bytes() == index
    (tmp_path / "a-file").write_text("")
    assert main(["sign", str(ca_dir), str(csr), "--out", str(tmp_path / "a-file" / "b.pem")]) == 2
    assert "is withdrawn from the CA's index" in capsys.readouterr().err
    rows = json.loads((ca_dir / "index.json").read_text())
    assert [(row["common_name"], row["revoked"], row["superseded_by"]) for row in rows] == [
        ("np-3a-01", False, None)
    ]


def _init_at_once(barrier: Any, results: Any, ca_dir: Path, i: int) -> None:
    barrier.wait()
    try:
        FleetCA.create(ca_dir, f"CA {i}", clock=_slow_clock)
        results.put("created")
    except ProvisioningError as exc:
        results.put(str(exc))


def _slow_clock() -> dt.datetime:
    time.sleep(0.3)  # the time an init takes on a slow SD card: both passed the check before either wrote
    return dt.datetime.now(dt.timezone.utc)


def test_two_inits_at_once_make_one_ca_and_refuse_the_other(tmp_path: Path) -> None:
    """Two operators ran `init` on one folder at once: both were told "CA created", and the last key
    written won, with a ca.pem of the other's at times (a review)."""
    import multiprocessing

    from cryptography.hazmat.primitives import serialization

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    ca_dir = tmp_path / "fleet-ca"
    runs = [context.Process(target=_init_at_once, args=(barrier, results, ca_dir, i)) for i in (1, 2)]
    for run in runs:
        run.start()
    said = sorted(results.get(timeout=30) for _ in runs)
    for run in runs:
        run.join(30)
    assert said[1] == "created" and said[0].startswith("a CA already exists in"), said
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    assert key.public_key() == cert.public_key()
