"""bench_kt's service and HTTP comparisons: alternated rounds on the real service, web stack and models."""

from __future__ import annotations

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
    assert "(rounds " in rows["KT answers/s over HTTP, same service: step engine vs eager window-10"][3]
    assert "(rounds " in rows["KT answers/s, same service: step engine vs eager window-10"][3]
    details = {name: detail for name, _, detail, _ in bench_report.targets({"kt": kt})}
    assert "(rounds " in details["KT throughput >= 10x PyTorch (over HTTP, same web stack)"]
