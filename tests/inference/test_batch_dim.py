"""The dynamic-batch copy of a fixed-batch export: the wire-format edit, and the cached derived file."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.batch_dim import make_batch_dynamic
from edge_agent.inference.conv_fold import fold_input_depthwise_convs
from edge_agent.inference.fetch import MIRROR_ENV, derived_model_path, engine_model, fetch_model
from edge_agent.inference.onnx_wire import encode_fields, parse_fields
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

from .helpers import MANIFESTS, paths_for

FSANET = MANIFESTS["fsanet-1x1"]


@pytest.fixture(scope="module")
def export(model_mirror) -> bytes:
    return (model_mirror / FSANET.source.mirror_path).read_bytes()


def test_parsing_and_encoding_round_trip_the_file_byte_for_byte(export):
    assert encode_fields(parse_fields(export)) == export


def test_the_copy_is_what_the_onnx_package_writes_with_the_weights_untouched(export):
    derived = onnx.load_from_string(make_batch_dynamic(export))
    reference = onnx.load_from_string(export)
    for tensor in (reference.graph.input[0], reference.graph.output[0]):
        tensor.type.tensor_type.shape.dim[0].dim_param = "batch"
    assert derived.SerializeToString() == reference.SerializeToString()
    onnx.checker.check_model(derived)
    original = onnx.load_from_string(export).graph.initializer
    assert [t.SerializeToString() for t in derived.graph.initializer] == [
        t.SerializeToString() for t in original
    ]


def test_making_it_dynamic_twice_changes_nothing(export):
    once = make_batch_dynamic(export)
    assert make_batch_dynamic(once) == once


def test_initializers_listed_as_inputs_keep_their_shape():
    weight = onnx.numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4]),
            onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = onnx.load_from_string(make_batch_dynamic(onnx.helper.make_model(graph).SerializeToString()))
    dims = [i.type.tensor_type.shape.dim[0] for i in (*model.graph.input, *model.graph.output)]
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "batch"]


def test_a_batch_other_than_one_and_a_broken_file_are_model_errors(export):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 4])],
    )
    with pytest.raises(ModelError, match="batch dimension is 8"):
        make_batch_dynamic(onnx.helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelError, match="not a well-formed ONNX model"):
        make_batch_dynamic(export[: len(export) // 2])


def test_engines_get_the_derived_copy_and_a_damaged_copy_is_rewritten(tmp_path, model_mirror, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    paths = paths_for(tmp_path, model_mirror)
    path = engine_model(FSANET, paths)

    def derived() -> bytes:
        return fold_input_depthwise_convs(make_batch_dynamic(fetch_model(FSANET, paths).read_bytes()))

    assert path == derived_model_path(FSANET, paths) and path.name.endswith(".derived.onnx")
    assert path.read_bytes() == derived()
    assert OnnxRuntimeEngine(path).inputs[0].shape == (-1, 3, 64, 64)
    path.write_bytes(b"damaged")
    assert engine_model(FSANET, paths).read_bytes() == derived()
    plain = dataclasses.replace(
        FSANET.source, dynamic_batch=False, fold_input_depthwise=False
    )
    assert engine_model(dataclasses.replace(FSANET, source=plain), paths) == fetch_model(FSANET, paths)
