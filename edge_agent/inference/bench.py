"""Latency and throughput of engines: median and p99 per call, at batch 1 and a larger batch.

Pure timing helpers plus the row builders ``edge-agent engines bench`` prints. Inputs are synthetic (zeros
at the profile's opt shape): latency of these models does not depend on the values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_agent.inference.engine import TensorSpec
from edge_agent.inference.manifest import InputProfile, Manifest

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class BenchRow:
    model: str
    backend: str
    precision: str
    batch: int
    median_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None  # items (batch rows) per second
    note: str = ""

    def cells(self) -> list[str]:
        def fmt(value: float | None, digits: int) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        return [
            self.model,
            self.backend,
            self.precision,
            str(self.batch),
            fmt(self.median_ms, 3),
            fmt(self.p99_ms, 3),
            fmt(self.throughput, 0),
            self.note,
        ]


def summarize(seconds: Sequence[float], batch: int) -> tuple[float, float, float]:
    """(median ms, p99 ms, items per second) of per-call durations."""
    times = np.asarray(seconds, dtype=np.float64)
    median = float(np.median(times))
    return median * 1e3, float(np.percentile(times, 99)) * 1e3, batch / median


def time_calls(call: Callable[[], object], iterations: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def batched_profile_shape(profile: InputProfile, batch: int) -> tuple[int, ...] | None:
    """The opt shape with ``batch`` rows on axis 0, or None when the profile does not allow that batch."""
    if not profile.min[0] <= batch <= profile.max[0]:
        return None
    return (batch, *profile.opt[1:])


def synthetic_feeds(
    profiles: Sequence[InputProfile], specs: Sequence[TensorSpec], batch: int
) -> Feeds | None:
    dtypes = {s.name: s.dtype for s in specs}
    feeds: Feeds = {}
    for profile in profiles:
        shape = batched_profile_shape(profile, batch)
        if shape is None:
            return None
        feeds[profile.name] = np.zeros(shape, dtypes.get(profile.name, np.dtype(np.float32)))
    return feeds


def bench_row(
    manifest: Manifest,
    backend: str,
    precision: str,
    batch: int,
    infer: Callable[[Feeds], object],
    *,
    feeds: Feeds | None,
    iterations: int,
) -> BenchRow:
    if feeds is None:
        return BenchRow(manifest.name, backend, precision, batch, note="batch outside the engine profile")
    median, p99, throughput = summarize(time_calls(lambda: infer(feeds), iterations), batch)
    return BenchRow(manifest.name, backend, precision, batch, median, p99, throughput)


def torch_kt_step(manifest: Manifest) -> Callable[[Feeds], object]:
    """PyTorch eager equivalent of the KT step model (same architecture; weights not loaded, latency only)."""
    import torch

    from edge_agent.kt.model import DKT, DKTStep

    if manifest.source.repo_path is None:
        raise FileNotFoundError("the KT manifest has no package folder")
    meta = json.loads((manifest.source.repo_path.parent / "metadata.json").read_text(encoding="utf-8"))
    options = meta.get("train_options", {})
    model = DKTStep(
        DKT(
            int(meta["n_skills"]),
            int(options.get("hidden", meta.get("hidden", 64))),
            int(options.get("embed", 32)),
        )
    ).eval()
    torch.set_num_threads(1)  # same as ONNX Runtime's intra_op_threads default

    def run(feeds: Mapping[str, np.ndarray]) -> object:
        with torch.inference_mode():
            return model(*(torch.from_numpy(feeds[k]) for k in ("skill", "correct", "h", "c")))

    return run


def table(rows: Sequence[BenchRow]) -> str:
    header = ["model", "backend", "precision", "batch", "median ms", "p99 ms", "items/s", "note"]
    body = [header] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in body
    )


def to_json(rows: Sequence[BenchRow], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
