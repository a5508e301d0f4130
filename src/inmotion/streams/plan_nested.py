"""Planning queries inside queries (in FROM): a query that projects and filters is merged into
the one around it; Flink's `(SELECT *, PROCTIME() AS p FROM t)` adds processing time to a table;
an aggregation of a window aggregation, or of an updating GROUP BY, is a cascade."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from inmotion.streams.expressions import ARROW_TYPES, compile_expression
from inmotion.streams.operators import WINDOW_COLUMNS, Cascade, Plan, output_names
from inmotion.streams.plan_joins import aggregates, window_bounds
from inmotion.streams.sql import Query, Table, proctime_column

if TYPE_CHECKING:
    from inmotion.streams.plan import Planner


class NestedPlanner:
    """The queries-in-FROM part of a `Planner`, which plans the queries and reports errors."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.sql = planner.sql
        self.fail = planner.fail

    def cascade(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`SELECT ... FROM (an aggregation) GROUP BY ...`: of a window aggregation that selects
        its window_start and window_end (maybe renamed), grouped by those, a window aggregation
        of its groups, window by window (Flink's cascading window aggregation); of an updating
        GROUP BY, an updating aggregation of its rows, retracting a row's old values as it
        changes (Flink's group aggregation with retraction)."""
        node = select.args["from_"].this
        if not isinstance(node.this, exp.Select):
            raise self.fail("unsupported subquery (a SELECT is)", node)
        inner = self.planner.select(query, node.this, None)
        windowed = inner.window is not None and inner.window.kind != "SESSION" and inner.join is None
        if not inner.grouped or inner.rank or not (windowed or inner.window is None):
            raise self.fail(
                "a query aggregated again is a window aggregation (SELECT ... FROM TABLE(TUMBLE|HOP|CUMULATE(...))"
                " GROUP BY window_start, window_end, ...) or a GROUP BY without a window",
                node,
            )
        self.planner.refuse(select, inside=node)
        if any(isinstance(item, exp.Star) for item in select.expressions):
            raise self.fail("name the columns of an aggregation (SELECT * groups nothing)", select)
        outer = select.copy()
        outer.set("from_", None)
        columns: dict[str, pa.DataType] = {name: pa.null() for name in inner.columns}
        bounds = None
        if inner.window is not None:
            # the outer query's bounds are the inner's: named window_start and window_end, as a window aggregation's
            renamed = window_bounds(node.this)  # the inner query's name of each -> window_start or window_end
            named = {bound: name for name, bound in renamed.items()}
            if set(named) != {"window_start", "window_end"}:
                raise self.fail(
                    "the query aggregated again selects its window_start and window_end, for the aggregation to"
                    " group by",
                    node,
                )
            bounds = (named["window_start"], named["window_end"])
            for column in [c for c in outer.find_all(exp.Column) if c.name in renamed and c.table in ("", node.alias)]:
                bound = exp.column(renamed[column.name])
                column.replace(exp.alias_(bound, column.name) if column.parent is outer else bound)
            time_column = inner.source.column(inner.window.column)
            assert time_column is not None  # a window's column is its table's
            columns |= dict.fromkeys(WINDOW_COLUMNS, ARROW_TYPES[time_column.type])
        condition = outer.args.get("where")
        where_ = compile_expression(self.sql, condition.this, columns) if condition is not None else None
        plan = self.planner.aggregation(
            query, outer, inner.source, inner.window, columns, inner.where, outer.expressions, sink
        )
        return dataclasses.replace(
            plan, reads=inner.reads, join=inner.join, cascade=Cascade(inner, where_, bounds), node=select
        )

    def merged(self, select: exp.Select) -> exp.Select:
        """`FROM (SELECT items FROM t [WHERE c]) alias` that only projects and filters, merged
        into the query around it: its columns become the items they name, its WHERE joins the
        outer one (a view merged, as planners do). Other queries in FROM are planned apart."""
        from_ = select.args.get("from_")
        node = from_.this if from_ is not None else None
        if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select) or select.args.get("joins"):
            return select
        inner = self.merged(node.this)
        source = inner.args["from_"].this if inner.args.get("from_") else None
        simple = isinstance(source, exp.Table) and not isinstance(source, exp.Subquery)
        if not simple or any(inner.args.get(arg) for arg in _NOT_MERGED) or aggregates(inner):
            return select
        if any(isinstance(n, exp.Window) or _calls(n, "PROCTIME") for item in inner.expressions for n in item.walk()):
            return select
        table, window = self.planner.source(inner)
        items = self.planner.items(inner, table, window)
        named = {
            name: item.this if isinstance(item, exp.Alias) else item
            for name, item in zip(output_names(items), items, strict=True)
        }
        outer = select.copy()
        listed: list[exp.Expr] = []  # the outer items, `*` spelled out, each keeping its name
        for item in outer.expressions:
            if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                listed.extend(exp.alias_(exp.column(name), name) for name in named)
            else:
                listed.append(exp.alias_(item, item.name) if isinstance(item, exp.Column) else item)
        outer.set("expressions", listed)
        outer.set("from_", None)
        for column in [c for c in outer.find_all(exp.Column) if c.table in ("", node.alias)]:
            if column.name not in named:
                raise self.fail(f"unknown column {column.name} (the query in FROM gives {', '.join(named)})", column)
            value = named[column.name].copy()
            column.replace(value if isinstance(value, (exp.Column, exp.Literal)) else exp.paren(value))
        conditions = [w.this.copy() for w in (inner.args.get("where"), outer.args.get("where")) if w is not None]
        outer.set("where", exp.Where(this=exp.and_(*conditions)) if conditions else None)
        outer.set("from_", inner.args["from_"].copy())
        return outer

    def proctime_view(self, select: exp.Select) -> exp.Select:
        """`FROM (SELECT *, PROCTIME() AS p FROM t) alias` (how Flink's Nexmark adds processing
        time to a table) as FROM a table of t's columns and p."""
        from_ = select.args.get("from_")
        node = from_.this if from_ is not None else None
        if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select):
            return select
        inner = node.this
        if len(inner.expressions) != 2:
            return select
        star, stamp = inner.expressions
        source = inner.args["from_"].this if inner.args.get("from_") else None
        if not (
            isinstance(star, exp.Star)
            and isinstance(stamp, exp.Alias)
            and isinstance(stamp.this, exp.Anonymous)
            and stamp.this.name.upper() == "PROCTIME"
            and not stamp.this.expressions
            and isinstance(source, exp.Table)
            and isinstance(source.this, exp.Identifier)
            and not any(inner.args.get(arg) for arg in ("where", "group", "having", "joins", "order", "limit"))
        ):
            return select
        table = self.planner.table(source)
        view = dataclasses.replace(
            table, name=f"{table.name} with {stamp.alias}", columns=(*table.columns, proctime_column(stamp.alias))
        )
        self.planner.tables = {**self.planner.tables, view.name: view}
        alias = exp.TableAlias(this=exp.to_identifier(node.alias)) if node.alias else None
        rewritten = select.copy()
        rewritten.set("from_", exp.From(this=exp.Table(this=exp.to_identifier(view.name, quoted=True), alias=alias)))
        return rewritten


_NOT_MERGED = ("group", "having", "distinct", "order", "limit", "joins", "qualify", "with_")
"""What makes a query in FROM more than a projection and a filter: it is planned apart."""


def _calls(node: exp.Expr, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.upper() == name
