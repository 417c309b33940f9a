"""A test double for the TensorRT hardware port (tests only: it never ships in the package).

It exercises the real selection, cache and fallback code: "plans" are small byte strings naming the ONNX
file, and "engines" are ONNX Runtime sessions reporting backend ``fake-tensorrt`` so no result can be
mistaken for a TensorRT measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_agent.errors import EngineError, EngineLoadError
from edge_agent.inference.engine import Engine
from edge_agent.inference.engine_cache import BuildTarget
from edge_agent.inference.manifest import InputProfile
from edge_agent.inference.onnxruntime_backend import OnnxRuntimeEngine

_MAGIC = b"FAKEPLAN:"


class FakeTensorRT:
    def __init__(
        self,
        *,
        fail_build: str | None = None,
        fail_load: str | None = None,
        fail_execute: bool = False,
        target: BuildTarget | None = None,
    ) -> None:
        """``fail_load``: every load fails with this EngineLoadError reason, as the real adapter reports
        one (``"deserialize"``: TensorRT could not deserialize; ``"load_failed"``: CUDA memory after it).
        ``fail_execute``: engines load, and every inference fails as the real adapter's does when
        ``execute_async_v3`` returns False (CUDA memory at the first enqueue)."""
        self.target = target or BuildTarget("10.3.0-fake", "fake GPU", (8, 7))
        self.fail_build = fail_build
        self.fail_load = fail_load
        self.fail_execute = fail_execute
        self.builds: list[tuple[str, str]] = []
        self.loads = 0
        self.closed = 0

    def __call__(self) -> FakeTensorRT:
        return self

    def build_plan(
        self, onnx_path: Path, profiles: Sequence[InputProfile], precision: str, settings: object
    ) -> bytes:
        self.builds.append((onnx_path.name, precision))
        if self.fail_build:
            raise EngineLoadError(f"fake build failure: {self.fail_build}", "build_failed")
        return _MAGIC + str(onnx_path).encode()

    def load_plan(
        self, plan: bytes, model_name: str, precision: str, profiles: Sequence[InputProfile]
    ) -> Engine:
        self.loads += 1
        if self.fail_load:
            raise EngineLoadError(
                f"fake load failure of the {model_name} plan ({self.fail_load})", self.fail_load
            )
        if not plan.startswith(_MAGIC):
            raise EngineLoadError(f"the {model_name} plan is not a plan this runtime can read", "deserialize")
        engine = OnnxRuntimeEngine(
            Path(plan[len(_MAGIC) :].decode()), model_name=model_name, precision=precision
        )
        engine.backend = "fake-tensorrt"  # type: ignore[misc]
        port, close = self, engine.close

        def counted_close() -> None:
            port.closed += 1
            close()

        engine.close = counted_close  # type: ignore[method-assign]
        if self.fail_execute:

            def execution_fails(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                raise EngineError(f"{model_name}: TensorRT execution failed")

            engine.infer = execution_fails  # type: ignore[method-assign]
        return engine
