"""The engine interface every backend implements.

An engine is a loaded model that maps named input arrays to named output arrays. Dynamic dimensions are
``-1`` in :attr:`TensorSpec.shape`; the optimization profile (min/opt/max) bounds them where a backend
needs bounds. An input that breaks the spec raises :class:`EngineInputError` before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for a dynamic dimension


@runtime_checkable
class Engine(Protocol):
    """A loaded model. ``infer`` may be called from one thread at a time per engine object."""

    model_name: str
    backend: str  # "onnxruntime" or "tensorrt"
    precision: str  # "fp32", "fp16" or "int8"

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
