"""CudaMemory on a real GPU: pinned and device buffers, async copies both ways, stream sync.

Runs standalone: ``pip install cuda-python numpy pytest`` then ``pytest tests/inference/test_cuda_memory.py``.
Skipped (with the reason) where there are no CUDA bindings or no GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import EngineError, EngineLoadError

pytestmark = pytest.mark.gpu


@pytest.fixture()
def memory():
    from edge_agent.inference.cuda_memory import CudaMemory

    try:
        mem = CudaMemory()
    except EngineLoadError as exc:
        pytest.skip(f"no CUDA here: {exc}")
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
