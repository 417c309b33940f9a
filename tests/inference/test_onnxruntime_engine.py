"""The ONNX Runtime engine leaves the checking of feeds to ONNX Runtime and diagnoses only what it refuses:
whatever it refuses must still come back as this project's errors, and the engine must go on working."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import EngineError, EngineInputError
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

STEP = Path(__file__).resolve().parents[2] / "engines" / "kt-default" / "kt_step.onnx"


def _feeds(batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "skill": np.arange(batch, dtype=np.int64),
        "correct": np.ones(batch, np.int64),
        "h": np.zeros((batch, 64), np.float32),
        "c": np.zeros((batch, 64), np.float32),
    }


@pytest.fixture(scope="module")
def engine() -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(STEP)


def test_refused_feeds_are_engine_input_errors_and_the_engine_goes_on(engine):
    want = engine.infer(_feeds())
    for name, bad, match in [
        ("h", np.zeros((2, 63), np.float32), "'h' has shape"),
        ("c", np.zeros(64, np.float32), "'c' has shape"),
        ("skill", np.array(1, np.int64), "'skill' has shape"),  # 0-d
    ]:
        with pytest.raises(EngineInputError, match=match):
            engine.infer(_feeds() | {name: bad})
    feeds = _feeds()
    del feeds["correct"]
    with pytest.raises(EngineInputError, match="missing input 'correct'"):
        engine.infer(feeds)
    got = engine.infer(_feeds() | {"extra": np.zeros(3)})  # inputs the model lacks are left out
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def test_float64_and_byte_swapped_state_is_converted_and_gives_the_float32_results(engine):
    rng = np.random.default_rng(1)
    h, c = (rng.standard_normal((2, 64)).astype(np.float32) for _ in range(2))
    want = engine.infer(_feeds() | {"h": h, "c": c})
    got = engine.infer(_feeds() | {"h": h.astype(np.float64), "c": c.astype(np.float64)})
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
    # A second review: ONNX Runtime ran big-endian floats as if native (wrong numbers, no error)
    got = engine.infer(_feeds() | {"h": h.astype(">f4"), "c": c.astype(">f4")})
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def test_a_skill_beyond_the_model_is_an_engine_error_naming_the_model(engine):
    with pytest.raises(EngineError, match="kt_step: ONNX Runtime failed to run") as caught:
        engine.infer(_feeds() | {"skill": np.array([0, 999], np.int64)})
    assert not isinstance(caught.value, EngineInputError)
    assert engine.infer(_feeds())["probs"].shape == (2, 30)


def test_the_engine_gives_what_onnx_runtimes_public_run_gives(engine):
    # On the CPU the engine calls the session's own run (InferenceSession._sess.run, 1.9 µs less a call)
    import onnxruntime as ort

    feeds = _feeds(5) | {"h": np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)}
    public = ort.InferenceSession(str(STEP), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in public.get_outputs()], public.run(None, feeds), strict=True))
    got = engine.infer(feeds)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7)  # its thread count may differ


def test_a_closed_engine_refuses_to_run() -> None:
    # A third review: the session's own run, kept bound, ran on after close() and kept its memory
    engine = OnnxRuntimeEngine(STEP)
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.infer(_feeds())
