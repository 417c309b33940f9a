"""CudaMemory on a real GPU: pinned and device buffers, async copies both ways, stream sync.

Runs standalone: ``pip install cuda-python numpy pytest`` (and/or pycuda) then
``pytest tests/inference/test_cuda_memory.py``. Every test runs once per binding; a binding that is not
installed, or no GPU, skips with the reason.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge_agent.errors import EngineError, EngineLoadError

pytestmark = pytest.mark.gpu


@pytest.fixture(params=["cuda-python", "pycuda"])
def memory(request):
    from edge_agent.inference.cuda_memory import CudaMemory

    try:
        mem = CudaMemory(request.param)
    except EngineLoadError as exc:
        pytest.skip(f"no CUDA here through {request.param}: {exc}")
    yield mem
    mem.close()


def test_device_reports_name_and_compute_capability(memory):
    name, (major, minor) = memory.device()
    assert name and major >= 5 and minor >= 0
    print(f"CUDA device: {name} sm_{major}{minor} via {memory.binding}")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8])
def test_round_trip_through_device_memory(memory, dtype):
    stream = memory.stream()
    data = (np.arange(3 * 480 * 640) % 251).astype(dtype).reshape(1, 3, 480, 640)
    pinned_in = memory.pinned_buffer(data.nbytes)
    pinned_out = memory.pinned_buffer(data.nbytes)
    staged = pinned_in.view(dtype).reshape(data.shape)
    staged[...] = data
    device = memory.device_buffer(data.nbytes)
    memory.to_device(device, staged, stream)
    back = pinned_out.view(dtype).reshape(data.shape)
    memory.to_host(back, device, stream)
    memory.synchronize(stream)
    np.testing.assert_array_equal(back, data)


def test_partial_copies_reuse_a_buffer_sized_for_the_maximum(memory):
    stream = memory.stream()
    device = memory.device_buffer(4 * 1088 * 1920 * 3)
    for size in (96 * 96 * 3, 1088 * 1920 * 3, 480 * 640 * 3):
        data = np.random.default_rng(size).standard_normal(size).astype(np.float32)
        out = np.empty_like(data)
        memory.to_device(device, data, stream)
        memory.to_host(out, device, stream)
        memory.synchronize(stream)
        np.testing.assert_array_equal(out, data)


def test_copy_larger_than_the_buffer_is_refused(memory):
    stream = memory.stream()
    device = memory.device_buffer(16)
    with pytest.raises(EngineError, match="does not fit"):
        memory.to_device(device, np.zeros(8, np.float32), stream)
    with pytest.raises(EngineError, match="exceeds"):
        memory.to_host(np.zeros(8, np.float32), device, stream)


def test_stream_handle_is_an_integer_for_tensorrt(memory):
    assert isinstance(memory.stream_handle(memory.stream()), int)


def test_buffers_made_on_one_thread_work_on_another(memory):
    # The daemon loads engines on one thread and runs them on the KT or attention thread.
    stream = memory.stream()
    data = np.arange(4096, dtype=np.float32)
    device = memory.device_buffer(data.nbytes)
    pinned = memory.pinned_buffer(data.nbytes).view(np.float32)

    def round_trip() -> np.ndarray:
        memory.to_device(device, data, stream)
        memory.to_host(pinned, device, stream)
        memory.synchronize(stream)
        return pinned.copy()

    with ThreadPoolExecutor(1) as worker:
        np.testing.assert_array_equal(worker.submit(round_trip).result(30), data)
    np.testing.assert_array_equal(round_trip(), data)  # and still on the thread that made them


def test_two_engines_memories_on_two_threads_at_once(memory):
    from edge_agent.inference.cuda_memory import CudaMemory

    start = threading.Barrier(2)

    def engine(seed: int) -> bool:
        mem = CudaMemory(memory.binding)
        try:
            stream = mem.stream()
            data = np.random.default_rng(seed).standard_normal(1 << 16).astype(np.float32)
            out = np.empty_like(data)
            device = mem.device_buffer(data.nbytes)
            start.wait(10)
            for _ in range(50):
                mem.to_device(device, data, stream)
                mem.to_host(out, device, stream)
                mem.synchronize(stream)
            return bool(np.array_equal(out, data))
        finally:
            mem.close()

    with ThreadPoolExecutor(2) as pool:
        assert [f.result(60) for f in [pool.submit(engine, 1), pool.submit(engine, 2)]] == [True, True]
