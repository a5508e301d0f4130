"""Updating aggregations of updating aggregations (retractions), checked against a plain-Python
reference whatever the batches and checkpoints in between."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from inmotion.streams.job import job_results
from inmotion.streams.operators import project
from inmotion.streams.plan import plans
from inmotion.streams.sql import parse
from inmotion.streams.updates import RegroupState

SCRIPT = """
CREATE TABLE payments (card STRING, amount BIGINT) WITH ('topic' = 'payments');
SELECT n, COUNT(*) AS cards, SUM(total) AS s, MIN(total) AS lo, MAX(total) AS hi, AVG(total) AS mean,
  COUNT(DISTINCT total) AS kinds, SUM(total) FILTER (WHERE total > 0) AS gains
FROM (SELECT card, SUM(amount) AS total, COUNT(*) AS n FROM payments GROUP BY card HAVING SUM(amount) > -5)
WHERE total <> 3 GROUP BY n
"""


def java_average(values: list[int]) -> int:
    quotient = abs(sum(values)) // len(values)
    return quotient if sum(values) >= 0 else -quotient


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(-4, 6)), max_size=8), min_size=1, max_size=6
    ),
    restart=st.integers(0, 6),
)
def test_an_aggregation_of_an_updating_aggregation_retracts_what_rows_changed(
    batches: list[list[tuple[str, int]]], restart: int
) -> None:
    # the cards' totals move between the groups of their payment counts, leave (HAVING, WHERE) and come back
    statements = parse(SCRIPT)
    [plan] = plans(statements, SCRIPT)
    state, saved = RegroupState(plan), dict[bytes, bytes | None]()
    sink: dict[int, dict[str, Any]] = {}
    for number, batch in enumerate(batches):
        if number == restart:  # a restart from the last checkpoint (nothing unsaved in between)
            state = RegroupState(plan)
            state.restore({key: value for key, value in saved.items() if value is not None})
        rows = pa.table({"card": [c for c, _ in batch], "amount": [a for _, a in batch]}, schema=_SCHEMA)
        state.add(rows, None)
        upserts, deletes = state.updates()
        for table, delete in ((deletes, True), (upserts, False)):
            for row in job_results(project(table, plan.select)) if table is not None else []:
                if delete:
                    del sink[row["n"]]
                else:
                    sink[row["n"]] = row
        saved.update(state.changes())
    payments = [payment for batch in batches for payment in batch]
    totals: dict[str, list[int]] = defaultdict(list)
    for card, amount in payments:
        totals[card].append(amount)
    by_count: dict[int, list[int]] = defaultdict(list)
    for amounts in totals.values():
        if sum(amounts) > -5 and sum(amounts) != 3:
            by_count[len(amounts)].append(sum(amounts))
    want = {
        n: {
            "n": n,
            "cards": len(values),
            "s": sum(values),
            "lo": min(values),
            "hi": max(values),
            "mean": java_average(values),
            "kinds": len(set(values)),
            "gains": sum(v for v in values if v > 0) if any(v > 0 for v in values) else None,
        }
        for n, values in by_count.items()
    }
    assert sink == want


_SCHEMA = pa.schema([("card", pa.string()), ("amount", pa.int64())])
