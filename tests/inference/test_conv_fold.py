"""Folding FSA-Net's depthwise input convolution into the 1x1 after it: same poses, fewer nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edge_agent.errors import ModelError
from edge_agent.inference.batch_dim import make_batch_dynamic
from edge_agent.inference.conv_fold import fold_input_depthwise_convs
from edge_agent.inference.quantize import calibration_inputs

from .helpers import MANIFESTS


def _run(model: bytes, batch: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]


@pytest.mark.parametrize("name", ["fsanet-1x1", "fsanet-var"])
def test_folded_fsanet_gives_the_same_poses_on_real_face_crops(name, model_mirror, faces_dir):
    manifest = MANIFESTS[name]
    export = make_batch_dynamic((model_mirror / manifest.source.mirror_path).read_bytes())
    folded = fold_input_depthwise_convs(export)
    crops = np.concatenate([f["input"] for f in calibration_inputs(manifest, manifest.inputs, faces_dir, 64)])
    assert len(crops) >= 40  # the 43 labelled faces of voc_dlib and the photos' centre squares

    assert np.abs(_run(folded, crops) - _run(export, crops)).max() < 1e-3  # degrees

    model = onnx.load_from_string(folded)
    onnx.checker.check_model(model, full_check=True)
    on_input = [n for n in model.graph.node if "input" in n.input]
    attributes = [(n.op_type, {a.name: list(a.ints) for a in n.attribute}) for n in on_input]
    assert [(op, a["kernel_shape"], a["pads"]) for op, a in attributes] == [("Conv", [3, 3], [1] * 4)] * 2
    assert all("group" not in a for _, a in attributes)  # dense: 3 -> 16 channels
    assert len(model.graph.node) == len(onnx.load_from_string(export).graph.node) - 2
    assert "depthwise" not in " ".join(t.name for t in model.graph.initializer if "conv0" in t.name)
    assert fold_input_depthwise_convs(folded) == folded  # nothing left to fold


def _separable(*, reader_of_depthwise: str | None = None, group: int = 3) -> bytes:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "dw", "db"], ["d"], group=group, kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["d", "pw", "pb"], ["y"], kernel_shape=[1, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])]
    if reader_of_depthwise:
        nodes.append(helper.make_node("Relu", ["d"], [reader_of_depthwise]))
        outputs.append(helper.make_tensor_value_info(reader_of_depthwise, onnx.TensorProto.FLOAT, None))
    weights = {
        "dw": rng.normal(size=(3, 3 // group, 3, 3)),
        "db": rng.normal(size=3),
        "pw": rng.normal(size=(4, 3, 1, 1)),
        "pb": rng.normal(size=4),
    }
    graph = helper.make_graph(
        nodes,
        "separable",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        outputs,
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()],
    )
    # IR 8: older ONNX Runtime (the Python 3.10 run) refuses the newest IR version onnx writes by default
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def test_a_small_separable_pair_folds_into_one_conv_with_the_same_output_at_the_borders():
    model = _separable()
    folded = fold_input_depthwise_convs(model)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(folded).run(None, {"x": x})[0]
    want = ort.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)  # every pixel, the zero-padded edges included
    assert [n.op_type for n in onnx.load_from_string(folded).graph.node] == ["Conv"]


@pytest.mark.parametrize(
    "model",
    [
        _separable(reader_of_depthwise="z"),  # the depthwise output is read elsewhere too
        _separable(group=1),  # a dense conv on the input already
    ],
    ids=["depthwise-output-shared", "not-depthwise"],
)
def test_models_without_the_exact_pattern_come_back_byte_for_byte(model):
    assert fold_input_depthwise_convs(model) == model


def test_a_broken_file_is_a_model_error(model_mirror):
    export = (model_mirror / MANIFESTS["fsanet-1x1"].source.mirror_path).read_bytes()
    with pytest.raises(ModelError, match="not a well-formed ONNX model"):
        fold_input_depthwise_convs(export[: len(export) // 2], where="model fsanet-1x1")
