from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import EngineError, EngineInputError, ModelError
from edge_agent.inference import tensorrt_backend
from edge_agent.inference.engine_cache import BuildTarget
from edge_agent.inference.engine_set import EngineSet
from edge_agent.inference.select import load_engine, precision_for, qdq_model_path
from edge_agent.inference.tensorrt_backend import TensorRTAdapter
from edge_agent.inference.tensorrt_backend import trt as real_trt
from edge_agent.telemetry import metrics
from edge_agent.telemetry.metrics import sample
from tests.ext4 import ext4_unavailable, failing_ext4
from tests.inference.fake_tensorrt import FakeTensorRT

from .helpers import MANIFESTS, paths_for, settings

REPO = Path(__file__).resolve().parents[2]
FSANET = MANIFESTS["fsanet-1x1"]
CROP = np.zeros((1, 3, 64, 64), np.float32)


def _failures(engine: str, reason: str) -> float:
    return sample(
        "edge_engine_load_failures_total", {"engine": engine, "backend": "tensorrt", "reason": reason}
    )


@pytest.mark.skipif(
    real_trt is not None, reason="TensorRT imports here; this test covers machines without it"
)
def test_tensorrt_not_importable_falls_back_to_onnxruntime_and_counts(tmp_path, model_mirror):
    before = _failures(FSANET.name, "tensorrt_unavailable")
    loaded = load_engine(FSANET, settings("tensorrt"), paths_for(tmp_path, model_mirror))
    assert loaded.backend == "onnxruntime" and loaded.precision == "fp32"
    assert loaded.fallback is not None and "TensorRT unavailable" in loaded.fallback
    assert _failures(FSANET.name, "tensorrt_unavailable") == before + 1
    assert loaded.engine.infer({"input": CROP})["output"].shape == (1, 3)


@pytest.mark.skipif(real_trt is not None, reason="TensorRT imports here")
def test_auto_without_tensorrt_is_not_counted_as_a_failure(tmp_path, model_mirror):
    before = _failures(FSANET.name, "tensorrt_unavailable")
    loaded = load_engine(FSANET, settings("auto"), paths_for(tmp_path, model_mirror))
    assert loaded.backend == "onnxruntime"
    assert "pose fsanet-1x1: onnxruntime fp32 (TensorRT unavailable" in loaded.describe()
    assert _failures(FSANET.name, "tensorrt_unavailable") == before


def test_onnxruntime_backend_never_tries_tensorrt(tmp_path, model_mirror):
    port = FakeTensorRT()
    loaded = load_engine(
        FSANET,
        settings("onnxruntime", pose_precision="fp32"),
        paths_for(tmp_path, model_mirror),
        tensorrt=port,
    )
    assert loaded.backend == "onnxruntime" and loaded.fallback is None and not port.builds


def test_plan_is_built_once_then_loaded_from_the_cache(tmp_path, model_mirror):
    port = FakeTensorRT()
    paths = paths_for(tmp_path, model_mirror)
    first = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
    second = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
    assert first.backend == second.backend == "fake-tensorrt" and first.fallback is None
    assert len(port.builds) == 1 and port.loads == 2


def test_plan_that_fails_to_deserialize_is_a_counted_miss_and_rebuilt(tmp_path, model_mirror):
    port = FakeTensorRT()
    paths = paths_for(tmp_path, model_mirror)
    load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
    plan_file = next((tmp_path / "engines").glob("fsanet-1x1-fp16-*.plan"))
    # Intact header, payload TensorRT cannot read: only deserialization finds out.
    header = plan_file.read_bytes()[: 8 + 64]
    payload = b"garbage from an older TensorRT"
    plan_file.write_bytes(header + hashlib.sha256(payload).hexdigest().encode() + payload)
    misses = sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"})
    failures = _failures(FSANET.name, "deserialize")
    loaded = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
    assert loaded.backend == "fake-tensorrt" and len(port.builds) == 2
    assert (
        sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"}) == misses + 1
    )
    assert _failures(FSANET.name, "deserialize") == failures + 1


