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
from tests.streams.test_engine import JOINED, append_orders_and_shipments, stamped
from tests.streams.test_jobs import run_until, sink, start

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


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["LEFT", "RIGHT", "FULL OUTER"]),
    orders=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4000)), max_size=12),
    shipments=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4000)), max_size=12),
)
def test_an_outer_interval_join_gives_the_rows_alone_once_their_interval_is_over(
    kind: str, orders: list[tuple[int, int]], shipments: list[tuple[int, int]]
) -> None:
    with connect("memory://") as log:
        append_orders_and_shipments(log, sorted(orders, key=lambda o: o[1]), sorted(shipments, key=lambda s: s[1]))
        query = (
            f"SELECT o.id, o.amount, s.carrier FROM orders o {kind} JOIN shipments s"
            " ON o.id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' SECOND"
        )
        found = Counter(tuple(r.values()) for _, t in Job(log, JOINED + query).query() for r in job_results(t))
    orders, shipments = sorted(orders, key=lambda o: o[1]), sorted(shipments, key=lambda s: s[1])
    pairs = [
        (n, m)
        for n, (key, at) in enumerate(orders)
        for m, (other, shipped) in enumerate(shipments)
        if key == other and at <= shipped <= at + 1000
    ]
    want: Counter[tuple[Any, ...]] = Counter((orders[n][0], n, f"c{m}") for n, m in pairs)
    if kind in ("LEFT", "FULL OUTER"):
        want.update((key, n, None) for n, (key, _) in enumerate(orders) if not any(p[0] == n for p in pairs))
    if kind in ("RIGHT", "FULL OUTER"):
        want.update((None, None, f"c{m}") for m in range(len(shipments)) if not any(p[1] == m for p in pairs))
    assert found == want


def test_a_job_appends_the_orders_no_shipment_followed_within_the_interval(log: Log) -> None:
    script = """
    CREATE TABLE orders (id BIGINT, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts) WITH ('topic' = 'orders');
    CREATE TABLE shipments (order_id BIGINT, carrier STRING, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts)
      WITH ('topic' = 'shipments');
    CREATE TABLE followed (id BIGINT, carrier STRING) WITH ('topic' = 'followed');
    INSERT INTO followed SELECT o.id, s.carrier FROM orders o
    LEFT JOIN shipments s ON o.id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;
    """
    for topic in ("orders", "shipments"):
        log.create_topic(topic)
    log.append_events("orders", [stamped("orders", 0, id=1), stamped("orders", 1_000, id=2)])
    log.append_events("shipments", [stamped("shipments", 5_000, order_id=1, carrier="dhl")])
    log.append_events("orders", [stamped("orders", 21_000, id=3)])  # both watermarks pass order 2's interval
    log.append_events("shipments", [stamped("shipments", 20_000, order_id=9, carrier="ups")])
    run_until(Job(log, script, name="followed"), lambda: len(sink(log, "followed")) == 2, what="two rows")
    assert sorted((data["id"], data["carrier"]) for _, data, _ in sink(log, "followed")) == [(1, "dhl"), (2, None)]
