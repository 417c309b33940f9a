from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.manifest import load_manifest, load_manifests, parse_manifest, resolve_profiles

from .helpers import MANIFESTS

GOOD = {
    "model": {"name": "m", "role": "pose"},
    "source": {"url": "https://example.org/m.onnx", "sha256": "a" * 64, "mirror_path": "m/m.onnx"},
    "inputs": [{"name": "input", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]}],
    "build": {"precisions": ["fp32", "int8"], "default_precision": "fp32"},
    "int8": {"kind": "face_crops", "samples": 8},
}


def _with(path: tuple[str, ...], value: object) -> dict:
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key] if not isinstance(node, list) else node[int(key)]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_repository_manifests_parse_and_cover_every_model():
    assert {"yunet", "yunet-2023mar", "fsanet-1x1", "fsanet-var", "kt-step"} <= set(MANIFESTS)
    yunet = MANIFESTS["yunet"]
    assert yunet.source.sha256 == "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3"
    assert yunet.inputs[0].min[2:] < yunet.inputs[0].max[2:]
    assert MANIFESTS["yunet-2023mar"].source.url and MANIFESTS["yunet-2023mar"].source.sha256 == (
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    )
    kt = MANIFESTS["kt-step"]
    assert kt.source.repo_path is not None and kt.source.repo_path.name == "kt_step.onnx"
    assert kt.dynamic is not None


def test_good_manifest_parses():
    manifest = parse_manifest(GOOD, "m.toml", Path("/x"))
    assert manifest.calibration is not None and manifest.calibration.samples == 8


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("model", "name"), "Bad Name!", "model.name"),
        (("model", "role"), "camera", "model.role"),
        (("model", "colour"), "red", "unknown key"),
        (("source", "sha256"), "xyz", "64 lowercase hex"),
        (("source", "sha256"), None, "pinned by its sha256"),
        (("source", "url"), "http://example.org/m.onnx", "https://"),
        (("source", "repo_path"), "m.onnx", "exactly one of"),
        (("source", "mirror_path"), "../../etc/passwd", "inside the mirror"),
        (("source", "dynamic_batch"), "yes", "true or false"),
        (("source", "fold_input_depthwise"), 1, "true or false"),
        (("source", "merge_sibling_convs"), "true", "true or false"),
        (("inputs",), {"name": "x"}, "array of tables"),
        (("inputs", "0", "min"), [1, 3, 128, 64], "min <= opt <= max"),
        (("inputs", "0", "max"), [1, 3, 64], "same number of dimensions"),
        (("inputs", "0", "opt"), [1, 3, 64, -1], "positive integers"),
        (("build", "precisions"), ["fp8"], "build.precisions"),
        (("build", "default_precision"), "fp16", "default_precision"),
        (("int8",), None, "which data calibrates"),
        (("int8", "kind"), "noise", "int8.kind"),
        (("build",), None, "missing table"),
    ],
)
def test_malformed_manifest_is_refused_with_the_key(path, value, message):
    with pytest.raises(ModelError, match=message) as info:
        parse_manifest(_with(path, value), "m.toml", Path("/x"))
    assert "m.toml" in str(info.value)


def test_invalid_toml_and_duplicate_names_are_reported(tmp_path):
    (tmp_path / "broken.toml").write_text("[model\nname = 1")
    with pytest.raises(ModelError, match="not valid TOML"):
        load_manifest(tmp_path / "broken.toml")
    (tmp_path / "broken.toml").unlink()
    text = (Path(__file__).parents[2] / "engines" / "fsanet-1x1.toml").read_text()
    (tmp_path / "a.toml").write_text(text)
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(ModelError, match="used twice"):
        load_manifests(tmp_path)


def test_fsanet_engines_run_a_dynamic_batch_copy_of_the_fixed_batch_export():
    for name in ("fsanet-1x1", "fsanet-var"):
        fsanet = MANIFESTS[name]
        assert fsanet.source.dynamic_batch and fsanet.source.fold_input_depthwise
        assert resolve_profiles(fsanet, {"input": (-1, 3, 64, 64)})[0].max == (8, 3, 64, 64)
        with pytest.raises(ModelError, match="dimension 0 is fixed at 1"):
            resolve_profiles(fsanet, {"input": (1, 3, 64, 64)})  # the export itself does not fit
    assert MANIFESTS["yunet"].source.merge_sibling_convs and not MANIFESTS["yunet"].source.dynamic_batch


def test_dynamic_range_fills_every_dynamic_dimension():
    profiles = resolve_profiles(MANIFESTS["kt-step"], {"skill": (-1,), "h": (-1, 64)})
    assert profiles[0].min == (1,) and profiles[0].max == (1024,)
    assert profiles[1].opt == (16, 64)


def test_profile_must_agree_with_the_onnx_model():
    fsanet = MANIFESTS["fsanet-1x1"]
    with pytest.raises(ModelError, match="fixed at 32"):
        resolve_profiles(fsanet, {"input": (-1, 3, 32, 32)})
    with pytest.raises(ModelError, match="no \\[\\[inputs\\]\\] entry"):
        resolve_profiles(fsanet, {"input": (-1, 3, 64, 64), "extra": (1,)})
    with pytest.raises(ModelError, match="not inputs of the ONNX"):
        resolve_profiles(fsanet, {})


def test_an_install_without_engines_beside_the_package_says_to_install_from_the_checkout(
    tmp_path: Path,
) -> None:
    # A wheel (or `pip install .`) holds edge_agent/ but not engines/: the daemon and the demo ended in
    # "no engine manifest for ['kt-step'] in .../site-packages/engines; reinstall edge-agent" (a review).
    import shutil
    import subprocess
    import sys

    shutil.copytree(Path(__file__).resolve().parents[2] / "edge_agent", tmp_path / "edge_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    program = ("from edge_agent.inference.manifest import load_manifests\n"
               "try:\n    load_manifests()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False, timeout=60)
    assert done.stdout.startswith("ModelError") and "pip install -e <checkout>" in done.stdout, done.stderr