def test_corrupt_plan_and_failed_rebuild_fall_back_to_onnxruntime(tmp_path, model_mirror):
    paths = paths_for(tmp_path, model_mirror)
    load_engine(FSANET, settings("tensorrt"), paths, tensorrt=FakeTensorRT())
    plan_file = next((tmp_path / "engines").glob("*.plan"))
    plan_file.write_bytes(plan_file.read_bytes()[:20])  # truncated by a power cut
    misses = sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"})
    failures = _failures(FSANET.name, "build_failed")
    loaded = load_engine(
        FSANET, settings("tensorrt"), paths, tensorrt=FakeTensorRT(fail_build="out of memory")
    )
    assert loaded.backend == "onnxruntime"
    assert loaded.fallback is not None and "out of memory" in loaded.fallback
    assert (
        sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"}) == misses + 1
    )
    assert _failures(FSANET.name, "build_failed") == failures + 1
    assert loaded.engine.infer({"input": CROP})["output"].shape == (1, 3)


class _RealAdapterBuild(FakeTensorRT):
    """The fake's target and loads with the real adapter's build_plan: its handling of errors is under test;
    what it calls (trt_build.build_plan) is replaced per test by a function that only raises."""

    build_plan = TensorRTAdapter.build_plan  # type: ignore[assignment]


@pytest.mark.parametrize(
    "error",
    [
        # the build log's folder on a cache gone read-only (before the log became optional, r2 of the review)
        OSError(errno.EROFS, os.strerror(errno.EROFS), "/var/cache/edge-agent/engines"),
        RuntimeError("pybind11::error_already_set: std::bad_alloc"),  # TensorRT's own untyped errors
    ],
    ids=["oserror", "runtimeerror"],
)
def test_an_untyped_error_during_a_tensorrt_build_falls_back_to_onnxruntime(
    tmp_path, model_mirror, monkeypatch, error
):
    # Review r2: only EngineLoadError was caught, so the model ran on no backend (EngineSet: "none").
    def build_raising(*args: object, **kwargs: object) -> bytes:
        raise error

    monkeypatch.setattr(tensorrt_backend, "build_plan", build_raising)
    before = _failures(FSANET.name, "build_failed")
    paths = paths_for(tmp_path, model_mirror)
    loaded = load_engine(FSANET, settings("auto"), paths, tensorrt=_RealAdapterBuild())
    assert loaded.backend == "onnxruntime"
    assert loaded.fallback is not None and loaded.fallback.startswith("TensorRT build failed: ")
    assert str(error) in loaded.fallback
    assert _failures(FSANET.name, "build_failed") == before + 1
    assert loaded.engine.infer({"input": CROP})["output"].shape == (1, 3)


def test_a_cached_plan_that_fails_to_load_after_deserializing_is_kept_and_not_rebuilt(tmp_path, model_mirror):
    # Review r1: CUDA out of memory at buffer allocation (Orin's shared memory) was reported as "deserialize",
    # the sound plan moved aside as corrupt and built again (minutes), at every start.
    paths = paths_for(tmp_path, model_mirror)
    load_engine(FSANET, settings("tensorrt"), paths, tensorrt=FakeTensorRT())
    plan_file = next((tmp_path / "engines").glob("*.plan"))
    stored = plan_file.read_bytes()
    misses = sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"})
    failures = _failures(FSANET.name, "load_failed")
    port = FakeTensorRT(fail_load="load_failed")
    for _start in range(2):
        loaded = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
        assert loaded.backend == "onnxruntime"
        assert loaded.fallback is not None and loaded.fallback.startswith("TensorRT load failed: ")
    assert port.builds == [] and port.loads == 2
    assert plan_file.read_bytes() == stored and not list((tmp_path / "engines").glob("*.bad"))
    assert sample("edge_engine_cache_misses_total", {"engine": FSANET.name, "reason": "corrupt"}) == misses
    assert _failures(FSANET.name, "load_failed") == failures + 2
    # once the memory is there, the same plan loads: no build either
    working = FakeTensorRT()
    assert load_engine(FSANET, settings("tensorrt"), paths, tensorrt=working).backend == "fake-tensorrt"
    assert working.builds == []


