"""One place that times an inference call and records it, so every caller counts the same way."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from edge_agent.errors import EngineError
from edge_agent.inference.engine import Engine
from edge_agent.telemetry.metrics import INFERENCE_LATENCY, INFERENCE_REQUESTS


def infer_timed(engine: Engine, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Run ``engine.infer``; observe its latency (stage "infer") and count the outcome.

    Returns the outputs and the seconds it took; an :class:`EngineError` is counted as an error and re-raised.
    """
    labels = {"engine": engine.model_name, "backend": engine.backend}
    start = time.perf_counter()
    try:
        outputs = engine.infer(feeds)
    except EngineError:
        INFERENCE_REQUESTS.labels(outcome="error", **labels).inc()
        raise
    elapsed = time.perf_counter() - start
    INFERENCE_LATENCY.labels(engine=engine.model_name, stage="infer").observe(elapsed)
    INFERENCE_REQUESTS.labels(outcome="ok", **labels).inc()
    return outputs, elapsed
