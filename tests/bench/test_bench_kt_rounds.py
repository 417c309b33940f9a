"""bench_kt's service and HTTP comparisons: alternated rounds on the real service, web stack and models."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import bench_report
import pytest


def test_service_and_http_ratios_are_medians_of_alternated_rounds_with_their_spread(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import bench_kt

    from edge_agent.kt.package import load_package

    package = load_package()
    kt = bench_kt.bench_services(package, tmp_path, 800, 2, with_eager=True)
    kt |= bench_kt.bench_http(package, tmp_path, 0.6, 2, with_baselines=True)
    assert kt["service_rounds"] == kt["http_rounds"] == 2
    for key in ("service_model_choice_ratio", "http_model_choice_ratio", "http_throughput_ratio"):
        assert kt[f"{key}_p10"] <= kt[key] <= kt[f"{key}_p90"], key
    # each side's paced 200/s run is kept whole: 120 answers sent in 0.6 s, each answered 200
    assert kt["ours_http200_sent"] == kt["eager_svc_http200_sent"] == kt["torch_http200_sent"] == 120
    assert kt["ours_http200_ok"] == 120 and kt["ours_http_sustained_answers_per_s"] > 0
    rows = {row[0]: row for row in bench_report.comparison_rows({"kt": kt})}
    for label in ("KT answers/s over HTTP, same service", "KT answers/s, same service"):
        assert "(p10-p90 of 2 rounds: " in rows[f"{label}: step engine vs eager window-10"][3]
    details = {name: detail for name, _, detail, _ in bench_report.targets({"kt": kt})}
    assert "(p10-p90 of 2 rounds: " in details["KT throughput >= 10x PyTorch (over HTTP, same web stack)"]


def test_the_models_at_a_lessons_pace_are_timed_after_idle_in_alternated_rounds_beside_a_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = pytest.importorskip("torch")
    import bench_kt

    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine
    from edge_agent.kt.package import load_package

    package = load_package()
    engine = OnnxRuntimeEngine(package.step_model)
    one = bench_kt._step_feeds(package, 1)
    eager = bench_kt._eager_window10(package)
    assert eager is not None
    slept: list[float] = []
    real_sleep, here = time.sleep, threading.get_ident()

    def counted(seconds: float) -> None:
        if threading.get_ident() == here:  # not another test's leftover thread
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", counted)
    with torch.inference_mode():
        kt = bench_kt.bench_paced({"step": lambda: engine.infer(one), "torch": eager[0]}, 3, rounds=2,
                                  pace_s=0.002)
    kt |= bench_kt.bench_paced({"floor": bench_kt._cold_floor()}, 3, rounds=1, pace_s=0.002)
    assert slept == [0.002] * (3 * 2 * 2 + 3)  # every timed call comes after its idle
    assert all(kt[f"{side}_paced_median_us"] > 0 for side in ("step", "torch", "floor"))
    assert kt["model_paced_ratio_p10"] <= kt["model_paced_ratio"] <= kt["model_paced_ratio_p90"]
    rows = {row[0]: row for row in bench_report.comparison_rows({"kt": kt})}
    row = rows["KT µs per answer, model at a lesson's pace (batch 1, a call every 20 ms: cold caches)"]
    assert "(p10-p90 of 2 rounds: " in row[3] and "a 64x256 matmul at that pace" in row[3]
