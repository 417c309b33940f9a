"""Per-student knowledge state: LSTM (h, c), the latest per-skill success probabilities, the model that
computed them and the student's most recent answers (pure).

Kept in memory as numpy arrays and serialised for the store as two byte strings: the state proper, "KTS1"
(h, c, probs, last item), which every release reads, and beside it (its own column) the model id and the
kept answers. A "KTS2" layout, written for a while in 2026.12, put those in the state's header: a board
rolled back to a release before it took every such state as foreign, started each student afresh and wrote
over the stored states (20 answers of mastery each, lost for good); a trailer after a KTS1 state did the
same to the KTS2 releases, which read KTS1 to its exact length. KTS2 is still read.
An LSTM state means something only to the weights that computed it: a model update replays each
student's kept answers through the new model (:data:`HISTORY_CAP` of them; see the service's swap).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_MAGIC_V1 = b"KTS1"  # h, c, probs, last item: what every release reads
_HEADER_V1 = struct.Struct("<4sII")  # magic, hidden size, skill count
_KEPT_MAGIC = b"KTH1"
# the kept answers' column: magic, model id, the student's answer count when written, kept answers (then
# the codes). An older release updates the state and leaves this: the count then differs, and it is stale.
_KEPT = struct.Struct("<4s32sII")
_MAGIC_V2 = b"KTS2"  # read only (see above)
_HEADER_V2 = struct.Struct("<4sII32sI")  # magic, hidden size, skill count, model id, kept answers
MODEL_ID_SIZE = 32  # sha256 of the step model file
# Answers kept per student for a replay through a new model. Measured on the simulator (600 students,
# 300 answers each, then 100 more after the swap; two packages trained with seeds 0 and 1): next-answer
# AUC after the swap 0.7235 with the old model's state carried, 0.7476 replaying all 300 answers, 0.7440
# replaying the last 50, 0.7469 the last 100, 0.7477 the last 200. 100 costs 400 bytes a student.
HISTORY_CAP = 100
RECENT_ITEMS = 3
UNKNOWN_MODEL = b""  # a KTS1 state: computed by some earlier model, which one is not known


# The model of a state whose kept answers were moved onto another package's skills (StudentState.moved):
# no model computed its figures for them, so the first model to load it replays them
MOVED_SKILLS = b"\xff" * MODEL_ID_SIZE


def history_code(skill: int, correct: int) -> int:
    """One kept answer: the embedding row the step model reads (``2 * skill + correct``)."""
    return 2 * skill + correct


class StateOfAnotherShape(ValueError):
    """A stored state that reads whole but was made for a model of another hidden size or skill count (not
    damaged: the model package changed)."""


@dataclass
class StudentState:
    h: np.ndarray  # [hidden] float32
    c: np.ndarray  # [hidden] float32
    probs: np.ndarray  # [skills] float32: P(next answer on skill k is correct)
    answers: int = 0
    last_item: str | None = None
    # id of the step model that computed h, c and probs; UNKNOWN_MODEL for a state from a release that kept
    # no answers, until its kept answers fill HISTORY_CAP (replayed from fewer, it lost what came before)
    model: bytes = UNKNOWN_MODEL
    # the latest answers (history_code), oldest first, at most HISTORY_CAP once kept; shared by the
    # service's working copies and extended only when a batch is kept
    history: array[int] = field(default_factory=lambda: array("I"))
    # the items of the latest answers, newest last, never recommended (RECENT_ITEMS of them): excluding
    # only the one just answered, two items took turns (a review: the item of two answers back was
    # recommended in 206 of 2,000 feedbacks). Stored beside the state (its own column), as KTS1 keeps
    # last_item alone
    recent_items: tuple[str, ...] = ()

    def answered(self, item: str) -> None:
        self.answers += 1
        self.last_item = item
        self.recent_items = (*self.recent_items[1 - RECENT_ITEMS:], item)

    @classmethod
    def initial(cls, hidden: int, prior: np.ndarray, model: bytes = UNKNOWN_MODEL) -> StudentState:
        return cls(
            np.zeros(hidden, np.float32), np.zeros(hidden, np.float32), prior.astype(np.float32).copy(),
            model=model,
        )

    def stepped(
        self, h: np.ndarray, c: np.ndarray, probs: np.ndarray, model: bytes | None = None
    ) -> StudentState:
        """This student after a step or a replay: new h, c and probs (and model), the rest carried, the kept
        answers shared. The one place a state is rebuilt field by field: dataclasses.replace costs 1 µs more
        a call, twice an answer on the answer path."""
        return StudentState(h, c, probs, self.answers, self.last_item, self.model if model is None else model,
                            self.history, self.recent_items)

    def keep(self, codes: list[int], model: bytes) -> None:
        """Add answers to the kept history, dropping the oldest beyond HISTORY_CAP. A state of no known model
        becomes ``model``'s (the one running) once they fill it: from then on they stand for it, and a model
        update replays them. Before, one answer made it replayable from that one alone (round-2 review: a
        mastery of 0.93 from 200 answers fell to 0.53, under the prior, at the next update)."""
        self.history.extend(codes)
        excess = len(self.history) - HISTORY_CAP
        if excess > 0:
            del self.history[:excess]
        if self.model == UNKNOWN_MODEL and len(self.history) >= HISTORY_CAP:
            self.model = model

    def moved(self, codes: Sequence[int]) -> StudentState:
        """This student with ``codes`` for kept answers (moved onto another package's skills), for the next
        load to replay."""
        return StudentState(self.h, self.c, self.probs, self.answers, self.last_item, MOVED_SKILLS,
                            array("I", codes))

    def to_bytes(self) -> bytes:
        """The state proper (KTS1); :meth:`kept_bytes` goes beside it."""
        item = (self.last_item or "").encode("utf-8")
        return b"".join(
            [
                _HEADER_V1.pack(_MAGIC_V1, self.h.size, self.probs.size),
                self.h.astype("<f4").tobytes(),
                self.c.astype("<f4").tobytes(),
                self.probs.astype("<f4").tobytes(),
                struct.pack("<I", len(item)),
                item,
            ]
        )

    def kept_bytes(self) -> bytes:
        """The model id and the kept answers, for the column beside the state."""
        history = np.frombuffer(self.history, np.uint32)[-HISTORY_CAP:].astype("<u4", copy=False)
        return _KEPT.pack(_KEPT_MAGIC, self.model, self.answers, history.size) + history.tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, answers: int, hidden: int, skills: int, kept: bytes | None = None
    ) -> StudentState:
        """Raises ValueError when the state is damaged or comes from a model of another shape. A KTS1 state
        takes its model and answers from ``kept`` (:meth:`kept_bytes`) when that was written with it (for
        ``answers``); else, written by a release that kept no answers, it is of no known model."""
        if data[:4] == _MAGIC_V1 and len(data) >= _HEADER_V1.size:
            _, h_size, s_size = _HEADER_V1.unpack_from(data)
            model, count, off = UNKNOWN_MODEL, 0, _HEADER_V1.size
        elif data[:4] == _MAGIC_V2 and len(data) >= _HEADER_V2.size:
            _, h_size, s_size, model, count = _HEADER_V2.unpack_from(data)
            off = _HEADER_V2.size
        else:
            raise ValueError("not a student state (damaged, or from an unknown release)")
        if (h_size, s_size) != (hidden, skills):
            raise StateOfAnotherShape(f"state is for hidden={h_size}, skills={s_size}; model has {hidden}, "
                                      f"{skills}")
        floats = 2 * hidden + skills
        n = 4 * (floats + count)  # KTS2: the kept answers come before the item
        if len(data) < off + n + 4:
            raise ValueError("state truncated")
        arr = np.frombuffer(data, "<f4", count=floats, offset=off).astype(np.float32)
        codes = np.frombuffer(data, "<u4", count=count, offset=off + 4 * floats)
        (length,) = struct.unpack_from("<I", data, off + n)
        item = data[off + n + 4 : off + n + 4 + length]
        if len(item) != length:
            raise ValueError("state truncated")
        end = off + n + 4 + length
        if data[:4] == _MAGIC_V1 and data[end : end + 4] == _KEPT_MAGIC and not kept:
            # written for a few hours on 2026-12-03 (cfae024): the kept answers after the state
            kept = data[end:end + 4] + data[end + 4:end + 36] + struct.pack("<I", answers) + data[end + 36:]
            end = len(data)
        if end != len(data):  # a wrong count of kept answers shifts what follows it
            raise ValueError("state damaged: its length does not match its header")
        if not np.all(np.isfinite(arr)):
            raise ValueError("state holds non-finite numbers")
        if data[:4] == _MAGIC_V1 and kept:
            model, codes = _kept(kept, answers, skills)
        model = UNKNOWN_MODEL if model == bytes(MODEL_ID_SIZE) else model  # as packed from b""
        if codes.size and int(codes.max()) >= 2 * skills:
            raise ValueError("state holds answers on skills the model does not have")
        last_item = item.decode("utf-8") or None
        return cls(
            arr[:hidden].copy(),
            arr[hidden : 2 * hidden].copy(),
            arr[2 * hidden :].copy(),
            answers,
            last_item,
            model,
            array("I", codes[-HISTORY_CAP:].tolist()),
            (last_item,) if last_item else (),
        )


def _kept(data: bytes, answers: int, skills: int) -> tuple[bytes, np.ndarray]:
    """The model id and kept answers of :meth:`StudentState.kept_bytes`; none (no known model) when they
    were written for another answer count (an older release updated the state since) or do not read: the
    state itself is still good, and dropping it lost the student's mastery."""
    none = (UNKNOWN_MODEL, np.zeros(0, np.uint32))
    if data[:4] != _KEPT_MAGIC or len(data) < _KEPT.size:
        return none
    _, model, written_at, count = _KEPT.unpack_from(data)
    if written_at != answers or len(data) != _KEPT.size + 4 * count:
        return none
    codes = np.frombuffer(data, "<u4", count=count, offset=_KEPT.size)
    return none if codes.size and int(codes.max()) >= 2 * skills else (model, codes)
