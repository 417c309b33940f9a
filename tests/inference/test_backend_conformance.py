"""Every backend present gives the ONNX reference's outputs over the whole profile, refuses inputs outside
it with EngineInputError, and is safe to share between threads.

Concurrency contract under test: one GuardedEngine may be shared by threads; its lock serialises calls
(a TensorRT execution context is single-threaded). Workers wanting parallel inference load one engine each.

ONNX Runtime runs here; TensorRT runs wherever ``open_tensorrt()`` succeeds (the test is skipped with the
reason otherwise). The reference is ONNX Runtime with all graph optimisations off. TensorRT is checked at
fp32 and, for the models that ship fp16 (``default_precision`` in engines/*.toml), at fp16 too: what a board
runs. ONNX Runtime runs fp16 as fp32, so it has no fp16 half.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.errors import EdgeAgentError, EngineInputError
from edge_agent.inference.fetch import engine_model
from edge_agent.inference.manifest import InputProfile
from edge_agent.inference.select import LoadedEngine, load_engine

from .helpers import MANIFESTS, paths_for, settings

# (atol, rtol) per backend at fp32: TensorRT picks different kernels, so it gets a looser bound.
TOLERANCE = {"onnxruntime": (1e-4, 1e-4), "tensorrt": (2e-3, 2e-3)}
# TensorRT fp16 (half-precision weights and activations, about 3 significant digits): not yet measured on a
# board (TensorRT has never run for this project); widen it only from a measured error, and say so.
TOLERANCE_FP16 = (5e-2, 5e-2)
MODELS = ["fsanet-1x1", "yunet", "kt-step"]
FP16_MODELS = [name for name in MODELS if MANIFESTS[name].default_precision == "fp16"]


@functools.cache
def _tensorrt_reason() -> str | None:
    try:
        from edge_agent.inference.tensorrt_backend import open_tensorrt

        open_tensorrt()
    except EdgeAgentError as exc:
        return f"TensorRT backend skipped: {exc}"
    return None


# A test's first call builds its TensorRT plan (YuNet's profile reaches 1088x1920): minutes on a Jetson
# (never timed here), more than the 300 s every test gets (pyproject.toml)
TENSORRT = pytest.param("tensorrt", marks=pytest.mark.timeout(1800))


@pytest.fixture(scope="module", params=["onnxruntime", TENSORRT])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "tensorrt":
        reason = _tensorrt_reason()
        if reason:
            pytest.skip(reason)
    return str(request.param)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


def _load(
    name: str, backend: str, cache: Path, mirror: Path, precision: str = "fp32"
) -> tuple[LoadedEngine, Path]:
    manifest = MANIFESTS[name]
    if manifest.source.repo_path is not None and not manifest.source.repo_path.is_file():
        pytest.skip(f"{manifest.source.repo_path} not committed yet (the KT helper writes it)")
    paths = paths_for(cache, mirror)
    loaded = load_engine(manifest, settings(backend), paths, precision=precision)
    assert loaded.backend == backend, loaded.fallback
    assert loaded.precision == precision and loaded.fallback is None, loaded.fallback
    return loaded, engine_model(manifest, paths)  # what the engine was built from


def _inputs(name: str, profile: InputProfile, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name == "kt-step" and profile.name in ("skill", "correct"):
        high = 2 if profile.name == "correct" else 30
        return rng.integers(0, high, size=shape, dtype=np.int64)
    if name == "yunet":
        return rng.uniform(0, 255, size=shape).astype(np.float32)
    return rng.standard_normal(size=shape).astype(np.float32)


def _feeds(name: str, profiles: tuple[InputProfile, ...], which: str, rng: np.random.Generator) -> dict:
    return {p.name: _inputs(name, p, getattr(p, which), rng) for p in profiles}


def _reference(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _assert_matches_reference(name: str, loaded: LoadedEngine, path: Path, atol: float, rtol: float) -> None:
    reference = _reference(path)
    rng = np.random.default_rng(7)
    for which in ("min", "opt", "max"):
        feeds = _feeds(name, loaded.engine.profiles, which, rng)
        got = loaded.engine.infer(feeds)
        want = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, feeds), strict=True))
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key].shape == value.shape, (which, key)
            np.testing.assert_allclose(got[key], value, atol=atol, rtol=rtol, err_msg=f"{name} {which} {key}")


@pytest.mark.parametrize("name", MODELS)
def test_outputs_match_the_onnx_reference_at_min_opt_and_max(name, backend, cache, model_mirror):
    loaded, path = _load(name, backend, cache, model_mirror)
    _assert_matches_reference(name, loaded, path, *TOLERANCE[backend])


@pytest.mark.timeout(1800)  # builds its own fp16 plan (see TENSORRT)
@pytest.mark.parametrize("name", FP16_MODELS)
def test_tensorrt_fp16_outputs_match_the_onnx_reference_at_min_opt_and_max(name, cache, model_mirror):
    """The precision fsanet and yunet ship at: a board with TensorRT checks what it will run."""
    reason = _tensorrt_reason()
    if reason:
        pytest.skip(reason)
    loaded, path = _load(name, "tensorrt", cache, model_mirror, precision="fp16")
    _assert_matches_reference(name, loaded, path, *TOLERANCE_FP16)


@pytest.mark.parametrize("name", MODELS)
def test_input_outside_the_profile_is_a_clear_engine_input_error(name, backend, cache, model_mirror):
    loaded, _ = _load(name, backend, cache, model_mirror)
    rng = np.random.default_rng(1)
    profiles = loaded.engine.profiles
    for profile in profiles:
        too_big = tuple(d + 1 if i == len(profile.max) - 1 else d for i, d in enumerate(profile.max))
        for shape in (too_big, profile.max[:-1]):
            feeds = _feeds(name, profiles, "opt", rng)
            feeds[profile.name] = _inputs(name, profile, shape, rng)
            with pytest.raises(EngineInputError, match=profile.name):
                loaded.engine.infer(feeds)
    with pytest.raises(EngineInputError, match="missing input"):
        loaded.engine.infer({})


@pytest.mark.parametrize("name", MODELS)
def test_values_an_input_cannot_hold_are_a_clear_engine_input_error(name, backend, cache, model_mirror):
    # A review: the backends cast unsafely: skill ids 0.9 and 1.7 ran as 0 and 1, a complex state lost its
    # imaginary part, text ended in a ValueError
    loaded, _ = _load(name, backend, cache, model_mirror)
    rng = np.random.default_rng(2)
    for profile in loaded.engine.profiles:
        feeds = _feeds(name, loaded.engine.profiles, "opt", rng)
        good = feeds[profile.name]
        wrong = good + 0.5 if good.dtype.kind in "iu" else good.astype(np.complex64) + 1j
        with pytest.raises(EngineInputError, match=rf"input '{profile.name}' is (float64|complex64), which"):
            loaded.engine.infer({**feeds, profile.name: wrong})
        wider = good.astype(np.float64) if good.dtype.kind == "f" else good  # float64 to float32: taken
        loaded.engine.infer({**feeds, profile.name: wider})


def test_yunet_accepts_every_frame_size_of_the_dynamic_range(backend, cache, model_mirror):
    loaded, _ = _load("yunet", backend, cache, model_mirror)
    for height, width in ((96, 96), (480, 640), (736, 1280), (1088, 1920), (96, 1920)):
        out = loaded.engine.infer({"input": np.zeros((1, 3, height, width), np.float32)})
        assert out["cls_8"].shape == (1, (height // 8) * (width // 8), 1)
    with pytest.raises(EngineInputError, match="outside the engine profile"):
        loaded.engine.infer({"input": np.zeros((1, 3, 64, 640), np.float32)})


@pytest.mark.parametrize("name", ["fsanet-1x1", "kt-step"])
def test_one_engine_shared_by_threads_gives_the_sequential_results(name, backend, cache, model_mirror):
    loaded, _ = _load(name, backend, cache, model_mirror)
    rng = np.random.default_rng(3)
    inputs = [_feeds(name, loaded.engine.profiles, "opt", rng) for _ in range(24)]
    expected = [loaded.engine.infer(f) for f in inputs]
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def worker(indices: range) -> None:
        try:
            for i in indices:
                results[i] = loaded.engine.infer(inputs[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(range(k, 24, 4),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    for i, want in enumerate(expected):
        for key, value in want.items():
            np.testing.assert_array_equal(results[i][key], value)


@pytest.mark.parametrize("name", ["fsanet-1x1", "kt-step"])
def test_strided_views_and_other_dtypes_give_the_contiguous_results(name, backend, cache, model_mirror):
    """Callers pass slices of larger arrays (every other row, a column window) and ints where floats are
    expected; the backend copies or converts them itself and answers as for a plain contiguous array."""
    loaded, _ = _load(name, backend, cache, model_mirror)
    feeds = _feeds(name, loaded.engine.profiles, "opt", np.random.default_rng(5))
    want = loaded.engine.infer(feeds)
    strided = {}
    for key, value in feeds.items():
        doubled = np.repeat(value, 2, axis=-1)  # every other element of the last axis is the original
        strided[key] = doubled[..., ::2]
        assert not strided[key].flags.c_contiguous and np.array_equal(strided[key], value)
    got = loaded.engine.infer(strided)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key} strided")
    if name == "kt-step":  # int32 ids and a list of ints: converted to the model's int64
        converted = dict(feeds, skill=feeds["skill"].astype(np.int32), correct=feeds["correct"].tolist())
        got = loaded.engine.infer(converted)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key} converted")
