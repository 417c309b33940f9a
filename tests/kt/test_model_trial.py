"""A new KT model is tried on one answer before it replaces the running one: real ONNX models that load
and have the right inputs and outputs but answer wrongly are refused with what is wrong."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edge_agent.errors import ModelError
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
from edge_agent.kt.component import check_engine
from edge_agent.kt.package import KTPackage, load_package
from edge_agent.kt.updates import trial_inference


def _step_model(
    path: Path,
    hidden: int,
    skills: int,
    probs_value: float,
    state_scale: float = 1.0,
    state_shift: float = 0.0,
) -> Path:
    """skill, correct, h, c -> probs (every entry ``probs_value``, NaN where h is not finite),
    h_out = h * state_scale + state_shift, c_out = c * state_scale + state_shift."""
    n = "N"
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["h", "zero", "width", "one"], ["cols"]),  # [N, skills]
            helper.make_node("Mul", ["cols", "nothing"], ["zeros"]),
            helper.make_node("Add", ["zeros", "value"], ["probs"]),
            helper.make_node("Mul", ["h", "scale"], ["h_scaled"]),
            helper.make_node("Add", ["h_scaled", "shift"], ["h_out"]),
            helper.make_node("Mul", ["c", "scale"], ["c_scaled"]),
            helper.make_node("Add", ["c_scaled", "shift"], ["c_out"]),
        ],
        "bad_kt_step",
        [
            helper.make_tensor_value_info("skill", TensorProto.INT64, [n]),
            helper.make_tensor_value_info("correct", TensorProto.INT64, [n]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [n, hidden]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, hidden]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [n, skills]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [n, hidden]),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [n, hidden]),
        ],
        initializer=[
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("width", TensorProto.INT64, [1], [skills]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
            helper.make_tensor("nothing", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("value", TensorProto.FLOAT, [], [probs_value]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [state_scale]),
            helper.make_tensor("shift", TensorProto.FLOAT, [], [state_shift]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def package() -> KTPackage:
    return load_package()


def test_a_model_that_answers_in_range_passes_the_trial(package: KTPackage, tmp_path: Path) -> None:
    engine = OnnxRuntimeEngine(_step_model(tmp_path / "ok.onnx", package.hidden, len(package.skills), 0.5))
    check_engine(engine, package)
    trial_inference(engine, package)


@pytest.mark.parametrize(
    ("skills_delta", "value", "says"),
    [
        (0, 1.5, "probabilities outside \\[0, 1\\]"),
        (0, float("nan"), "probabilities outside \\[0, 1\\]"),
    ],
    ids=["above-one", "nan"],
)
def test_a_model_that_loads_but_answers_wrongly_is_refused_by_its_trial_answer(
    package: KTPackage, tmp_path: Path, skills_delta: int, value: float, says: str
) -> None:
    assert (package.hidden, len(package.skills)) == (64, 30)  # as the messages above say
    path = _step_model(tmp_path / "bad.onnx", package.hidden, len(package.skills) + skills_delta, value)
    engine = OnnxRuntimeEngine(path)
    check_engine(engine, package)  # names and state size are right: only the trial can tell
    with pytest.raises(ModelError, match=says):
        trial_inference(engine, package)


def test_a_model_for_other_skills_than_the_package_lists_is_refused_before_any_answer(
    package: KTPackage, tmp_path: Path
) -> None:
    # Review: a package whose kt_step.onnx was trained on 5 skills while skills.json lists 7 loaded at start
    # (where no trial answer is made) and then failed every answer with a 503.
    short = _step_model(tmp_path / "short.onnx", package.hidden, len(package.skills) - 1, 0.5)
    engine = OnnxRuntimeEngine(short)
    with pytest.raises(ModelError, match=r"answers for 29 skills, the package's skills\.json lists 30"):
        check_engine(engine, package)
    # and the trial answer, which a model update also makes, says the same in its own words
    with pytest.raises(ModelError, match=r"gave probs \(1, 29\) and state \(1, 64\); expected \(1, 30\)"):
        trial_inference(engine, package)


@pytest.mark.parametrize(
    ("scale", "shift", "says"),
    [
        (1.0, float("nan"), "non-finite state \\(h_out/c_out\\) on a first trial answer"),
        # finite after one step from the empty state, infinite after the second: only a second step shows it
        (1e30, 1e30, "on a second trial answer"),
    ],
    ids=["nan-state", "state-overflows-on-the-second-step"],
)
def test_a_step_model_whose_state_is_not_finite_is_refused_by_its_trial_answers(
    package: KTPackage, tmp_path: Path, scale: float, shift: float, says: str
) -> None:
    # A review: a signed package whose step model returned a NaN state passed the trial (which checked only
    # the probabilities), was swapped in, and then every student's second answer failed with a 503.
    path = _step_model(tmp_path / "nan.onnx", package.hidden, len(package.skills), 0.5, scale, shift)
    engine = OnnxRuntimeEngine(path)
    check_engine(engine, package)
    with pytest.raises(ModelError, match=says):
        trial_inference(engine, package)
