"""Which lesson windows a stop sends as ``partial``: only the one it cut short (docs/sync-protocol.md)."""

from __future__ import annotations

import asyncio
import functools
import json

import pytest

import edge_agent.kt.component as component_module
from edge_agent.config import KTSettings
from edge_agent.kt.component import KTComponent
from edge_agent.kt.package import KTPackage
from edge_agent.kt.service import KTService
from edge_agent.lifecycle import HeartbeatRegistry
from edge_agent.store.db import Database
from edge_agent.store.outbox import Outbox
from tests.kt.test_service import _answer

WINDOW_S = 300.0


@pytest.mark.parametrize("late_answer", [True, False], ids=["ended-by-a-late-answer", "due-at-the-stop"])
def test_a_stop_sends_a_window_that_had_ended_as_whole_and_only_the_one_it_cut_as_partial(
    package: KTPackage, device, db: Database, outbox: Outbox, pseudonymize, monkeypatch, late_answer: bool
) -> None:
    # A review: the stop marked every window it drained as partial ("cut by a stop, window_end is the stop's
    # time"), also a whole window of 300 s that had ended a moment before: an answer in the second after
    # its end (the window waits in the service for the next publish turn, or longer behind a slow disk),
    # or a stop right at its end. A receiver that merges or discards partial windows got it wrong.
    now, mono = [1_800_000_000.0], [5_000.0]
    monkeypatch.setattr(component_module, "KTService",
                        functools.partial(KTService, clock=lambda: now[0], monotonic=lambda: mono[0]))
    settings = KTSettings(min_group_size=5, lesson_window_s=WINDOW_S, microbatch_wait_ms=0.0)
    started = now[0]

    async def run() -> float:
        comp = KTComponent(settings, device, None, db, outbox, None, HeartbeatRegistry())
        await comp.start()
        svc = comp.get_service()
        assert svc is not None
        await svc.submit_async([_answer(package, pseudonymize, f"s{n}", f"a{n}", n) for n in range(6)])
        # From here to the stop nothing awaits: the publish loop gets no turn to send the window first.
        now[0] += WINDOW_S + 0.5
        mono[0] += WINDOW_S + 0.5
        if late_answer:  # ends the window and opens the next, which the stop cuts
            svc.submit([_answer(package, pseudonymize, "s0", "late", 1)]).result(10)
        await comp.stop()
        return now[0]

    stopped = asyncio.run(run())
    rows = db.read(lambda c: c.execute(
        "SELECT payload FROM outbox WHERE stream = 'kt_class' ORDER BY seq").fetchall())
    sent = [json.loads(p) for (p,) in rows]
    whole = sent[0]  # the 6 students' 300 s, as the publish loop would have sent it
    assert (whole["answers"], whole["lesson_started"], whole["window_end"]) == (6, started, started + 300)
    assert "partial" not in whole, whole
    if late_answer:
        assert len(sent) == 2
        cut = sent[1]  # the late answer's, one student: suppressed, its times and the flag sent
        assert (cut["lesson_started"], cut["window_end"], cut.get("partial")) == (stopped, stopped, True)
    else:
        assert len(sent) == 1
