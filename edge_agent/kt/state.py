"""Per-student knowledge state: LSTM (h, c) and the latest per-skill success probabilities (pure).

Kept in memory as numpy arrays and serialised to a small self-describing byte string for the store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_MAGIC = b"KTS1"
_HEADER = struct.Struct("<4sII")  # magic, hidden size, skill count


@dataclass
class StudentState:
    h: np.ndarray  # [hidden] float32
    c: np.ndarray  # [hidden] float32
    probs: np.ndarray  # [skills] float32: P(next answer on skill k is correct)
    answers: int = 0
    last_item: str | None = None

    @classmethod
    def initial(cls, hidden: int, prior: np.ndarray) -> StudentState:
        return cls(
            np.zeros(hidden, np.float32), np.zeros(hidden, np.float32), prior.astype(np.float32).copy()
        )

    def to_bytes(self) -> bytes:
        item = (self.last_item or "").encode("utf-8")
        return b"".join(
            [
                _HEADER.pack(_MAGIC, self.h.size, self.probs.size),
                self.h.astype("<f4").tobytes(),
                self.c.astype("<f4").tobytes(),
                self.probs.astype("<f4").tobytes(),
                struct.pack("<I", len(item)),
                item,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes, answers: int, hidden: int, skills: int) -> StudentState:
        """Raises ValueError when the bytes are damaged or come from a model of another shape."""
        if len(data) < _HEADER.size:
            raise ValueError("state too short")
        magic, h_size, s_size = _HEADER.unpack_from(data)
        if magic != _MAGIC or (h_size, s_size) != (hidden, skills):
            raise ValueError(f"state is for hidden={h_size}, skills={s_size}; model has {hidden}, {skills}")
        off = _HEADER.size
        n = 4 * (2 * hidden + skills)
        if len(data) < off + n + 4:
            raise ValueError("state truncated")
        arr = np.frombuffer(data, "<f4", count=2 * hidden + skills, offset=off).astype(np.float32)
        (length,) = struct.unpack_from("<I", data, off + n)
        item = data[off + n + 4 : off + n + 4 + length]
        if len(item) != length:
            raise ValueError("state truncated")
        if not np.all(np.isfinite(arr)):
            raise ValueError("state holds non-finite numbers")
        return cls(
            arr[:hidden].copy(),
            arr[hidden : 2 * hidden].copy(),
            arr[2 * hidden :].copy(),
            answers,
            item.decode("utf-8") or None,
        )
