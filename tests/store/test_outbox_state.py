"""The outbox rules, table-driven and with generated sequences (no database, no threads)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.store import outbox_state as rules


def test_plan_drops_stops_as_soon_as_both_limits_hold() -> None:
    candidates = [rules.DropCandidate(i, 10, "attention") for i in range(1, 6)]
    assert rules.plan_drops(7, 70, 5, 1000, candidates) == [(1, "max_rows"), (2, "max_rows")]
    assert rules.plan_drops(3, 70, 5, 45, candidates) == [
        (1, "max_bytes"),
        (2, "max_bytes"),
        (3, "max_bytes"),
    ]
    assert rules.plan_drops(3, 30, 5, 45, candidates) == []


@given(
    rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 500)), max_size=200),
    batch_max=st.integers(1, 20),
    max_bytes=st.integers(100, 3000),
)
def test_batches_keep_every_row_once_in_stream_order_within_limits(
    rows: list[tuple[str, int]], batch_max: int, max_bytes: int
) -> None:
    sized = [rules.Sized(i, stream, size) for i, (stream, size) in enumerate(rows)]
    batches = rules.group_batches(sized, batch_max, max_bytes)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(rows)))
    for batch in batches:
        assert len({rows[i][0] for i in batch}) == 1
        assert len(batch) <= batch_max
        assert len(batch) == 1 or sum(rows[i][1] for i in batch) <= max_bytes
        assert batch == sorted(batch)
    for stream in "abc":
        order = [i for b in batches for i in b if rows[i][0] == stream]
        assert order == sorted(order)


@given(
    sizes=st.lists(st.integers(1, 100), min_size=1, max_size=50),
    max_rows=st.integers(100, 200),
    max_bytes=st.integers(1, 3000),
)
def test_plan_drops_brings_totals_within_limits_when_candidates_suffice(
    sizes: list[int], max_rows: int, max_bytes: int
) -> None:
    candidates = [rules.DropCandidate(i, s, "x") for i, s in enumerate(sizes)]
    rows, total = max_rows + 3, sum(sizes)
    plan = rules.plan_drops(rows, total, max_rows, max_bytes, candidates)
    dropped = {i for i, _ in plan}
    left_rows = rows - len(plan)
    left_bytes = total - sum(s for i, s in enumerate(sizes) if i in dropped)
    if len(plan) < len(sizes):
        assert left_rows <= max_rows and left_bytes <= max_bytes
    # never drops more than needed: without the last drop a limit would still be exceeded
    if plan:
        last = plan[-1][0]
        assert left_rows + 1 > max_rows or left_bytes + sizes[last] > max_bytes
