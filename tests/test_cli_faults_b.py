"""Command-line faults found by a review of the tools: each ends in one line naming what to fix, never in a
traceback, and the commands that work for minutes check their output paths before that work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.cli import main as edge_agent
from edge_agent.provisioning.ca import main as edge_agent_ca
from edge_agent.provisioning.ca import make_csr, new_ec_key


def test_keygen_whose_public_key_cannot_be_written_keeps_no_private_key_and_can_be_run_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the .pub's place cannot be written (a file where its folder should be: root passes a read-only
    # folder's permissions; the review's case was a read-only mount)
    (tmp_path / "not-a-folder").write_text("x")
    private, public = tmp_path / "fleet.key", tmp_path / "not-a-folder" / "fleet.pub"
    assert edge_agent(["model", "keygen", str(private), str(public)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fleet.pub" in err and "Traceback" not in err
    assert not private.exists()  # left, the rerun was refused: "already exists ... move it away"
    assert edge_agent(["model", "keygen", str(private), str(tmp_path / "fleet.pub")]) == 0


def test_keygen_and_sign_where_nothing_can_be_written_say_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    assert edge_agent(["model", "keygen", str(tmp_path / "not-a-folder" / "a.key"),
                       str(tmp_path / "a.pub")]) == 2
    assert "a.key" in capsys.readouterr().err
    assert not (tmp_path / "a.pub").exists()

    assert edge_agent(["model", "keygen", str(tmp_path / "k.key"), str(tmp_path / "k.pub")]) == 0
    package = tmp_path / "package"
    package.mkdir()
    (package / "w.bin").write_bytes(b"w")
    (package / "manifest.json").mkdir()  # its manifest cannot be written (as root, a read-only folder can)
    capsys.readouterr()
    assert edge_agent(["model", "sign", str(package), "--key", str(tmp_path / "k.key"), "--name", "kt",
                       "--version", "1"]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "not signed" in err


@pytest.fixture()
def engines_args(tmp_path: Path, model_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(tmp_path / "absent.toml"))  # defaults, not /etc
    return ["--cache-dir", str(tmp_path / "cache"), "--mirror", str(model_mirror)]


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("{tmp}", "is a folder"),
        ("{tmp}/caf\udce9.onnx", "not UTF-8"),  # a Latin-1 name, as Python hands it over
        ("/proc/x.onnx", "cannot write in /proc"),
        ("{tmp}/no-such-folder/x.onnx", "does not exist"),
    ],
)
def test_quantize_refuses_an_out_it_cannot_write_before_calibrating(
    engines_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, says: str
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    argv = ["engines", "quantize", "yunet", *engines_args, "--data", str(photos), "--out",
            out.format(tmp=tmp_path), "--force"]
    assert edge_agent(argv) == 1
    err = capsys.readouterr().err
    assert "--out" in err and says in err
    assert not (tmp_path / "cache").exists()  # refused before the model was even fetched


def test_bench_refuses_a_json_folder_before_benchmarking(
    engines_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["engines", "bench", "fsanet-1x1", *engines_args, "--iterations", "1", "--batch", "1",
            "--json", str(tmp_path)]
    assert edge_agent(argv) == 1
    assert "--json" in (err := capsys.readouterr().err) and "is a folder" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("empty", [False, True])
def test_list_with_a_manifests_folder_that_is_missing_or_empty_names_it(
    engines_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], empty: bool
) -> None:
    folder = tmp_path / "engnie"
    if empty:
        folder.mkdir()
    assert edge_agent(["engines", "list", "--manifests", str(folder), *engines_args]) == 1
    err = capsys.readouterr().err
    assert str(folder) in err and ("no *.toml" in err if empty else "does not exist" in err)
    assert "the config loads none" not in err


def test_ca_days_past_a_century_is_a_usage_error_for_init_and_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        edge_agent_ca(["init", str(tmp_path / "huge"), "--days", "3000000"])
    assert exited.value.code == 2 and "at most 36500" in capsys.readouterr().err
    assert not (tmp_path / "huge").exists()
    assert edge_agent_ca(["init", str(tmp_path / "ca"), "--days", "36500"]) == 0
    csr = tmp_path / "board.csr"
    csr.write_bytes(make_csr(new_ec_key(), "np-3a-01", "demo-district", "demo-school"))
    with pytest.raises(SystemExit) as exited:
        edge_agent_ca(["sign", str(tmp_path / "ca"), str(csr), "--out", str(tmp_path / "b.pem"),
                       "--days", "3000000"])
    assert exited.value.code == 2 and "at most 36500" in capsys.readouterr().err


def test_ca_list_of_a_mistyped_folder_is_an_error_as_crl_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_agent_ca(["init", str(tmp_path / "ca")]) == 0
    assert edge_agent_ca(["list", str(tmp_path / "ca")]) == 0  # a CA with no board yet lists nothing
    capsys.readouterr()
    assert edge_agent_ca(["list", str(tmp_path / "typo")]) == 2
    assert "no CA in" in capsys.readouterr().err


def test_bench_only_soak_without_a_soak_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert edge_agent(["bench", "--only", "soak", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "--soak-minutes" in captured.err and "--soak-raw" in captured.err
    assert "bench: " not in captured.out and not out.exists()


def test_bench_out_naming_a_file_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "ids.txt"
    taken.write_text("x")
    soak = tmp_path / "soak-raw.json"  # never read: refused first
    assert edge_agent(["bench", "--only", "soak", "--soak-raw", str(soak), "--out", str(taken)]) == 2
    captured = capsys.readouterr()
    assert f"--out {taken} is a file" in captured.err and "bench: " not in captured.out
    assert taken.read_text() == "x" and os.listdir(tmp_path) == ["ids.txt"]
