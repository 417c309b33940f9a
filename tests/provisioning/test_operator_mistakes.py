"""Mistakes an IT person makes with the fleet tools (found by following provisioning/README.md on
2026-12-02): each is refused with what to do, and nothing is written."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from edge_agent.provisioning.ca import FleetCA
from edge_agent.provisioning.cli import main as provision_main
from edge_agent.provisioning.cli import model_main
from tests.provisioning.fleet_helpers import INVENTORY, TEMPLATE


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "fleet-signing.key", tmp_path / "fleet-signing.pub"
    assert model_main(["keygen", str(private), str(public)]) == 0
    return private, public


def _provision(tmp_path: Path, *extra: str) -> int:
    inventory = tmp_path / "inv.csv"
    inventory.write_text(INVENTORY)
    return provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE), *extra])


def test_the_private_signing_key_given_as_the_boards_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _keys(tmp_path)
    root = tmp_path / "root"
    common = ("--device-id", "board-a", "--root", str(root), "--model-signing-key")
    assert _provision(tmp_path, *common, str(private)) == 2
    assert "is a private key: give the public one" in capsys.readouterr().err
    assert not (root / "etc/edge-agent/model-signing.pub").exists()  # was installed 0644 on every board
    assert _provision(tmp_path, *common, str(public)) == 3  # awaiting its certificate, key installed
    assert (root / "etc/edge-agent/model-signing.pub").read_bytes() == public.read_bytes()


def test_a_public_key_with_a_comment_naming_the_private_key_is_still_a_public_key(tmp_path: Path) -> None:
    from edge_agent.provisioning.model_package import load_public_key

    _, public = _keys(tmp_path)
    commented = tmp_path / "commented.pub"
    commented.write_bytes(b"# the PRIVATE KEY is in the district safe\n" + public.read_bytes())
    assert load_public_key(commented) == load_public_key(public)


def test_a_private_key_given_to_a_bulk_run_is_refused_before_any_board_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, _ = _keys(tmp_path)
    roots = tmp_path / "roots"
    assert _provision(tmp_path, "--roots", str(roots), "--model-signing-key", str(private)) == 2
    assert capsys.readouterr().err.count("is a private key") == 1
    assert not roots.exists()


def test_keygen_fills_empty_files_made_beforehand(tmp_path: Path) -> None:
    private, public = tmp_path / "k", tmp_path / "k.pub"
    private.touch()
    public.touch()
    assert model_main(["keygen", str(private), str(public)]) == 0
    assert b"PRIVATE KEY" in private.read_bytes()


def test_a_second_keygen_does_not_replace_the_fleets_signing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _keys(tmp_path)
    before = private.read_bytes(), public.read_bytes()
    assert model_main(["keygen", str(private), str(public)]) == 2
    assert "already exists: the boards trust the key pair there" in capsys.readouterr().err
    assert (private.read_bytes(), public.read_bytes()) == before


def test_verify_takes_the_tar_as_delivered_and_says_how_to_pack_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = _keys(tmp_path)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.onnx").write_bytes(b"weights")
    assert model_main(["sign", str(package), "--key", str(private), "--name", "kt", "--version", "2"]) == 0
    flat, nested = tmp_path / "kt-2.tar", tmp_path / "nested.tar"
    with tarfile.open(flat, "w") as tar:
        tar.add(package, arcname=".")  # tar -C pkg -cf kt-2.tar .
    with tarfile.open(nested, "w") as tar:
        tar.add(package, arcname="pkg")  # tar -cf nested.tar pkg
    capsys.readouterr()
    assert model_main(["verify", str(flat), "--pubkey", str(public)]) == 0
    assert "ok: kt 2, 1 files verified" in capsys.readouterr().out
    assert model_main(["verify", str(nested), "--pubkey", str(public)]) == 2  # was a traceback
    assert "no manifest.json at the top of the archive" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a package")
    assert model_main(["verify", str(tmp_path / "notes.txt"), "--pubkey", str(public)]) == 2
    assert "is neither a package folder nor a tar archive" in capsys.readouterr().err
    assert model_main(["verify", str(tmp_path / "nothing.tar"), "--pubkey", str(public)]) == 2
    assert "nothing.tar does not exist" in capsys.readouterr().err


def test_device_id_with_roots_is_refused_instead_of_provisioning_every_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = tmp_path / "roots"
    assert _provision(tmp_path, "--roots", str(roots), "--device-id", "board-a") == 2
    assert "--device-id picks one board for --root" in capsys.readouterr().err
    assert not roots.exists()


def test_an_inventory_saved_with_semicolons_says_to_save_it_with_commas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "excel.csv"
    inventory.write_text(INVENTORY.replace(",", ";"))
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE),
                           "--roots", str(tmp_path / "roots")]) == 2
    assert "separated by ';': save the file as CSV with commas" in capsys.readouterr().err


@pytest.mark.parametrize("empty", [",", ",,"], ids=["one", "two"])
def test_a_spreadsheets_empty_trailing_columns_are_ignored_and_a_used_unnamed_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], empty: str
) -> None:
    # Spreadsheets export "...,device_id,,": refused as "column(s)  appear twice in the header" (two) or
    # "unknown column(s) ;" (one)
    inventory = tmp_path / "sheet.csv"
    inventory.write_text("".join(line + empty + "\n" for line in INVENTORY.splitlines()))
    args = ["--inventory", str(inventory), "--template", str(TEMPLATE), "--roots", str(tmp_path / "roots")]
    assert provision_main(args) == 3, capsys.readouterr().err  # every board awaiting its certificate
    assert sorted(p.name for p in (tmp_path / "roots").iterdir()) == ["board-a", "board-b", "board-c"]
    lines = inventory.read_text().splitlines()
    lines[2] += "oops"  # a value under a column with no name: which key was meant?
    inventory.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert provision_main(args) == 2
    column = 5 + len(empty)  # the last one
    says = f"column {column} has no name in the header but line 3 has a value in it"
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("quoted", "says"),
    [(5, "line 7: field larger than field limit (131072); a '\"' there without its closing one"),
     (2998, "line 3000: a cell runs over several lines; a '\"' there without its closing one")],
    ids=["big-inventory", "last-rows"],
)
def test_a_stray_quote_in_the_inventory_is_refused_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quoted: int, says: str
) -> None:
    # A review: a '"' without its closing one in a 3,000-board inventory ended the run in a traceback
    # (_csv.Error: field larger than field limit); near the end, the boards after it became one board's
    # display name, refused as "TOML syntax" on the last line, which named neither the quote nor its line
    rows = [f"district,school-{i // 40},class-{i},b-{i:05d},0,Class {i}" for i in range(3000)]
    rows[quoted] = rows[quoted].replace(",Class", ',"Class')
    inventory = tmp_path / "fleet.csv"
    inventory.write_text("tenant,site,class_id,device_id,camera.source,device.display_name\n"
                         + "\n".join(rows) + "\n")
    roots = tmp_path / "roots"
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE),
                           "--roots", str(roots)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {inventory}: {says}") and "close it or delete it" in err, err
    assert not roots.exists()


def test_the_model_commands_usage_names_the_command_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        model_main(["sign"])
    assert "usage: edge-agent-model sign " in capsys.readouterr().err  # was "edge-agent-model model sign"


def test_re_provisioning_a_revoked_board_warns_that_the_broker_refuses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.provisioning.ca import FleetCA

    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    common = ("--device-id", "board-a", "--root", str(tmp_path / "root"), "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *common) == 0
    ca.revoke("board-a")
    caplog.clear()
    assert _provision(tmp_path, *common) == 0  # kept: a revocation is usually meant
    assert "is revoked in the fleet CA, so the broker refuses this board" in caplog.text
    device_pem = tmp_path / "root/etc/edge-agent/certs/device.pem"
    device_key = tmp_path / "root/etc/edge-agent/secrets/device.key"
    revoked, stolen = device_pem.read_bytes(), device_key.read_bytes()
    # --replace in a run for the whole inventory (meant for another board) leaves it revoked: it put a
    # stolen board's key back on the broker, live (fleet review)
    roots = ("--inventory", str(tmp_path / "inv.csv"), "--template", str(TEMPLATE), "--ca-dir", str(ca.dir))
    shutil.copytree(tmp_path / "root", tmp_path / "all/board-a", symlinks=True)
    caplog.clear()
    capsys.readouterr()
    assert provision_main([*roots, "--roots", str(tmp_path / "all"), "--replace"]) == 0
    assert "run for it alone with --replace (--root <its folder> --device-id board-a" in caplog.text
    # the run's summary says so too (a review: "board-a: provisioned; nothing to change" read as ready)
    summary = {line.split(" ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "]: revoked, kept so (the broker refuses it)" in summary["board-a"], summary
    assert "]: provisioned" in summary["board-b"], summary
    assert (tmp_path / "all/board-a/etc/edge-agent/certs/device.pem").read_bytes() == revoked
    # a one-board inventory is a run for it alone, as the warning says (round 3: it did nothing)
    alone = tmp_path / "alone.csv"
    alone.write_text("\n".join((tmp_path / "inv.csv").read_text().splitlines()[:1] + [
        line for line in (tmp_path / "inv.csv").read_text().splitlines() if ",board-a" in line]) + "\n")
    shutil.copytree(tmp_path / "root", tmp_path / "one/board-a", symlinks=True)
    assert provision_main(["--inventory", str(alone), "--template", str(TEMPLATE), "--ca-dir", str(ca.dir),
                           "--roots", str(tmp_path / "one"), "--replace"]) == 0
    assert (tmp_path / "one/board-a/etc/edge-agent/certs/device.pem").read_bytes() != revoked
    assert _provision(tmp_path, *common, "--replace") == 0  # for it alone: a new certificate, a new key
    assert device_pem.read_bytes() != revoked and device_key.read_bytes() != stolen
    caplog.clear()
    assert _provision(tmp_path, *common) == 0
    assert "revoked" not in caplog.text


def test_one_class_id_on_two_boards_of_a_site_is_warned_of_with_both_lines_and_provisioned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: a row copied for a new board and its class_id left unchanged went unnoticed, and two
    # classrooms' windows counted as one class's. Two cameras in one big room are meant, so not refused.
    inventory = tmp_path / "inv.csv"
    inventory.write_text(INVENTORY + "district-a,school-1,class-1,board-d,0\n"
                         "district-b,school-9,class-1,board-e,0\n")  # class-1 of another school: its own
    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE),
                           "--ca-dir", str(ca.dir), "--roots", str(tmp_path / "roots")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{inventory}: line 2 (board-a) and line 5 (board-d) both have class_id 'class-1' at "
                        "district-a/school-1: two boards in one room? If not, correct the class_id of one "
                        "(their data would count as one class's)"]
    assert capsys.readouterr().out.count(": provisioned;") == 5


def test_every_boards_bad_value_is_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inv.csv"
    inventory.write_text(
        "tenant,site,class_id,device_id,web.port\n"
        "district-a,school-1,class-1,board-a,70000\n"
        "district-a,school-1,class-2,board-b,8080\n"
        "district-a,school-1,class-3,board-c,-2\n"
    )
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE),
                           "--roots", str(tmp_path / "roots")]) == 2
    err = capsys.readouterr().err
    assert "board board-a (inventory line 2)" in err and "board board-c (inventory line 4)" in err, err
    assert not (tmp_path / "roots").exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--template", "{tmp}/nothing.toml", "--roots", "{tmp}/r"], "--template {tmp}/nothing.toml: cannot"),
        (["--template", "{template}", "--root", "{tmp}/r"], "give --device-id ID"),
    ],
    ids=["missing-template", "root-without-device-id"],
)
def test_a_missing_option_or_file_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    inventory = tmp_path / "inv.csv"
    inventory.write_text(INVENTORY)
    fill = {"tmp": str(tmp_path), "template": str(TEMPLATE)}
    assert provision_main(["--inventory", str(inventory), *(a.format(**fill) for a in argv)]) == 2
    assert says.format(**fill) in capsys.readouterr().err


def test_a_crl_rebuild_pointed_at_a_wrong_folder_does_not_advise_a_new_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.provisioning.ca import main as ca_main

    assert ca_main(["crl", str(tmp_path / "no-ca-here")]) == 2
    err = capsys.readouterr().err
    assert "check the path (FLEET_CA for edge-agent-crl.service)" in err
    assert not (tmp_path / "no-ca-here").exists()


def test_a_revoked_board_is_not_let_back_when_its_certificate_has_expired_either(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import datetime as dt

    from edge_agent.provisioning.ca import FleetCA

    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    root = tmp_path / "root"
    common = ("--device-id", "board-a", "--root", str(root), "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *common) == 0
    etc = root / "etc/edge-agent"
    now = dt.datetime.now(dt.timezone.utc)
    expired = ca.sign_csr((etc / "certs/device.csr").read_bytes(), not_before=now - dt.timedelta(days=900),
                          not_after=now - dt.timedelta(days=1))
    (etc / "certs/device.pem").write_bytes(expired)
    ca.revoke("board-a")
    caplog.clear()
    assert _provision(tmp_path, *common) == 0
    assert "is revoked in the fleet CA" in caplog.text
    assert (etc / "certs/device.pem").read_bytes() == expired  # not renewed
    assert not any(row.common_name == "board-a" and not row.revoked for row in ca.index())


def test_a_replaced_board_is_named_before_replace_would_revoke_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_agent.provisioning.ca import FleetCA

    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    old = ("--device-id", "board-a", "--root", str(tmp_path / "old"), "--ca-dir", str(ca.dir))
    new = ("--device-id", "board-a", "--root", str(tmp_path / "new"), "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *old) == 0
    ca.revoke("board-a")
    assert _provision(tmp_path, *new) == 2  # a revoked id is not signed again without a word
    assert _provision(tmp_path, *new, "--replace") == 0  # the new hardware takes the id
    (live,) = [row.serial for row in ca.index() if not row.revoked]
    caplog.clear()
    assert _provision(tmp_path, *old) == 0
    assert f"another board now holds this id (certificate {live}), which --replace" in caplog.text
    caplog.clear()
    secrets = tmp_path / "old/etc/edge-agent/secrets"
    before = {name: (secrets / name).read_bytes() for name in ("web.token", "pseudonym.key", "device.key")}
    assert _provision(tmp_path, *old, "--replace") == 0
    assert f"revoked certificate {live} of board-a" in caplog.text
    # back on a new key and a new teacher-view token (round 2: a thief's copy of the token still opened
    # its view); the students' pseudonyms go on
    after = {name: (secrets / name).read_bytes() for name in before}
    assert [name for name in before if before[name] != after[name]] == ["web.token", "device.key"]


def test_a_revoked_board_brought_back_keeps_its_key_and_token_until_the_ca_signs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A --replace run the CA refused (its ca.key readable by others) had written a new device.key and
    # web.token already; each retry rotated them again
    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)  # a userland (this machine's users): secrets get edge-agent as owner
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    common = ("--device-id", "board-a", "--root", str(root), "--ca-dir", str(ca.dir), "--replace")
    assert _provision(tmp_path, *common) == 0
    ca.revoke("board-a")
    etc = root / "etc/edge-agent"
    kept = ("secrets/device.key", "secrets/web.token", "certs/device.csr", "certs/device.pem")
    before = {name: (etc / name).read_bytes() for name in kept}
    ca.key_path.chmod(0o644)
    for _ in range(2):
        assert _provision(tmp_path, *common) == 2
        assert f"run: chmod 600 {ca.key_path}" in capsys.readouterr().err
        assert {name: (etc / name).read_bytes() for name in kept} == before
    ca.key_path.chmod(0o600)
    assert _provision(tmp_path, *common) == 0
    after = {name: (etc / name).read_bytes() for name in kept}
    assert [name for name in kept if after[name] == before[name]] == []
    if os.geteuid() == 0:  # the new ones are the daemon's to read, as the old ones were
        owner = (etc / "secrets/pseudonym.key").stat().st_uid
        assert owner != 0 and {(etc / n).stat().st_uid for n in kept[:2]} == {owner}


def _provisioned_fleet(tmp_path: Path) -> tuple[FleetCA, Path, tuple[str, ...]]:
    """A fleet CA, the inventory's boards provisioned into roots/ by one run, and that run's arguments."""
    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    roots = tmp_path / "roots"
    bulk = ("--roots", str(roots), "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *bulk) == 0
    return ca, roots, bulk


def test_a_decommissioned_boards_id_is_not_signed_again_by_a_run_for_the_whole_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Review: `edge-agent-ca revoke fleet-ca sm-204-01`, its folder removed, the bulk run again: "sm-204-01
    # ... provisioned" with a new live certificate, where the README says it stays revoked
    ca, roots, bulk = _provisioned_fleet(tmp_path)
    ca.revoke("board-b")
    shutil.rmtree(roots / "board-b")
    index, others = ca.index(), {p.name: sorted(p.rglob("*")) for p in roots.iterdir()}
    capsys.readouterr()
    assert _provision(tmp_path, *bulk) == 2
    err = capsys.readouterr().err
    assert "board board-b (inventory line 3): device id 'board-b' was revoked (certificate " in err, err
    assert ("Delete its row from the inventory; if a new board takes this id, run for this board alone with "
            f"--replace (--root {roots / 'board-b'} --device-id board-b, or a one-board inventory)") in err
    assert ca.index() == index and not (roots / "board-b").exists()  # nothing signed, nothing written
    assert {p.name: sorted(p.rglob("*")) for p in roots.iterdir()} == others
    # a new board takes the id: --replace acts in a run for it alone
    assert _provision(tmp_path, *bulk, "--replace") == 2
    assert f"run for this board alone with --replace (--root {roots / 'board-b'} --device-id board-b" in (
        capsys.readouterr().err)
    assert ca.index() == index and not (roots / "board-b").exists()
    alone = ("--root", str(roots / "board-b"), "--device-id", "board-b", "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *alone, "--replace") == 0
    assert [row.common_name for row in ca.index() if not row.revoked] == ["board-a", "board-c", "board-b"]
    assert _provision(tmp_path, *bulk) == 0


def test_replace_in_a_run_for_the_whole_inventory_revokes_no_board_whose_folder_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # A review: board-b's new hardware, and the bulk run with --replace into ROOTS that no longer held
    # board-a's and board-c's folders (copied onto their boards): each got a new key and its live
    # certificate, the real board's, was revoked; the whole fleet cut off at the broker's next CRL
    ca, roots, bulk = _provisioned_fleet(tmp_path)
    for name in ("board-a", "board-b", "board-c"):
        shutil.rmtree(roots / name)
    index = ca.index()
    capsys.readouterr()
    assert _provision(tmp_path, *bulk, "--replace") == 2
    err = capsys.readouterr().err
    for line, name in ((2, "board-a"), (3, "board-b"), (4, "board-c")):
        assert f"board {name} (inventory line {line}): device id {name!r} already has a live cert" in err
        assert f"run for this board alone with --replace (--root {roots / name} --device-id {name}" in err
    assert "--replace acts in a run for one board only" in caplog.text
    assert ca.index() == index and list(roots.iterdir()) == []  # nothing revoked, signed or written
    alone = ("--root", str(roots / "board-b"), "--device-id", "board-b", "--ca-dir", str(ca.dir))
    assert _provision(tmp_path, *alone, "--replace") == 0  # the one board that replaces another
    assert [row.common_name for row in ca.index() if row.revoked] == ["board-b"]


def test_a_board_renamed_in_the_inventory_is_refused_before_any_board_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Round 2 of a review: board-b renamed board-b2 (its row and its folder): the check before writing
    # was skipped as a certificate was installed; board-a's files were written, then the CA refused the
    # key live as board-b with no inventory line
    ca, roots, bulk = _provisioned_fleet(tmp_path)
    (roots / "board-b").rename(roots / "board-b2")
    inventory = tmp_path / "renamed.csv"
    inventory.write_text(INVENTORY.replace("board-b,", "board-b2,"))
    files = {p: p.read_bytes() for p in sorted(roots.rglob("*")) if p.is_file()}
    index = ca.index()
    capsys.readouterr()
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE), *bulk]) == 2
    err = capsys.readouterr().err
    assert "board board-b2 (inventory line 3): its key in" in err and "as 'board-b'" in err, err
    assert "if the board was renamed, run for this board alone with --replace" in err
    assert {p: p.read_bytes() for p in sorted(roots.rglob("*")) if p.is_file()} == files
    assert ca.index() == index
    renamed = ["--inventory", str(inventory), "--template", str(TEMPLATE), "--ca-dir", str(ca.dir)]
    assert provision_main([*renamed, "--roots", str(roots), "--replace"]) == 2  # for one board only
    assert "if the board was renamed, run for this board alone with --replace (--root " in (
        capsys.readouterr().err)
    assert ca.index() == index
    alone = ["--root", str(roots / "board-b2"), "--device-id", "board-b2", "--replace"]
    assert provision_main([*renamed, *alone]) == 0  # renamed on purpose
    assert [row.common_name for row in ca.index() if not row.revoked] == ["board-a", "board-c", "board-b2"]


def test_provisioning_this_board_without_root_says_to_run_it_as_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: without sudo it failed with systemd-sysusers' "Failed to take /etc/passwd lock"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    # --cert without --ca-cert: a check made later would stop at that, before this machine's /etc
    assert _provision(tmp_path, "--device-id", "board-a", "--cert", str(tmp_path / "x.pem")) == 2
    assert "creates its system user, writes /etc and runs systemctl: run it as root (sudo" in (
        capsys.readouterr().err)


def test_a_board_whose_id_the_ca_holds_in_other_capitals_for_another_key_is_refused_before_any_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A review: BOARD-B signed by hand, board-b in the inventory: two live certificates under one DNS name
    from edge_agent.provisioning.ca import make_csr, new_ec_key

    ca = FleetCA.create(tmp_path / "ca", "test fleet CA")
    ca.sign_csr(make_csr(new_ec_key(), "BOARD-B", "district-a", "school-1"))
    index = ca.index()
    roots = tmp_path / "roots"
    assert _provision(tmp_path, "--roots", str(roots), "--ca-dir", str(ca.dir)) == 2
    err = capsys.readouterr().err
    says = "board board-b (inventory line 3): device id 'board-b' already has a live certificate for another"
    assert says in err, err
    assert not roots.exists() and ca.index() == index


@pytest.mark.parametrize("header", ["tenant, site, class_id, device_id, camera.source",
                                    "Tenant,Site,Class_ID,Device_ID,Camera.Source"],
                         ids=["spaces", "capitals"])
def test_an_inventory_header_with_spaces_or_capitals_names_the_same_columns(header: str) -> None:
    from edge_agent.provisioning.inventory import parse_inventory

    text = header + "\n" + INVENTORY.split("\n", 1)[1]
    boards = parse_inventory(text, "inv.csv")
    assert [(b.device_id, b.overrides) for b in boards] == [
        ("board-a", {"camera.source": "0"}), ("board-b", {"camera.source": "/dev/video1"}),
        ("board-c", {"camera.source": "0"}),
    ]


def test_an_inventory_with_excels_sep_line_says_to_remove_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "excel.csv"
    inventory.write_text("sep=,\n" + INVENTORY)
    assert provision_main(["--inventory", str(inventory), "--template", str(TEMPLATE),
                           "--roots", str(tmp_path / "roots")]) == 2
    assert "remove Excel's sep=, line" in capsys.readouterr().err
    assert not (tmp_path / "roots").exists()
