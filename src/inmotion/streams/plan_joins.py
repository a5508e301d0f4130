"""Planning joins of two streams: regular joins (`FROM l JOIN r ON l.k = r.k`), interval joins
(`... AND l.ts BETWEEN r.ts - INTERVAL ... AND r.ts + INTERVAL ...`) and window joins (two
queries over window table functions joined on their windows). The joined rows' columns are
`alias.column`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import exp

from inmotion.streams.expressions import AGGREGATES, ARROW_TYPES, compile_expression
from inmotion.streams.operators import Output, Plan, Side, StreamJoin, WindowJoin, WindowSide, output_names
from inmotion.streams.sql import Query, Table, interval_ms

if TYPE_CHECKING:
    from inmotion.streams.plan import Planner


class JoinPlanner:
    """The join part of a `Planner`, which it plans each side and reports errors through."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.sql = planner.sql
        self.fail = planner.fail

    def window_join(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`FROM (SELECT ... FROM TABLE(TUMBLE(...))) L [LEFT|RIGHT|FULL] JOIN (SELECT ...) R ON
        L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end`: Flink's
        window join. A side may be a window aggregation (GROUP BY window_start, window_end, ...;
        inner joins), its bounds renamed (`window_start AS starttime`)."""
        [join] = select.args["joins"] if len(select.args["joins"]) == 1 else [None]
        if join is None:
            raise self.fail("a join of more than two tables is not supported yet", select.args["joins"][1])
        kind = join.args.get("side") or "INNER"
        if join.args.get("kind") not in (None, "INNER", "OUTER"):
            raise self.fail(f"unsupported {join.args['kind']} join of two windowed queries", join)
        for arg in ("group", "having", "order", "limit", "distinct", "qualify", "with_"):
            if select.args.get(arg):
                raise self.fail(f"{arg.upper()} over a join is not supported yet", select.args[arg])
        nodes = [select.args["from_"].this, join.this]
        sides: list[Plan] = []
        for node in nodes:
            if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select):
                raise self.fail("a window join joins two queries over window table functions", node)
            side = self.planner.select(query, node.this, None)
            if side.window is None or side.updating or side.window.kind == "SESSION" or side.join is not None:
                raise self.fail(
                    "each side of a window join selects from TABLE(TUMBLE|HOP|CUMULATE(...)), maybe grouped by"
                    " window_start, window_end and keys",
                    node,
                )
            if side.window.proctime:
                raise self.fail("window joins in processing time are not supported yet", node)
            if side.grouped and kind != "INNER":
                raise self.fail(f"a {kind} window join of window aggregations is not supported yet", node)
            if not {"window_start", "window_end"} <= set(window_bounds(node.this).values()):
                raise self.fail("each side of a window join selects window_start and window_end", node)
            sides.append(side)
        first, second = (side.window for side in sides)
        assert first is not None
        assert second is not None
        if dataclasses.replace(second, column=first.column) != first:
            raise self.fail("the two sides of a window join need the same window", join)
        aliases = [node.alias_or_name for node in nodes]
        if not all(aliases) or aliases[0] == aliases[1]:
            raise self.fail("each side of a window join needs an alias of its own: (SELECT ...) L", join)
        columns = {f"{a}.{name}": pa.null() for a, side in zip(aliases, sides, strict=True) for name in side.columns}
        bounds: set[str] = set()
        keys: list[tuple[exp.Expr, exp.Expr]] = []
        residual: list[exp.Expr] = []
        for condition in _conjuncts(join.args.get("on")):
            touched = {self.side_of(column, aliases, columns) for column in condition.find_all(exp.Column)}
            if touched == {0, 1} and isinstance(condition, exp.EQ):
                left, right = condition.this, condition.expression
                if {self.side_of(c, aliases, columns) for c in left.find_all(exp.Column)} == {1}:
                    left, right = right, left
                if isinstance(left, exp.Column) and isinstance(right, exp.Column):
                    bound = window_bounds(nodes[0].this).get(left.name)
                    if bound is not None and bound == window_bounds(nodes[1].this).get(right.name):
                        bounds.add(bound)
                        continue
                keys.append((left, right))
            elif kind == "INNER":
                residual.append(condition)
            else:
                raise self.fail(f"a {kind} window join takes equalities of the two sides in ON", condition)
        if bounds != {"window_start", "window_end"}:
            raise self.fail(
                "a window join's ON has L.window_start = R.window_start AND L.window_end = R.window_end", join
            )
        where_ = select.args.get("where")
        residual.extend(_conjuncts(where_.this) if where_ is not None else [])
        if where_ is not None and kind != "INNER":
            raise self.fail(f"WHERE over a {kind} window join is not supported yet", where_)
        window_sides = []
        for i, (alias, side) in enumerate(zip(aliases, sides, strict=True)):
            own = {name: t for name, t in columns.items() if name.startswith(f"{alias}.")}
            window_sides.append(
                WindowSide(side, alias, tuple(compile_expression(self.sql, pair[i], own) for pair in keys))
            )
        outputs = self.outputs(select, columns)
        rest = _all_of(residual)
        plan_join = WindowJoin(
            window_sides[0],
            window_sides[1],
            kind,
            compile_expression(self.sql, rest, columns) if rest is not None else None,
        )
        return Plan(query, sides[0].source, sides[0].reads, None, None, (), (), None, outputs, sink, join=plan_join)

    def stream_join(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`FROM l JOIN r ON l.k = r.k` (or the conditions in WHERE, with `FROM l, r`): an inner
        join of two streams; an interval join when the conditions bound the two sides' event
        times both ways (`l.ts BETWEEN r.ts - INTERVAL ... AND r.ts + INTERVAL ...`), as Flink
        plans one, else a regular join."""
        [join] = select.args["joins"] if len(select.args["joins"]) == 1 else [None]
        if join is None:
            raise self.fail("a join of more than two tables is not supported yet", select.args["joins"][1])
        kind = str(join.args.get("side") or "INNER").upper()  # INNER, LEFT, RIGHT or FULL
        if join.args.get("kind") not in (None, "INNER", "CROSS", "OUTER") or (
            kind != "INNER" and join.args.get("kind") == "CROSS"
        ):
            raise self.fail(f"unsupported {join.args['kind']} join of two streams", join)
        for arg in ("order", "limit", "distinct", "qualify", "with_"):
            if select.args.get(arg):
                raise self.fail(f"{arg.upper()} over a join is not supported yet", select.args[arg])
        left_node, right_node = select.args["from_"].this, join.this
        tables: list[Table] = []
        aggregations: list[Plan | None] = []  # a side that is a window aggregation
        for node in (left_node, right_node):
            if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
                aggregation = self.planner.select(query, node.this, None)
                if aggregation.window is not None and aggregation.window.proctime:
                    raise self.fail("a join with a window aggregation in processing time is not supported yet", node)
                if aggregation.window is None or not aggregation.grouped or aggregation.rank is not None:
                    raise self.fail(
                        "a query joined with a stream is a window aggregation (GROUP BY window_start, window_end, ...)",
                        node,
                    )
                if not node.alias:
                    raise self.fail("a joined query needs an alias: (SELECT ...) AS name", node)
                tables.append(aggregation.source)
                aggregations.append(aggregation)
            elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
                tables.append(self.planner.table(node))
                aggregations.append(None)
            else:
                raise self.fail("a join of two streams joins tables or window aggregations", node)
        if kind != "INNER" and any(aggregations):
            raise self.fail(f"a {kind} join with a window aggregation is not supported yet", join)
        if kind != "INNER" and aggregates(select):
            raise self.fail(f"GROUP BY over a {kind} join (its rows change) is not supported yet", select)
        if any(aggregations) and any(t.watermark is None for t in tables):
            raise self.fail("a join with a window aggregation fires its windows by both sides' watermarks", join)
        aliases = [left_node.alias_or_name, right_node.alias_or_name]
        if aliases[0] == aliases[1]:
            raise self.fail(f"both sides of the join are called {aliases[0]}: give one an alias", right_node)
        columns: dict[str, pa.DataType] = {}
        for alias, table, aggregated in zip(aliases, tables, aggregations, strict=True):
            if aggregated is None:
                columns.update({f"{alias}.{c.name}": ARROW_TYPES[c.type] for c in table.columns})
            else:
                columns.update({f"{alias}.{name}": pa.null() for name in aggregated.columns})
        on = _conjuncts(join.args.get("on"))
        after = _conjuncts((select.args.get("where") or exp.Where()).this)
        # an outer join's WHERE filters the joined rows, the kept ones with NULLs for the other side too
        conditions = on if kind != "INNER" else [*on, *after]
        times = [  # a window aggregation's rows have no event time: window_end is a value
            f"{a}.{t.watermark.column}" if t.watermark is not None and aggregated is None else None
            for a, t, aggregated in zip(aliases, tables, aggregations, strict=True)
        ]
        bounds: dict[str, int] = {}
        timing: list[exp.Expr] = []
        keys: list[tuple[exp.Expr, exp.Expr]] = []
        alone: list[list[exp.Expr]] = [[], []]
        residual: list[exp.Expr] = []
        for condition in conditions:
            touched = {self.side_of(column, aliases, columns) for column in condition.find_all(exp.Column)}
            if self.time_bound(condition, times, aliases, bounds):
                timing.append(condition)
                continue
            if touched == {0, 1} and isinstance(condition, exp.EQ):
                left, right = condition.this, condition.expression
                if {self.side_of(c, aliases, columns) for c in left.find_all(exp.Column)} == {1}:
                    left, right = right, left
                if {self.side_of(c, aliases, columns) for c in left.find_all(exp.Column)} == {0}:
                    keys.append((left, right))
                    continue
            if len(touched) == 1:
                alone[touched.pop()].append(condition)
            else:
                residual.append(condition)
        interval = (bounds["lower"], bounds["upper"]) if set(bounds) == {"lower", "upper"} else None
        if kind != "INNER":  # time bounds both ways: an outer interval join
            self.outer_conditions(kind, timing if interval is None else [], alone, residual)
            residual = after
        if interval is None:  # bounded one way only: conditions of a regular join
            residual.extend(timing)
        elif interval[0] > interval[1]:
            raise self.fail("the join's time interval is empty (its lower bound is above its upper one)", join)
        if not keys and interval is None:
            raise self.fail(
                "a join of two streams needs equal keys (ON l.k = r.k) or a time interval, as Flink's interval"
                f" joins: e.g. {times[0] or 'l.ts'} BETWEEN {times[1] or 'r.ts'} - INTERVAL '1' HOUR"
                f" AND {times[1] or 'r.ts'}",
                join,
            )
        sides = []
        for i, (alias, table, aggregated) in enumerate(zip(aliases, tables, aggregations, strict=True)):
            own = {name: t for name, t in columns.items() if name.startswith(f"{alias}.")}
            where_ = _all_of(alone[i])
            if aggregated is not None:
                where_compiled = compile_expression(self.sql, where_, own) if where_ is not None else None
                keys_compiled = tuple(compile_expression(self.sql, pair[i], own) for pair in keys)
                sides.append(Side(table, alias, aggregated.reads, where_compiled, keys_compiled, None, aggregated))
                continue
            outside = select.walk(prune=lambda node: isinstance(node, exp.Subquery))  # not a joined query's own
            used = {c.name for c in outside if isinstance(c, exp.Column) and self.side_of(c, aliases, columns) == i}
            stars = [  # `*` or `alias.*`
                item.table if isinstance(item, exp.Column) else ""
                for item in select.expressions
                if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star))
            ]
            if any(table in ("", alias) for table in stars):
                used.update(c.name for c in table.columns)
            if interval is not None and table.watermark is not None:
                used.add(table.watermark.column)
            sides.append(
                Side(
                    table,
                    alias,
                    tuple(c.name for c in table.columns if c.name in used) or (table.columns[0].name,),
                    compile_expression(self.sql, where_, own) if where_ is not None else None,
                    tuple(compile_expression(self.sql, pair[i], own) for pair in keys),
                    times[i],
                )
            )
        rest = _all_of(residual)
        join_plan = StreamJoin(
            sides[0],
            sides[1],
            interval,
            compile_expression(self.sql, rest, columns) if rest is not None else None,
            kind,
        )
        if aggregates(select):  # a GROUP BY of the joined rows: updates
            if any(isinstance(item, exp.Star) for item in select.expressions):
                raise self.fail("name the columns of an aggregation (SELECT * groups nothing)", select)
            grouped = self.planner.aggregation(query, select, tables[0], None, columns, None, select.expressions, sink)
            return dataclasses.replace(grouped, reads=sides[0].reads, join=join_plan)
        outputs = self.outputs(select, columns)
        return Plan(query, tables[0], sides[0].reads, None, None, (), (), None, outputs, sink, join=join_plan)

    def outer_conditions(
        self, kind: str, timing: list[exp.Expr], alone: list[list[exp.Expr]], residual: list[exp.Expr]
    ) -> None:
        """What an outer join's ON may hold besides equal keys and an interval: conditions on
        the side whose rows it does not keep (they only choose the matches). A time bound one
        way only, conditions on a kept side and on both sides are refused, for now."""
        kept = [condition for side in {"LEFT": [0], "RIGHT": [1], "FULL": [0, 1]}[kind] for condition in alone[side]]
        for found, what in (
            (timing, "a time bound one way only"),
            (kept, "a condition on a side whose every row it keeps"),
            (residual, "a condition on both sides"),
        ):
            if found:
                raise self.fail(f"{what} in a {kind} join's ON is not supported yet", found[0])

    def outputs(self, select: exp.Select, columns: Mapping[str, pa.DataType]) -> tuple[Output, ...]:
        """The SELECT list over the joined rows (`*`: every column of both sides; `L.*`, of one)."""
        items: list[exp.Expr] = []
        for item in select.expressions:
            side = item.table if isinstance(item, exp.Column) and isinstance(item.this, exp.Star) else None
            if isinstance(item, exp.Star) or side is not None:
                qualified = [name.split(".", 1) for name in columns]
                if side is not None and side not in {alias for alias, _ in qualified}:
                    raise self.fail(f"unknown table {side} (the join's are {', '.join(dict(qualified))})", item)
                items.extend(exp.column(name, table=alias) for alias, name in qualified if side in (None, alias))
            else:
                items.append(item)
        return tuple(
            Output(n, compile_expression(self.sql, item, columns))
            for n, item in zip(output_names(items), items, strict=True)
        )

    def side_of(self, column: exp.Column, aliases: list[str], columns: Mapping[str, pa.DataType]) -> int:
        """Which side of the join a column belongs to (0 left, 1 right)."""
        if column.table:
            if column.table not in aliases:
                raise self.fail(f"unknown table {column.table} (the join's are {', '.join(aliases)})", column)
            return aliases.index(column.table)
        found = [i for i, alias in enumerate(aliases) if f"{alias}.{column.name}" in columns]
        if len(found) != 1:
            problem = "is ambiguous: qualify it" if found else "is in neither table"
            raise self.fail(f"column {column.name} {problem} ({' or '.join(aliases)})", column)
        return found[0]

    def time_bound(
        self, condition: exp.Expr, times: list[str | None], aliases: list[str], bounds: dict[str, int]
    ) -> bool:
        """Take a condition on the two time columns into the interval (left time - right time
        within [lower, upper]): BETWEEN, a comparison or an equality, each side shifted by an
        INTERVAL. False when it is no such condition."""
        if isinstance(condition, exp.Between):
            low = exp.GTE(this=condition.this, expression=condition.args["low"])
            high = exp.LTE(this=condition.this, expression=condition.args["high"])
            trial: dict[str, int] = dict(bounds)
            if self.time_bound(low, times, aliases, trial) and self.time_bound(high, times, aliases, trial):
                bounds.update(trial)
                return True
            return False
        kinds: dict[type[exp.Expr], tuple[int, int]] = {
            exp.GTE: (1, 0),
            exp.GT: (1, 1),
            exp.LTE: (-1, 0),
            exp.LT: (-1, 1),
            exp.EQ: (0, 0),
        }
        if type(condition) not in kinds:
            return False
        a, b = (
            self.shifted_time(condition.this, times, aliases),
            self.shifted_time(condition.expression, times, aliases),
        )
        if a is None or b is None or a[0] == b[0]:
            return False
        direction, strict = kinds[type(condition)]
        if a[0] == 1:  # written as right ... left: flip it
            a, b, direction = b, a, -direction
        # left + a_shift (op) right + b_shift  ->  left - right (op) b_shift - a_shift
        limit = b[1] - a[1]
        if direction >= 0:
            bounds["lower"] = max(bounds.get("lower", limit + strict), limit + strict)
        if direction <= 0:
            bounds["upper"] = min(bounds.get("upper", limit - strict), limit - strict)
        return True

    def shifted_time(self, node: exp.Expr, times: list[str | None], aliases: list[str]) -> tuple[int, int] | None:
        """(side, shift in ms) if `node` is a side's time column, plus or minus an INTERVAL."""
        shift = 0
        if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.expression, exp.Interval):
            shift = interval_ms(self.sql, node.expression) * (1 if isinstance(node, exp.Add) else -1)
            node = node.this
        if not isinstance(node, exp.Column):
            return None
        for side, (alias, time) in enumerate(zip(aliases, times, strict=True)):
            if f"{node.table or alias}.{node.name}" == time and (node.table or self.unique(node.name, times)):
                return side, shift
        return None

    @staticmethod
    def unique(name: str, times: list[str | None]) -> bool:
        return sum(t is not None and t.endswith(f".{name}") for t in times) == 1


def window_bounds(select: exp.Select) -> dict[str, str]:
    """The window bounds a windowed query selects: output name -> window_start or window_end
    (through the query it reads, if it reads one: `SELECT starttime ... FROM (SELECT
    window_start AS starttime ...)`)."""
    from_ = select.args.get("from_")
    source = from_.this if from_ is not None else None
    if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select):
        known = window_bounds(source.this)
    else:
        known = {"window_start": "window_start", "window_end": "window_end"}
    found: dict[str, str] = {}
    for item in select.expressions:
        selected = item.this if isinstance(item, exp.Alias) else item
        if isinstance(selected, exp.Star):
            found.update(known)
        elif isinstance(selected, exp.Column) and selected.name in known:
            found[item.alias_or_name] = known[selected.name]
    return found


def aggregates(select: exp.Select) -> bool:
    """Does `select` aggregate: GROUP BY, or aggregates in its SELECT list?"""
    return select.args.get("group") is not None or any(
        isinstance(node, AGGREGATES) for item in select.expressions for node in item.walk()
    )


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    """The conditions ANDed in `node`."""
    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


def _all_of(conditions: list[exp.Expr]) -> exp.Expr | None:
    return exp.and_(*conditions) if conditions else None
