"""Outer joins of two streams: whatever the batches, the checkpoints and restarts in between,
the rows given (less those deleted) are the outer join of everything read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmotion.log import Log, connect
from inmotion.streams.job import Job, job_results
from inmotion.streams.joins import StreamJoinState
from inmotion.streams.operators import StreamJoin, project
from inmotion.streams.plan import plans
from inmotion.streams.sql import parse
from inmotion.testing import wait_until
from tests.streams.test_jobs import run_until, start

TABLES = """
CREATE TABLE orders (id BIGINT, amount BIGINT) WITH ('topic' = 'orders');
CREATE TABLE shipments (order_id BIGINT, carrier STRING) WITH ('topic' = 'shipments');
"""
_SCHEMAS = (
    pa.schema([("id", pa.int64()), ("amount", pa.int64())]),
    pa.schema([("order_id", pa.int64()), ("carrier", pa.string())]),
)


ON = {"LEFT": " AND s.carrier <> 'x'", "RIGHT": " AND o.amount <> 6", "FULL OUTER": ""}
"""Beside the keys, conditions on the side whose rows the join does not keep."""


def reference(kind: str, orders: list[tuple[int, int]], shipments: list[tuple[int, str]]) -> Counter[tuple[Any, ...]]:
    """The outer join of all the rows, (id, amount, carrier), with ON's conditions, where the
    amount is NULL or below 5 (WHERE)."""

    def match(order: tuple[int, int], shipment: tuple[int, str]) -> bool:
        extra = {"LEFT": shipment[1] != "x", "RIGHT": order[1] != 6}.get(kind, True)
        return order[0] == shipment[0] and extra

    rows: Counter[tuple[Any, ...]] = Counter()
    for order in orders:
        matches = [shipment for shipment in shipments if match(order, shipment)]
        rows.update((*order, carrier) for _, carrier in matches)
        if not matches and kind in ("LEFT", "FULL OUTER"):
            rows[(*order, None)] += 1
    for shipment in shipments:
        if kind in ("RIGHT", "FULL OUTER") and not any(match(order, shipment) for order in orders):
            rows[(None, None, shipment[1])] += 1
    return Counter({row: n for row, n in rows.items() if row[1] is None or row[1] < 5})


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["LEFT", "RIGHT", "FULL OUTER"]),
    batches=st.lists(
        st.tuples(
            st.integers(0, 1),
            st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=8,
    ),
    flushes=st.sets(st.integers(0, 7)),
    restart=st.integers(0, 8),
)
def test_an_outer_join_gives_each_row_alone_until_a_match_deletes_it(
    kind: str, batches: list[tuple[int, list[tuple[int, int]]]], flushes: set[int], restart: int
) -> None:
    script = (
        TABLES + "SELECT o.id, o.amount, s.carrier FROM orders o"
        f" {kind} JOIN shipments s ON o.id = s.order_id{ON[kind]} WHERE o.amount IS NULL OR o.amount < 5"
    )
    [plan] = plans(parse(script), script)
    assert isinstance(plan.join, StreamJoin)
    state, saved = StreamJoinState(plan.join), dict[bytes, bytes | None]()
    given_rows: Counter[tuple[Any, ...]] = Counter()

    def flush() -> None:  # a checkpoint: the changes given, the state saved
        upserts, deletes = state.updates()
        for table, sign in ((upserts, 1), (deletes, -1)):
            for row in job_results(project(table, plan.select)) if table is not None else []:
                given_rows[tuple(row.values())] += sign
        saved.update(state.changes())

    orders: list[tuple[int, int]] = []
    shipments: list[tuple[int, str]] = []
    for number, (side, values) in enumerate(batches):
        if number == restart:  # a restart from the last checkpoint
            flush()
            state = StreamJoinState(plan.join)
            state.restore({key: value for key, value in saved.items() if value is not None})
        if side == 0:
            rows = pa.table({"id": [k for k, _ in values], "amount": [a for _, a in values]}, schema=_SCHEMAS[0])
            orders.extend(values)
        else:
            carriers = ["x" if v == 6 else f"c{v}" for _, v in values]
            rows = pa.table({"order_id": [k for k, _ in values], "carrier": carriers}, schema=_SCHEMAS[1])
            shipments.extend(zip([k for k, _ in values], carriers, strict=True))
        _, joined = state.add(side, rows, None)
        for row in job_results(project(joined, plan.select)) if joined is not None else []:
            given_rows[tuple(row.values())] += 1
        if number in flushes:
            flush()
    flush()
    assert +given_rows == reference(kind, orders, shipments)
    assert all(n >= 0 for n in given_rows.values())  # nothing deleted that was not given


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return connect(f"sqlite:///{tmp_path}/outer.db")


def test_a_job_upserts_an_outer_joins_rows_and_deletes_those_a_match_replaced(log: Log) -> None:
    script = (
        TABLES
        + """
    CREATE TABLE tracked (id BIGINT, carrier STRING, PRIMARY KEY (id, carrier) NOT ENFORCED) WITH ('topic' = 'tracked');
    INSERT INTO tracked SELECT o.id, s.carrier FROM orders o LEFT JOIN shipments s ON o.id = s.order_id;
    """
    )
    for topic in ("orders", "shipments"):
        log.create_topic(topic)

    def append(topic: str, **data: Any) -> None:
        from inmotion.events import Event

        log.append_events(topic, [Event(type=topic, source="/shop", data=data)])

    def tracked() -> dict[bytes | None, dict[str, Any] | None]:
        from tests.streams.test_jobs import newest

        return newest(log, "tracked")

    append("orders", id=1, amount=10)
    append("orders", id=2, amount=20)
    append("shipments", order_id=2, carrier="ups")
    run_until(Job(log, script, name="tracked"), lambda: len(tracked()) == 2, what="an order alone, one shipped")
    assert tracked() == {b"1|None": {"id": 1, "carrier": None}, b"2|ups": {"id": 2, "carrier": "ups"}}
    job = Job(log, script, name="tracked")  # restarted: order 1 comes back alone, given already
    thread, stop, errors = start(job)
    append("shipments", order_id=1, carrier="dhl")
    wait_until(lambda: tracked().get(b"1|dhl") is not None, what="order 1 shipped")
    stop.set()
    thread.join()
    assert not errors
    assert tracked() == {b"1|None": None, b"2|ups": {"id": 2, "carrier": "ups"}, b"1|dhl": {"id": 1, "carrier": "dhl"}}
    with pytest.raises(Exception, match="a LEFT join updates its results, so the table needs a PRIMARY KEY"):
        Job(log, script.replace(", PRIMARY KEY (id, carrier) NOT ENFORCED", ""), name="unkeyed")