def test_a_freshly_built_plan_tensorrt_cannot_deserialize_is_not_rebuilt_at_every_start(
    tmp_path, model_mirror
):
    paths = paths_for(tmp_path, model_mirror)
    port = FakeTensorRT(fail_load="deserialize")
    failures = _failures(FSANET.name, "deserialize")
    for _start in range(3):
        loaded = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=port)
        assert loaded.backend == "onnxruntime" and loaded.fallback is not None
    assert len(port.builds) == 1 and port.loads == 3  # each start tries the kept plan once, builds none
    assert "not built again" in loaded.fallback and "delete " in loaded.fallback
    assert _failures(FSANET.name, "deserialize") == failures + 3
    assert len(list((tmp_path / "engines").glob("*.plan"))) == 1
    # another TensorRT (a new cache key) builds its own plan
    upgraded = FakeTensorRT(target=BuildTarget("10.3.1-fake", "fake GPU", (8, 7)))
    assert load_engine(FSANET, settings("tensorrt"), paths, tensorrt=upgraded).backend == "fake-tensorrt"
    assert len(upgraded.builds) == 1


def test_int8_without_a_qdq_model_builds_tensorrt_at_the_default_precision_and_says_so(
    tmp_path, model_mirror
):
    # Review: it fell back to ONNX Runtime FP32 on the CPU, telling to run `engines quantize fsanet-1x1`,
    # which refuses that model every time (25 degrees off): TensorRT FP16 was the board's best choice.
    from edge_agent.inference.fetch import engine_model

    paths = paths_for(tmp_path, model_mirror)
    port = FakeTensorRT()
    loaded = load_engine(FSANET, settings("tensorrt", pose_precision="int8"), paths, tensorrt=port)
    assert (loaded.backend, loaded.precision, loaded.requested_precision) == ("fake-tensorrt", "fp16", "int8")
    assert port.builds == [(engine_model(FSANET, paths).name, "fp16")]
    assert loaded.fallback is not None and str(qdq_model_path(FSANET, paths)) in loaded.fallback
    assert loaded.fallback.endswith("; TensorRT runs fp16") and "--data PHOTOS" in loaded.fallback
    assert "writes one when it keeps the accuracy limit" in loaded.describe()
    on_cpu = load_engine(FSANET, settings("onnxruntime", pose_precision="int8"), paths)
    assert on_cpu.precision == "fp32" and on_cpu.fallback is not None and "running fp32" in on_cpu.fallback


def _quantized(paths, *, symmetric: bool = True):
    """fsanet-1x1's Q/DQ model where the loader looks for it, with the record `engines quantize` writes."""
    from edge_agent.inference.fetch import engine_model
    from edge_agent.inference.quantize import quantize_qdq
    from edge_agent.inference.select import qdq_record_text, qdq_source_record

    source = engine_model(FSANET, paths)
    qdq = qdq_model_path(FSANET, paths)
    rng = np.random.default_rng(0)
    quantize_qdq(source, qdq, [{"input": rng.random((1, 3, 64, 64), np.float32)} for _ in range(4)],
                 activation_symmetric=symmetric)
    qdq_source_record(qdq).write_text(qdq_record_text(source, symmetric=symmetric))
    return source, qdq


def test_an_int8_model_quantized_from_another_version_of_the_model_is_not_used(tmp_path, model_mirror):
    # Upgrade audit F10: the Q/DQ file had no record of its source, so a release that changed a model's
    # pin or derivation would go on running INT8 weights of the previous model, on both backends.
    from edge_agent.inference.fetch import sha256_file
    from edge_agent.inference.select import qdq_source_record

    paths = paths_for(tmp_path, model_mirror)
    source, qdq = _quantized(paths)
    int8 = settings("onnxruntime", pose_precision="int8")
    current = load_engine(FSANET, int8, paths)
    assert current.precision == "int8" and current.fallback is None
    port = FakeTensorRT()
    trt = load_engine(FSANET, settings("tensorrt", pose_precision="int8"), paths, tensorrt=port)
    assert (trt.precision, trt.fallback, port.builds) == ("int8", None, [(qdq.name, "int8")])
    record = qdq_source_record(qdq).read_text()
    for stale in (
        record.replace(sha256_file(source), "0" * 64),  # made from the model an earlier release pinned
        sha256_file(source) + "\n",  # an earlier release's record: its quantizer, maybe --asymmetric
        record.replace("quantizer=", "quantizer=0"),  # another release's quantizer settings
    ):
        qdq_source_record(qdq).write_text(stale)
        on_cpu = load_engine(FSANET, int8, paths)
        assert on_cpu.precision == "fp32" and on_cpu.fallback is not None
        assert "another version" in on_cpu.fallback
        port = FakeTensorRT()
        trt = load_engine(FSANET, settings("tensorrt", pose_precision="int8"), paths, tensorrt=port)
        assert (trt.backend, trt.precision) == ("fake-tensorrt", "fp16")  # its plan built once, then cached
        assert all(built == (source.name, "fp16") for built in port.builds)
        assert trt.fallback is not None and "another version" in trt.fallback


