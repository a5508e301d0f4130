"""Planning queries with OVER: a Top-N (`ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)`
kept where the number is at most N) and OVER aggregates (`SUM(x) OVER (PARTITION BY ... ORDER
BY ts RANGE ...)`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import pyarrow as pa
from sqlglot import exp

from inmotion.streams.dialect import text_of
from inmotion.streams.expressions import AGGREGATES, ARROW_TYPES, compile_expression
from inmotion.streams.operators import Aggregate, Output, Over, Plan, Rank, output_names
from inmotion.streams.sql import Query, Table, interval_ms

if TYPE_CHECKING:
    from inmotion.streams.plan import Planner


class OverPlanner:
    """The OVER part of a `Planner`, which plans the rows ranked or aggregated and reports errors."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.sql = planner.sql
        self.fail = planner.fail

    def over(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`agg(x) OVER (PARTITION BY k ORDER BY ts [RANGE BETWEEN INTERVAL ... PRECEDING | ROWS
        BETWEEN n PRECEDING | ... UNBOUNDED PRECEDING] [AND CURRENT ROW])` over a table's rows:
        each row with aggregates of its partition's rows up to it in event time (every OVER of
        the query over one window, as Flink requires)."""
        windows = list(select.find_all(exp.Window))
        for node in windows:
            if not isinstance(node.this, AGGREGATES):
                raise self.fail(f"{text_of(node.this)} OVER (...) beside OVER aggregates is not supported", node)
        shapes = {
            (
                text_of(exp.Tuple(expressions=node.args.get("partition_by") or [])),
                text_of(node.args.get("order") or exp.Order()),
                text_of(node.args.get("spec") or exp.WindowSpec()),
            )
            for node in windows
        }
        if len(shapes) > 1:
            raise self.fail(
                "the OVER aggregates of a query are over one window (the same PARTITION BY, ORDER BY and frame)",
                windows[1],
            )
        for arg, what in (
            ("group", "GROUP BY"),
            ("having", "HAVING"),
            ("distinct", "SELECT DISTINCT"),
            ("order", "ORDER BY"),
            ("limit", "LIMIT"),
        ):
            if select.args.get(arg):
                raise self.fail(f"{what} beside OVER aggregates is not supported yet", select.args[arg])
        source, window = self.planner.source(select)
        if window is not None:
            raise self.fail("OVER aggregates over a window table function are not supported yet", select)
        window_node = windows[0]
        order = window_node.args.get("order")
        ordered = order.expressions if order is not None else []
        time = source.watermark.column if source.watermark is not None else None
        if (
            len(ordered) != 1
            or ordered[0].args.get("desc")
            or not isinstance(ordered[0].this, exp.Column)
            or ordered[0].this.name != time
        ):
            raise self.fail(
                f"an OVER window is ORDER BY the table's event-time column ({time or 'none: declare a WATERMARK'})"
                " ascending",
                order or window_node,
            )
        assert time is not None
        columns = {c.name: ARROW_TYPES[c.type] for c in source.columns}
        partition = tuple(
            Output(node.name if isinstance(node, exp.Column) else f"p{i}", compile_expression(self.sql, node, columns))
            for i, node in enumerate(window_node.args.get("partition_by") or [])
        )
        frame, preceding = self.frame(window_node)
        replaced: dict[str, str] = {}
        aggregates: list[Aggregate] = []
        for node in windows:
            if text_of(node) not in replaced:
                aggregate = self.planner.aggregate(node.this, columns, f"over{len(aggregates)}")
                if aggregate.distinct:
                    raise self.fail("DISTINCT in an OVER aggregate is not supported yet", node)
                aggregates.append(aggregate)
                replaced[text_of(node)] = aggregate.column
        outputs_columns = {**columns, **dict.fromkeys(replaced.values(), pa.null())}
        items = self.planner.items(select, source, None)
        outputs = tuple(
            Output(name, compile_expression(self.sql, item, outputs_columns, replaced))
            for name, item in zip(output_names(items), items, strict=True)
        )
        condition = select.args.get("where")
        where_ = compile_expression(self.sql, condition.this, columns) if condition is not None else None
        over = Over(partition, time, frame, preceding, tuple(aggregates))
        reads = self.planner.reads(select, source, None)
        return Plan(query, source, reads, where_, None, (), (), None, outputs, sink, node=select, over=over)

    def frame(self, window: exp.Window) -> tuple[str, int | None]:
        """An OVER window's frame: RANGE (a time, ms) or ROWS (a count) PRECEDING, to the current
        row; None for UNBOUNDED. Without one, RANGE UNBOUNDED PRECEDING (the SQL default)."""
        spec = window.args.get("spec")
        if spec is None:
            return "RANGE", None
        kind = str(spec.args.get("kind") or "").upper()
        start, side, end = spec.args.get("start"), str(spec.args.get("start_side") or "").upper(), spec.args.get("end")
        if side != "PRECEDING" or (end is not None and str(end).upper() != "CURRENT ROW"):
            raise self.fail("an OVER window's frame is ... PRECEDING [AND CURRENT ROW], as Flink's", spec)
        if str(start).upper() == "UNBOUNDED":
            return kind, None
        if kind == "RANGE" and isinstance(start, exp.Interval):
            return kind, interval_ms(self.sql, start)
        if kind == "ROWS" and isinstance(start, exp.Literal) and start.this.isdigit():
            return kind, int(start.this)
        raise self.fail("an OVER window's frame is RANGE BETWEEN INTERVAL ... or ROWS BETWEEN n ... PRECEDING", spec)

    def top_n(self, query: Query, outer: exp.Select, sink: Table | None) -> Plan:
        """`SELECT ... FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS
        rownum FROM ...) WHERE rownum <= N`: the first N rows of each partition. Over a window
        aggregation (`FROM (SELECT ... GROUP BY window_start, window_end, ...)`, partitioned by
        the window) a Window Top-N, ranked as each window fires; over a table or a join, a Top-N
        whose rows change as rows come (updates; with N = 1, Flink's deduplication)."""
        ranking = outer.args["from_"].this.this
        numbered = [
            item
            for item in ranking.expressions
            if isinstance(item, exp.Alias)
            and isinstance(item.this, exp.Window)
            and isinstance(item.this.this, exp.RowNumber)
        ]
        others = [item for item in ranking.expressions if not numbered or item is not numbered[0]]
        if len(numbered) != 1 or any(isinstance(node, exp.Window) for item in others for node in item.walk()):
            raise self.fail("a Top-N selects one ROW_NUMBER() OVER (...) AS name beside the rows it ranks", ranking)
        for arg in ("group", "having", "order", "limit", "distinct", "qualify"):
            if ranking.args.get(arg):
                raise self.fail(f"unsupported {arg.upper()} beside ROW_NUMBER() (a Top-N takes rownum <= N)", ranking)
        over = numbered[0].this
        if over.args.get("order") is None:
            raise self.fail("ROW_NUMBER() needs an ORDER BY", over)
        ranked = [*(over.args.get("partition_by") or []), *(o.this for o in over.args["order"].expressions)]
        source = ranking.args["from_"].this
        ranks_a_query = isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select)
        if ranks_a_query and len(others) == 1 and isinstance(others[0], exp.Star) and not ranking.args.get("where"):
            inner = source.this  # SELECT *, ROW_NUMBER() ... FROM (a query)
        else:
            inner = ranking.copy()
            inner.set("expressions", [item.copy() for item in others])
        plan = self.planner.select(query, inner, sink)
        if inner is not source.this:  # what it ranks by but does not select, it selects apart (hidden)
            hidden = [node for node in ranked if self.ranked_column(node, plan.columns, inner, quiet=True) is None]
            if hidden:
                extra = [exp.alias_(node.copy(), f"{_HIDDEN}{i}") for i, node in enumerate(hidden)]
                inner.set("expressions", [*inner.expressions, *extra])
                plan = self.planner.select(query, inner, sink)
        if plan.updating:
            raise self.fail(
                "ROW_NUMBER() over an updating query (GROUP BY without a window) is not supported yet", over
            )
        names = plan.columns
        partition = tuple(self.ranked_column(node, names, inner) for node in over.args.get("partition_by") or [])
        if plan.grouped and not {"window_start", "window_end"} <= set(partition):
            raise self.fail("a Window Top-N partitions by window_start and window_end (and more keys)", over)
        order_by = over.args["order"]
        order = tuple(
            (self.ranked_column(o.this, names, inner), bool(o.args.get("desc"))) for o in order_by.expressions
        )
        number = numbered[0].alias
        limit = self.rank_limit(outer.args.get("where"), number, outer)
        for arg in ("group", "having", "joins", "order", "limit", "distinct"):
            if outer.args.get(arg):
                raise self.fail(f"unsupported {arg.upper()} around a Top-N", outer)
        columns = dict.fromkeys([*names, number], pa.null())
        items: list[exp.Expr] = []
        for item in outer.expressions:
            if isinstance(item, exp.Star):
                items.extend(exp.column(n) for n in columns if not n.startswith(_HIDDEN))
            else:
                items.append(item)
        outputs = tuple(
            Output(n, compile_expression(self.sql, item, columns))
            for n, item in zip(output_names(items), items, strict=True)
        )
        # Flink's deduplication keeping the last row: the newest of rows of one time ranks first
        time = plan.source.watermark.column if plan.source.watermark is not None and plan.join is None else None
        numbers_shown = any(c.name == number for item in items for c in item.find_all(exp.Column))
        newest_first = limit == 1 and order == ((time, True),) and not numbers_shown and not plan.grouped
        return dataclasses.replace(plan, rank=Rank(partition, order, limit, number, outputs, newest_first))

    @overload
    def ranked_column(self, node: exp.Expr, names: Sequence[str], inner: exp.Select) -> str: ...
    @overload
    def ranked_column(self, node: exp.Expr, names: Sequence[str], inner: exp.Select, *, quiet: bool) -> str | None: ...

    def ranked_column(
        self, node: exp.Expr, names: Sequence[str], inner: exp.Select, *, quiet: bool = False
    ) -> str | None:
        """The ranked rows' column that `node` (in PARTITION BY or ORDER BY) is: one the query
        selects, by its name or as the item it selects (`B.price`, `B.ts AS bid_time`). None
        if it selects none, `quiet`ly."""
        for item, name in zip(inner.expressions, output_names(list(inner.expressions)), strict=True):
            selected = item.this if isinstance(item, exp.Alias) else item
            if name not in names:
                continue
            if isinstance(node, exp.Column) and isinstance(selected, exp.Column):
                if selected.name == node.name and (
                    not node.table or not selected.table or node.table == selected.table
                ):
                    return name
            elif text_of(selected) == text_of(node):
                return name
        if isinstance(node, exp.Column) and node.name in names:
            return node.name
        if quiet:
            return None
        raise self.fail(f"a Top-N ranks by columns the ranked query selects ({', '.join(names)})", node)

    def rank_limit(self, condition: exp.Where | None, number: str, outer: exp.Select) -> int:
        node = condition.this if condition is not None else None
        bounds = {exp.LTE: 0, exp.LT: -1, exp.EQ: 0}
        if (
            node is None
            or type(node) not in bounds
            or not isinstance(node.this, exp.Column)
            or node.this.name != number
            or not isinstance(node.expression, exp.Literal)
            or not node.expression.this.isdigit()
            or (isinstance(node, exp.EQ) and node.expression.this != "1")
        ):
            raise self.fail(f"a Top-N keeps WHERE {number} <= N (or < N, or = 1)", node or outer)
        return int(node.expression.this) + bounds[type(node)]


_HIDDEN = "__ranked"
"""The names of what a Top-N ranks by without selecting it: left out of the query's `*`."""


def ranks(select: exp.Select) -> bool:
    """Is `select` the outside of a Top-N: FROM a subquery that numbers rows with ROW_NUMBER()?"""
    from_ = select.args.get("from_")
    inner = from_.this if from_ is not None else None
    return (
        isinstance(inner, exp.Subquery)
        and isinstance(inner.this, exp.Select)
        and any(
            isinstance(w, exp.Window) and isinstance(w.this, exp.RowNumber) for w in inner.this.find_all(exp.Window)
        )
    )
