"""The ONNX Runtime engine leaves the checking of feeds to ONNX Runtime and diagnoses only what it refuses:
whatever it refuses must still come back as this project's errors, and the engine must go on working."""

from __future__ import annotations

import threading
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


def _random_feeds(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    return {
        "skill": rng.integers(0, 30, batch, dtype=np.int64),
        "correct": rng.integers(0, 2, batch, dtype=np.int64),
        "h": rng.standard_normal((batch, 64)).astype(np.float32),
        "c": rng.standard_normal((batch, 64)).astype(np.float32),
    }


def test_small_feeds_run_through_kept_buffers_and_give_the_public_runs_results_call_after_call() -> None:
    # Small feeds are copied into buffers bound to the session once (2 µs less a call at batch 1): every
    # call must still answer for its own feeds, and an answer given must not change with the next call.
    import onnxruntime as ort

    public = ort.InferenceSession(str(STEP), providers=["CPUExecutionProvider"])
    engine = OnnxRuntimeEngine(STEP)
    rng = np.random.default_rng(7)
    kept = []
    for batch in [1, 3, 1, 31, 3, 1, 64, 1] * 3:
        feeds = _random_feeds(rng, batch)
        got = engine.infer(feeds)
        want = dict(zip([o.name for o in public.get_outputs()], public.run(None, feeds), strict=True))
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=f"batch {batch} {key}")
        kept.append((got, {key: value.copy() for key, value in got.items()}))
    for got, copy in kept:
        for key, value in copy.items():
            np.testing.assert_array_equal(got[key], value)
    # bound: the small batches; not bound: batch 64 (33 KiB of feeds, where the copy costs more than it saves)
    assert sorted(engine._bindings) == [(1,), (3,), (31,)]


def test_at_a_bound_shape_converted_refused_and_failing_feeds_behave_as_unbound() -> None:
    engine = OnnxRuntimeEngine(STEP)
    rng = np.random.default_rng(8)
    feeds = _random_feeds(rng, 2)
    want = engine.infer(feeds)
    assert (2,) in engine._bindings
    converted = [
        feeds | {"h": feeds["h"].astype(np.float64), "c": feeds["c"].astype(">f4")},
        feeds | {"skill": feeds["skill"].astype(np.int32)},
        feeds | {"correct": feeds["correct"].tolist()},  # a list: not an array
        {name: feeds[name] for name in ("c", "h", "correct", "skill")},  # another order
        feeds | {"extra": np.zeros(2)},
    ]
    for other in converted:
        got = engine.infer(other)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value)
    with pytest.raises(EngineInputError, match="'h' has shape"):
        engine.infer(feeds | {"h": np.zeros((2, 1), np.float32)})  # would broadcast into the (2, 64) buffer
    with pytest.raises(EngineInputError, match="missing input 'c'"):
        engine.infer({name: feeds[name] for name in ("skill", "correct", "h")})
    with pytest.raises(EngineError, match="ONNX Runtime failed to run"):
        engine.infer(feeds | {"skill": np.array([0, 999], np.int64)})
    got = engine.infer(feeds)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def test_one_engine_shared_by_threads_without_a_guard_gives_each_call_its_own_results() -> None:
    # GuardedEngine serialises calls in the daemon; the engine alone must be safe too: a call that finds
    # the buffers busy takes the unbound run
    engine = OnnxRuntimeEngine(STEP)
    rng = np.random.default_rng(9)
    inputs = [_random_feeds(rng, 1 + i % 3) for i in range(60)]
    expected = [engine.infer(f) for f in inputs]
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def worker(first: int) -> None:
        try:
            for _ in range(50):
                for i in range(first, 60, 4):
                    results[i] = engine.infer(inputs[i])
                    for key, value in expected[i].items():
                        np.testing.assert_array_equal(results[i][key], value)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    assert len(results) == 60


def test_an_engine_keeps_buffers_for_a_few_shapes_only() -> None:
    engine = OnnxRuntimeEngine(STEP)
    rng = np.random.default_rng(10)
    for batch in range(1, 21):
        assert engine.infer(_random_feeds(rng, batch))["probs"].shape == (batch, 30)
    assert sorted(engine._bindings) == [(batch,) for batch in range(1, 9)]