def test_an_asymmetric_int8_model_runs_on_onnxruntime_and_is_never_given_to_tensorrt(tmp_path, model_mirror):
    # Review: `engines quantize --asymmetric` wrote where the loader looks and recorded only the source's
    # hash, so TensorRT (whose parser rejects a non-zero zero point) was given it as current.
    paths = paths_for(tmp_path, model_mirror)
    source, _ = _quantized(paths, symmetric=False)
    on_cpu = load_engine(FSANET, settings("onnxruntime", pose_precision="int8"), paths)
    assert on_cpu.precision == "int8" and on_cpu.fallback is None
    port = FakeTensorRT()
    trt = load_engine(FSANET, settings("tensorrt", pose_precision="int8"), paths, tensorrt=port)
    assert (trt.backend, trt.precision) == ("fake-tensorrt", "fp16")
    assert port.builds == [(source.name, "fp16")]
    assert trt.fallback is not None and "asymmetric activations" in trt.fallback


def test_precision_comes_from_the_role_and_the_manifest():
    assert precision_for(FSANET, settings(pose_precision="int8")) == "int8"
    assert precision_for(MANIFESTS["yunet"], settings(face_precision="fp32")) == "fp32"
    assert (
        precision_for(MANIFESTS["kt-step"], settings(kt_precision="int8")) == "fp32"
    )  # not offered: default


def test_a_precision_the_model_does_not_offer_is_named_on_the_health_page(tmp_path, model_mirror):
    # Review: kt_precision = "int8" ran fp32 with no fallback said, as if fp32 had been asked for.
    loaded = load_engine(MANIFESTS["kt-step"], settings("onnxruntime", kt_precision="int8"),
                         paths_for(tmp_path, model_mirror))
    assert loaded.precision == "fp32"
    assert loaded.fallback == "int8 is not offered for kt-step (it has fp32, fp16); runs fp32"


def test_guarded_engine_counts_requests_and_rejects_out_of_profile(tmp_path, model_mirror):
    loaded = load_engine(FSANET, settings("onnxruntime"), paths_for(tmp_path, model_mirror))
    labels = {"engine": FSANET.name, "backend": "onnxruntime"}
    ok = sample("edge_inference_requests_total", {**labels, "outcome": "ok"})
    rejected = sample("edge_inference_requests_total", {**labels, "outcome": "rejected"})
    count = sample("edge_inference_latency_seconds_count", {"engine": FSANET.name, "stage": "infer"})
    loaded.engine.infer({"input": CROP})
    with pytest.raises(EngineInputError, match="outside the engine profile"):
        loaded.engine.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(EngineInputError, match="unknown input"):
        loaded.engine.infer({"input": CROP, "extra": CROP})
    assert sample("edge_inference_requests_total", {**labels, "outcome": "ok"}) == ok + 1
    assert sample("edge_inference_requests_total", {**labels, "outcome": "rejected"}) == rejected + 2
    assert (
        sample("edge_inference_latency_seconds_count", {"engine": FSANET.name, "stage": "infer"}) == count + 1
    )


