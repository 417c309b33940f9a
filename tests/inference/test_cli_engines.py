"""The `edge-agent engines ...` commands, run through the real argument parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from edge_agent.inference.cli_engines import NO_TENSORRT, add_engines_parser
from edge_agent.inference.tensorrt_backend import trt


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_engines_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture()
def common(tmp_path, model_mirror, monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(tmp_path / "absent.toml"))  # defaults, not /etc
    return ["--cache-dir", str(tmp_path / "cache"), "--mirror", str(model_mirror)]


def test_fetch_list_and_verify(common, capsys):
    assert _run(["engines", "fetch", "fsanet-1x1", "yunet", *common]) == 0
    assert _run(["engines", "list", *common]) == 0
    out = capsys.readouterr().out
    assert "fsanet-1x1" in out and "present" in out and "not fetched" in out  # fsanet-var was not fetched
    assert _run(["engines", "verify", "fsanet-1x1", "yunet", *common]) == 0
    assert "yunet: OK" in capsys.readouterr().out


def test_verify_reports_a_tampered_cache_file(common, tmp_path, capsys):
    assert _run(["engines", "fetch", "fsanet-var", *common]) == 0
    cached = next((tmp_path / "cache" / "models").rglob("fsanet-var*.onnx"))
    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")
    assert _run(["engines", "verify", "fsanet-var", *common]) == 1
    assert "does not match the pinned sha256" in capsys.readouterr().err


def test_unknown_model_is_an_error_not_a_traceback(common, capsys):
    assert _run(["engines", "fetch", "no-such-model", *common]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_a_key_only_a_newer_release_knows_is_named_and_ignored_as_the_daemon_does(
    tmp_path, model_mirror, monkeypatch, capsys
):
    # edge-agent-engines.service after a rollback: the config holds a newer release's key. It stopped the
    # engine build under a real systemd (2026-12-01); `config check` stays strict.
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nfuture_key = "x"\n[paths]\ncache_dir = "{tmp_path / "cache"}"\n'
                      f'model_mirror = "{model_mirror}"\n')
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(config))
    assert _run(["engines", "fetch", "fsanet-1x1"]) == 0
    assert "device.future_key (line 2) is not a key this release knows; ignored" in capsys.readouterr().err
    assert next((tmp_path / "cache" / "models").rglob("fsanet-1x1*.onnx")).is_file()


def test_without_names_the_models_the_config_loads_are_fetched_and_no_other(
    tmp_path, model_mirror, monkeypatch, capsys
):
    # What edge-agent-engines.service runs: it fetched and built every manifest, yunet-2023mar too (the
    # official file, kept for comparison, never loaded): minutes on an Orin, and offline a failed build
    # at every boot. Camera off: no vision model at all.
    config = tmp_path / "config.toml"
    base = f'[paths]\ncache_dir = "{tmp_path / "cache"}"\nmodel_mirror = "{model_mirror}"\n'
    config.write_text(base)
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(config))
    assert _run(["engines", "fetch"]) == 0
    fetched = {line.split(":")[0] for line in capsys.readouterr().out.splitlines()}
    assert fetched == {"kt-step", "yunet", "fsanet-1x1", "fsanet-var"}
    assert _run(["engines", "verify"]) == 0
    assert "yunet-2023mar" not in capsys.readouterr().out
    config.write_text(base + "[camera]\nenabled = false\n")
    assert _run(["engines", "fetch"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["kt-step"]
    assert _run(["engines", "fetch", "yunet-2023mar"]) == 0  # by name, still
    config.write_text(base + "[camera]\nenabled = false\n[kt]\nenabled = false\n")
    assert _run(["engines", "fetch"]) == 0
    assert "no model: the config loads none" in capsys.readouterr().err
    # round 2: a mistyped --config chose the models (and folders) by the defaults, without a word
    assert _run(["engines", "verify", "--config", str(tmp_path / "nonexist.toml")]) == 1
    assert "nonexist.toml not found" in capsys.readouterr().err


@pytest.mark.skipif(trt is not None, reason="TensorRT imports here")
def test_build_without_tensorrt_builds_nothing_and_says_so(common, tmp_path, capsys):
    assert _run(["engines", "build", "fsanet-1x1", *common]) == NO_TENSORRT
    assert "no engine built" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "engines").exists()


def test_an_int8_model_too_inaccurate_for_its_role_is_not_put_where_the_board_loads_it(
    common, faces_dir, tmp_path, capsys
):
    # Review: written in place before it was measured, fsanet-1x1's symmetric INT8 (off by 28 degrees on
    # average, the attentive flag flipped on 21 of 84 faces) ran as soon as pose_precision said int8.
    from edge_agent.config import PathSettings
    from edge_agent.inference.manifest import ENGINES_DIR, load_manifests
    from edge_agent.inference.select import qdq_model_path

    manifest = load_manifests(ENGINES_DIR)["fsanet-1x1"]
    where = qdq_model_path(manifest, PathSettings(cache_dir=tmp_path / "cache"))
    quantize = ["engines", "quantize", "fsanet-1x1", "--data", str(faces_dir), "--samples", "24",
                "--held-out", "8", *common]
    assert _run(quantize) == 1
    err = capsys.readouterr().err
    assert "INT8 model NOT written" in err and "degrees on average" in err
    # what the board then does, said truly (it said "runs the model at its other precision")
    assert "A board set to int8 for it runs it at fp16 on TensorRT, fp32 on ONNX Runtime" in err
    assert not where.exists() and list(where.parent.glob("*.trial")) == []
    assert _run([*quantize, "--force"]) == 0
    assert where.is_file() and "WARNING, written with --force" in capsys.readouterr().out
    # and measured again without --force: the forced one is not left where the board loads it
    assert _run(quantize) == 1
    assert "the earlier one at" in capsys.readouterr().err and not where.exists()


def test_quantize_then_bench_shows_fp32_and_int8_side_by_side(common, faces_dir, tmp_path, capsys):
    data = str(faces_dir / "voc_dlib")
    assert (
        _run(
            [
                "engines",
                "quantize",
                "fsanet-var",
                "--data",
                data,
                "--samples",
                "16",
                "--held-out",
                "4",
                *common,
            ]
        )
        == 0
    )
    assert "max |int8 - fp32|" in capsys.readouterr().out
    report = tmp_path / "bench.json"
    assert (
        _run(
            [
                "engines",
                "bench",
                "fsanet-var",
                "kt-step",
                "--batch",
                "8",
                "--iterations",
                "20",
                "--json",
                str(report),
                *common,
            ]
        )
        == 0
    )
    rows = json.loads(report.read_text())
    measured = {(r["model"], r["backend"], r["precision"], r["batch"]) for r in rows if r["median_ms"]}
    assert ("fsanet-var", "onnxruntime", "fp32", 1) in measured
    assert ("fsanet-var", "onnxruntime", "int8", 1) in measured
    assert ("kt-step", "onnxruntime", "fp32", 8) in measured
    notes = " ".join(r["note"] for r in rows)
    # The engines run the derived copy (dynamic batch, folded) of the fsanet export, and so does its Q/DQ.
    assert {("fsanet-var", "onnxruntime", p, 8) for p in ("fp32", "int8")} <= measured
    assert "TensorRT" in notes
    torch_rows = [r for r in rows if r["backend"].startswith("pytorch")]
    assert torch_rows  # measured, or a row saying why it was skipped


def test_an_asymmetric_int8_model_written_where_the_board_looks_is_never_built_by_tensorrt(
    common, faces_dir, tmp_path, model_mirror, capsys
):
    # Review: its record held the source's hash alone, so the loader gave TensorRT (which rejects a non-zero
    # zero point, NVIDIA/TensorRT#4698) the asymmetric model as current.
    from edge_agent.config import InferenceSettings, PathSettings
    from edge_agent.inference.fetch import engine_model
    from edge_agent.inference.manifest import load_manifests
    from edge_agent.inference.select import load_engine

    from .fake_tensorrt import FakeTensorRT

    assert _run(["engines", "quantize", "fsanet-var", "--asymmetric", "--data", str(faces_dir / "voc_dlib"),
                 "--samples", "16", "--held-out", "4", *common]) == 0
    said = capsys.readouterr().out
    manifest = load_manifests()["fsanet-var"]
    paths = PathSettings(cache_dir=tmp_path / "cache", model_mirror=model_mirror)
    int8 = InferenceSettings(pose_precision="int8")
    port = FakeTensorRT()
    loaded = load_engine(manifest, int8.model_copy(update={"backend": "tensorrt"}), paths, tensorrt=port)
    assert (loaded.backend, loaded.precision) == ("fake-tensorrt", "fp16")
    assert port.builds == [(engine_model(manifest, paths).name, "fp16")]  # from FP32, not from the Q/DQ
    on_cpu = load_engine(manifest, int8.model_copy(update={"backend": "onnxruntime"}), paths)
    assert on_cpu.precision == "int8" and on_cpu.fallback is None  # ONNX Runtime runs it
    assert "TensorRT, which needs symmetric INT8, builds fp16 instead" in said


def test_bench_skips_an_int8_model_made_from_another_version_of_the_model(common, faces_dir, tmp_path):
    # Review: bench timed whatever Q/DQ file was there, one the loader refuses as stale too.
    from edge_agent.config import PathSettings
    from edge_agent.inference.manifest import load_manifests
    from edge_agent.inference.select import qdq_model_path, qdq_source_record

    quantize = ["engines", "quantize", "fsanet-var", "--data", str(faces_dir / "voc_dlib"), "--samples", "8",
                "--held-out", "2", "--force", *common]
    assert _run(quantize) == 0
    qdq = qdq_model_path(load_manifests()["fsanet-var"], PathSettings(cache_dir=tmp_path / "cache"))
    record = qdq_source_record(qdq)
    record.write_text("0" * 64 + "\n" + record.read_text().split("\n", 1)[1])  # another model's hash
    report = tmp_path / "bench.json"
    assert _run(["engines", "bench", "fsanet-var", "--iterations", "2", "--json", str(report), *common]) == 0
    rows = json.loads(report.read_text())
    rows = [r for r in rows if (r["backend"], r["precision"]) == ("onnxruntime", "int8")]
    assert len(rows) == 1 and rows[0]["median_ms"] is None
    assert rows[0]["note"].startswith(f"skipped: the INT8 model at {qdq} was made from another version")


@pytest.mark.parametrize(
    "argv",
    [
        ["quantize", "yunet", "--data", "x", "--held-out", "0"],
        ["quantize", "yunet", "--data", "x", "--held-out", "-2"],
        ["quantize", "yunet", "--data", "x", "--samples", "0"],
        ["bench", "yunet", "--iterations", "0"],
        ["bench", "yunet", "--batch", "0"],
    ],
    ids=["held-out-0", "held-out-negative", "samples-0", "iterations-0", "batch-0"],
)
def test_a_count_below_one_is_a_usage_error_not_a_traceback(common, argv, capsys):
    # Review: --held-out 0 took every sample out of calibration (samples[:-0] is empty), a negative one
    # measured on calibration samples, and bench --iterations 0 ended in an IndexError from np.percentile.
    with pytest.raises(SystemExit) as exit_:
        _run(["engines", *argv, *common])
    assert exit_.value.code == 2
    assert f"argument {argv[-2]}: '{argv[-1]}': give at least 1" in capsys.readouterr().err


def test_bench_takes_the_larger_batch_only_as_far_as_each_profile_goes(common, tmp_path):
    # --batch's default 16: fsanet's profile stops at 8 faces a call and yunet's at 1 frame, which gave rows
    # saying "batch outside the engine profile" in place of fsanet's batched figure
    report = tmp_path / "bench.json"
    assert _run(["engines", "bench", "fsanet-var", "yunet", "--iterations", "3", "--json", str(report),
                 *common]) == 0
    rows = json.loads(report.read_text())
    measured = {(r["model"], r["batch"]) for r in rows if r["backend"] == "onnxruntime" and r["median_ms"]}
    assert measured == {("fsanet-var", 1), ("fsanet-var", 8), ("yunet", 1)}
    assert not [r for r in rows if "outside the engine profile" in r["note"]]


def _kt_board(tmp_path, model_mirror, monkeypatch, kt: str = "") -> Path:
    """A board config (camera off: kt-step alone), with the signing key installed; written to
    $EDGE_AGENT_CONFIG."""
    from edge_agent.provisioning.model_package import generate_signing_key

    if not (tmp_path / "signing.pub").exists():
        generate_signing_key(tmp_path / "signing.key", tmp_path / "signing.pub")
    config = tmp_path / "config.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\ncache_dir = "{tmp_path / "cache"}"\n'
                      f'model_mirror = "{model_mirror}"\n'
                      f'[updates]\npublic_key_file = "{tmp_path / "signing.pub"}"\n'
                      f"[camera]\nenabled = false\n{kt}")
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(config))
    return config


def _kt_package(folder: Path, label: str) -> Path:
    """The shipped KT package with a step model of other bytes (so of another plan)."""
    import shutil

    import onnx

    from edge_agent.kt.package import DEFAULT_PACKAGE_DIR

    shutil.copytree(DEFAULT_PACKAGE_DIR, folder)
    model = onnx.load(str(folder / "kt_step.onnx"))
    model.producer_version = label
    onnx.save(model, str(folder / "kt_step.onnx"))
    return folder


def _built_from(tmp_path) -> set[str]:
    """The ONNX files the (fake) plans in the cache were built from."""
    plans = (tmp_path / "cache" / "engines").glob("*.plan")
    return {p.read_bytes().split(b"FAKEPLAN:")[-1].decode() for p in plans}


def test_build_makes_the_plan_of_the_kt_package_the_daemon_runs_next_and_changes_nothing(
    tmp_path, model_mirror, monkeypatch
):
    # A review: edge-agent-engines.service built kt-step from kt.package_dir or the shipped package, while
    # the daemon ran the signed update installed last: a plan never used, and minutes of building at start.
    from edge_agent.assembly import KT_PACKAGE_DIR_SEEN, _installed_kt
    from edge_agent.config import load_config_for_command
    from edge_agent.inference import tensorrt_backend
    from edge_agent.inference.manifest import KT_MODEL, load_manifests
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
    from edge_agent.provisioning.model_package import load_public_key, sign_package
    from edge_agent.provisioning.model_update import ModelStore

    from .fake_tensorrt import FakeTensorRT

    config = _kt_board(tmp_path, model_mirror, monkeypatch)
    update = _kt_package(tmp_path / "kt-2.0", "update-2.0")
    sign_package(update, tmp_path / "signing.key", "kt", "2.0")
    store = ModelStore(tmp_path / "state/models", [load_public_key(tmp_path / "signing.pub")])
    store.install(update, lambda p: OnnxRuntimeEngine(p / "kt_step.onnx"), lambda e: True)
    monkeypatch.setattr(tensorrt_backend, "open_tensorrt", FakeTensorRT())  # the hardware port

    def daemon_runs() -> str:  # the step model the daemon's assembly picks (it writes its seen file)
        manifests = load_manifests()
        _installed_kt(load_config_for_command(config), manifests)
        return str(manifests[KT_MODEL].source.repo_path)

    _run(["engines", "build"])  # exit 1 here: the fake's engines report "fake-tensorrt"
    installed = str(tmp_path.resolve() / "state/models/kt/versions/2.0/kt_step.onnx")
    assert _built_from(tmp_path) == {installed} == {daemon_runs()}
    # kt.package_dir set since that start: the newer choice, run instead of the update
    school = _kt_package(tmp_path / "school-kt", "school")
    config = _kt_board(tmp_path, model_mirror, monkeypatch, f'[kt]\npackage_dir = "{school}"\n')
    seen = (tmp_path / "state" / KT_PACKAGE_DIR_SEEN).read_bytes()
    _run(["engines", "build"])
    assert str(school / "kt_step.onnx") in _built_from(tmp_path)
    # the command set nothing aside and wrote no seen file: the daemon still decides the same at its start
    assert store.current_version("kt") == "2.0"
    assert (tmp_path / "state" / KT_PACKAGE_DIR_SEEN).read_bytes() == seen
    assert daemon_runs() == str(school / "kt_step.onnx")


def test_verify_and_list_check_the_kt_package_the_daemon_runs_and_name_a_damaged_pinned_file(
    tmp_path, model_mirror, monkeypatch, capsys
):
    # A review: with kt.package_dir naming a school package whose step model was damaged, verify checked the
    # shipped model and said OK; list said "present" for a cached model that no longer matched its pin.
    school = _kt_package(tmp_path / "school-kt", "school")
    (school / "kt_step.onnx").write_bytes((school / "kt_step.onnx").read_bytes()[:5000])
    _kt_board(tmp_path, model_mirror, monkeypatch, f'[kt]\npackage_dir = "{school}"\n')
    assert _run(["engines", "verify"]) == 1
    err = capsys.readouterr().err
    assert f"kt-step: FAILED: ONNX Runtime could not read {school / 'kt_step.onnx'}" in err
    assert _run(["engines", "fetch", "yunet"]) == 0
    cached = next((tmp_path / "cache" / "models").rglob("yunet_s*.onnx"))
    cached.write_bytes(cached.read_bytes()[:-1] + b"\0")
    assert _run(["engines", "list", "kt-step", "yunet"]) == 0
    listed = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines()[-2:])
    assert str(school / "kt_step.onnx") in listed["kt-step"]
    assert "present (sha256 mismatch)" in listed["yunet"]


@pytest.mark.parametrize("timeout", ["-1", "nan", "0", "inf"])
def test_a_fetch_timeout_that_is_no_number_of_seconds_is_a_usage_error_not_a_traceback(
    common, timeout, capsys
):
    with pytest.raises(SystemExit) as exit_:
        _run(["engines", "fetch", "yunet", "--timeout", timeout, *common])
    assert exit_.value.code == 2
    assert f"argument --timeout: '{timeout}': give seconds above 0" in capsys.readouterr().err