def test_engine_set_reports_each_engine_and_survives_a_missing_model(tmp_path, model_mirror, monkeypatch):
    monkeypatch.delenv("EDGE_AGENT_MODEL_MIRROR", raising=False)
    broken = MANIFESTS["yunet"]
    broken = dataclasses.replace(
        broken,
        source=dataclasses.replace(
            broken.source, mirror_path="yunet/absent.onnx", url="https://127.0.0.1:9/absent.onnx"
        ),
    )
    engines = EngineSet([FSANET, broken], settings("onnxruntime"), paths_for(tmp_path, model_mirror))
    assert not engines.health().ok
    failures = {"engine": "yunet", "backend": "any", "reason": "ModelError"}
    before = metrics.sample("edge_engine_load_failures_total", failures)
    asyncio.run(engines.start())
    # counted for Prometheus, not only in the health text (only TensorRT's own failures were counted)
    assert metrics.sample("edge_engine_load_failures_total", failures) == before + 1
    health = engines.health()
    assert (
        not health.ok and "pose fsanet-1x1: onnxruntime" in health.detail and "yunet: FAILED" in health.detail
    )
    assert engines.get(FSANET.name).infer({"input": CROP})["output"].shape == (1, 3)
    with pytest.raises(EngineError, match="could not be obtained"):
        engines.get("yunet")
    assert {row["name"] for row in engines.status()} == {"fsanet-1x1", "yunet"}
    asyncio.run(engines.stop())


def test_model_missing_everywhere_raises_model_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGE_AGENT_MODEL_MIRROR", raising=False)
    manifest = dataclasses.replace(
        FSANET, source=dataclasses.replace(FSANET.source, url="https://127.0.0.1:9/x.onnx")
    )
    with pytest.raises(ModelError):
        load_engine(manifest, settings(), paths_for(tmp_path, None))


def test_onnxruntime_providers_prefer_the_gpu_and_never_lose_the_cpu():
    from edge_agent.inference.onnxruntime_backend import ort_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers(gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers(gpu, allow_tensorrt=True) == gpu
    assert ort_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert ort_providers([]) == ["CPUExecutionProvider"]


@pytest.mark.skipif(ext4_unavailable() is not None, reason=str(ext4_unavailable()))
def test_a_plan_built_on_a_full_disk_still_runs_and_says_it_was_not_cached(tmp_path, model_mirror):
    # The plan took minutes to build: it runs rather than being thrown away, and says so, so that
    # `engines build` fails (a second review: it exited 0 and the unit stamped the engines built).
    with failing_ext4(tmp_path / "disk", size_mib=16) as disk:
        paths = paths_for(disk.path / "cache", model_mirror)
        load_engine(FSANET, settings("onnxruntime"), paths)  # the model itself is fetched while there is room
        with (disk.path / "filler").open("wb", buffering=0) as out:
            for chunk in (1 << 20, 4096):  # to the last block (root may use the reserved ones too)
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0" * chunk)
        loaded = load_engine(FSANET, settings("tensorrt"), paths, tensorrt=FakeTensorRT())
        assert loaded.backend == "fake-tensorrt" and loaded.fallback is None
        assert loaded.uncached is not None and "No space left on device" in loaded.uncached
        assert "built but not cached" in loaded.describe()
        assert not list((disk.path / "cache" / "engines").glob("*.plan"))
        # and the board says so: built again for minutes at every start (a third review: 'all healthy')
        engines = EngineSet([FSANET], settings("tensorrt"), paths, tensorrt=FakeTensorRT())
        engines.load_all()
        health = engines.health()
        assert not health.ok and "built but not cached" in health.detail


def test_the_running_kt_plan_survives_two_updates_refused_in_the_same_run(tmp_path):
    # A review: the daemon reads its plan once at start; each KT update is built, stored, loaded and then
    # refused, so after two in one run the running plan was the oldest of three and was deleted (rebuilt
    # for minutes at the next start).
    import onnx

    from edge_agent.kt.updates import step_manifest_for

    def package(tag: str):
        folder = tmp_path / f"kt-{tag}"
        folder.mkdir()
        model = onnx.load(str(REPO / "engines" / "kt-default" / "kt_step.onnx"))
        model.doc_string = tag  # another model, another plan
        onnx.save(model, str(folder / "kt_step.onnx"))
        return step_manifest_for(MANIFESTS["kt-step"], folder)

    paths = paths_for(tmp_path / "cache", None)
    port = FakeTensorRT()
    running_model, update, another_update = package("v0"), package("v1"), package("v2")
    load_engine(running_model, settings("tensorrt"), paths, tensorrt=port).engine.close()  # `engines build`
    running = load_engine(running_model, settings("tensorrt"), paths, tensorrt=port)  # the daemon's start
    assert len(port.builds) == 1 and running.backend == "fake-tensorrt"
    plan = next((tmp_path / "cache" / "engines").glob("kt-step-fp32-*.plan"))
    for refused in (update, another_update):
        load_engine(refused, settings("tensorrt"), paths, tensorrt=port).engine.close()
    assert plan.exists() and len(port.builds) == 3
    running.engine.close()  # the next start loads it: no build of minutes
    load_engine(running_model, settings("tensorrt"), paths, tensorrt=port).engine.close()
    assert len(port.builds) == 3


def test_a_tensorrt_engine_that_fails_its_first_inference_falls_back_to_onnxruntime(tmp_path, model_mirror):
    # A review: an engine that deserialized but failed every execution (CUDA memory at the first enqueue)
    # dropped every frame of the run while the health page said TensorRT and nothing was counted.
    paths = paths_for(tmp_path, model_mirror)
    model = MANIFESTS["fsanet-var"]
    failures = _failures(model.name, "warmup_failed")
    port = FakeTensorRT(fail_execute=True)
    loaded = load_engine(model, settings("tensorrt"), paths, tensorrt=port)
    assert (loaded.backend, loaded.precision) == ("onnxruntime", "fp32")
    assert loaded.fallback is not None and "TensorRT warmup failed" in loaded.fallback
    assert "first inference failed (fsanet-var: TensorRT execution failed)" in loaded.fallback
    assert _failures(model.name, "warmup_failed") == failures + 1
    assert port.closed == 1 and loaded.engine.infer({"input": CROP})["output"].shape == (1, 3)
    # the plan is sound (a new one would fail alike): kept, loaded again next time, not rebuilt
    load_engine(model, settings("tensorrt"), paths, tensorrt=port)
    assert len(port.builds) == 1 and port.loads == 2
    working = load_engine(model, settings("tensorrt"), paths, tensorrt=FakeTensorRT())
    assert working.backend == "fake-tensorrt" and working.fallback is None


def test_an_int8_model_onnxruntime_cannot_open_runs_the_fp32_model_and_says_so(tmp_path, model_mirror):
    # A review: a damaged Q/DQ file (or one copied from another board) whose record matched the model
    # raised, so the model ran on no backend though its fp32 model runs.
    from edge_agent.inference.fetch import engine_model
    from edge_agent.inference.select import qdq_record_text, qdq_source_record

    paths = paths_for(tmp_path, model_mirror)
    qdq = qdq_model_path(FSANET, paths)
    qdq.parent.mkdir(parents=True)
    qdq.write_bytes(b"\x08\x07cut short by a power cut")
    qdq_source_record(qdq).write_text(qdq_record_text(engine_model(FSANET, paths), symmetric=True))
    counted = {"engine": FSANET.name, "backend": "onnxruntime", "reason": "int8_unusable"}
    before = sample("edge_engine_load_failures_total", counted)
    for backend, port in (("onnxruntime", None), ("auto", FakeTensorRT(fail_build="parser error"))):
        extra = {} if port is None else {"tensorrt": port}
        loaded = load_engine(FSANET, settings(backend, pose_precision="int8"), paths, **extra)
        assert (loaded.backend, loaded.precision) == ("onnxruntime", "fp32")
        assert "INT8 model unusable (ONNX Runtime could not load" in loaded.describe()
        assert loaded.describe().endswith("; running fp32)")
        assert loaded.engine.infer({"input": CROP})["output"].shape == (1, 3)
    assert sample("edge_engine_load_failures_total", counted) == before + 2


def test_a_ragged_list_input_is_an_input_error(tmp_path, model_mirror):
    # A review: numpy's ValueError ("inhomogeneous shape") came out of the guard instead of EngineInputError.
    loaded = load_engine(MANIFESTS["kt-step"], settings("onnxruntime"), paths_for(tmp_path, model_mirror))
    labels = {"engine": "kt-step", "backend": "onnxruntime", "outcome": "rejected"}
    rejected = sample("edge_inference_requests_total", labels)
    feeds = {
        "skill": np.zeros(2, np.int64), "correct": np.ones(2, np.int64),
        "h": [[0.0] * 64, [0.0]], "c": np.zeros((2, 64), np.float32),
    }
    with pytest.raises(EngineInputError, match="'h' is not a rectangular array"):
        loaded.engine.infer(feeds)
    assert sample("edge_inference_requests_total", labels) == rejected + 1
