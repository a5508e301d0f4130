"""The planner: a query over the tables of a script becomes a `Plan`, the operators the engine
runs, each compiled once.

    scan(table) -> filter(WHERE) -> [window(TUMBLE | HOP | CUMULATE)] -> project(SELECT)
    scan(table) -> filter(WHERE) -> window -> aggregate(GROUP BY window_start, window_end, keys)
                -> filter(HAVING) -> project(SELECT) [-> rank(ROW_NUMBER() <= N) -> project]
    scan(table) -> filter(WHERE) -> aggregate(GROUP BY keys: updates) -> filter(HAVING) -> project
    scan(left), scan(right) -> filter(each side's conditions) -> interval join -> filter -> project
    scan(left), scan(right) -> each side's windowed query -> window join (inner, outer) -> project

Windows are TUMBLE, HOP, CUMULATE and SESSION. What a plan cannot express yet (regular joins,
ORDER BY, deduplication, DISTINCT, OVER aggregations) is an `InvalidSql` naming the construct,
its line and its column: never a plan that would give a different answer than Flink."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import pyarrow as pa
from sqlglot import exp

from inmotion.errors import InvalidSql
from inmotion.streams.dialect import TableArgument, text_of
from inmotion.streams.expressions import AGGREGATES, ARROW_TYPES, Compiled, compile_expression
from inmotion.streams.sql import Query, Statement, Table, interval_ms, where

WINDOW_COLUMNS = ("window_start", "window_end", "window_time")
WINDOW_FUNCTIONS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")
WRITABLE = ("key", "type", "subject")
"""The metadata an INSERT INTO sets on the events it appends."""


@dataclasses.dataclass(frozen=True)
class Window:
    """A window table function over `column` (event time, in milliseconds): TUMBLE(size), HOP
    (a window of `size` every `step`), CUMULATE (windows growing by `step` up to `size`) or
    SESSION (a key's rows until it is silent for `size`)."""

    kind: str
    column: str
    size: int
    """For SESSION, the gap: a session ends when its key is silent this long."""
    step: int
    offset: int = 0
    partition: tuple[str, ...] = ()
    """SESSION's PARTITION BY: each key's sessions apart."""

    @property
    def slice(self) -> int:
        """The pane every window is made of: a row is late once its pane's window has fired
        (Flink's slicing windows drop a row whose slice ended before the watermark)."""
        return math.gcd(self.size, self.step) if self.kind == "HOP" else self.step

    def describe(self) -> str:
        if self.kind == "SESSION":
            keys = f", per {', '.join(self.partition)}" if self.partition else ""
            return f"SESSION({self.column}, gap {self.size} ms{keys})"
        if self.kind == "TUMBLE":
            return f"TUMBLE({self.column}, size {self.size} ms)"
        what = "slide" if self.kind == "HOP" else "step"
        return f"{self.kind}({self.column}, size {self.size} ms, {what} {self.step} ms)"


@dataclasses.dataclass(frozen=True)
class Aggregate:
    function: str
    """COUNT, SUM, MIN, MAX or AVG."""
    argument: Compiled | None
    """Computed per row; None for COUNT(*)."""
    column: str
    """Where its value sits in the table of fired groups."""
    text: str


@dataclasses.dataclass(frozen=True)
class Output:
    name: str
    value: Compiled


@dataclasses.dataclass(frozen=True)
class Rank:
    """A Window Top-N: of each window's rows (by `partition`), the first `limit` in `order`
    ((column, descending) pairs), numbered in `column`; `outputs` read those rows."""

    partition: tuple[str, ...]
    order: tuple[tuple[str, bool], ...]
    limit: int
    column: str
    outputs: tuple[Output, ...]


@dataclasses.dataclass(frozen=True)
class Side:
    """One table of a join: its columns are named `alias.column` in the joined rows."""

    table: Table
    alias: str
    reads: tuple[str, ...]
    where: Compiled | None
    """The conditions on this side alone, applied before the join."""
    keys: tuple[Compiled, ...]
    """The equi-join's key expressions on this side (as many as the other side's)."""
    time: str
    """The watermarked column, qualified."""


@dataclasses.dataclass(frozen=True)
class IntervalJoin:
    """An interval join of two streams: rows with equal keys whose times differ by `lower` to
    `upper` ms (left time - right time), and `residual` holds on the joined row."""

    left: Side
    right: Side
    lower: int
    upper: int
    residual: Compiled | None

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.left, self.right


@dataclasses.dataclass(frozen=True)
class WindowSide:
    """One side of a window join: a query over a window table function (its columns are named
    `alias.column` in the joined rows), and the join's key expressions over them."""

    plan: Plan
    alias: str
    keys: tuple[Compiled, ...]

    @property
    def table(self) -> Table:
        return self.plan.source

    @property
    def reads(self) -> tuple[str, ...]:
        return self.plan.reads


@dataclasses.dataclass(frozen=True)
class WindowJoin:
    """A window join: the rows of each window of two streams, joined once the window is over
    (both sides' watermarks passed its end); `kind` is INNER, LEFT, RIGHT or FULL."""

    left: WindowSide
    right: WindowSide
    kind: str
    residual: Compiled | None

    @property
    def sides(self) -> tuple[WindowSide, WindowSide]:
        return self.left, self.right

    @property
    def window(self) -> Window:
        assert self.left.plan.window is not None
        return self.left.plan.window


@dataclasses.dataclass(frozen=True)
class Plan:
    query: Query
    source: Table
    reads: tuple[str, ...]
    """The source's columns the query uses: only those are decoded."""
    where: Compiled | None
    window: Window | None
    keys: tuple[Output, ...]
    """GROUP BY's expressions besides the window's bounds (named `key0`, ... unless a column)."""
    aggregates: tuple[Aggregate, ...]
    having: Compiled | None
    select: tuple[Output, ...]
    sink: Table | None

    grouped: bool = False
    """A window aggregation: `select` and `having` read the fired groups, not the rows."""
    rank: Rank | None = None
    """A Top-N over the window aggregation's rows: what the query gives is its outputs."""
    join: IntervalJoin | WindowJoin | None = None
    """A join: `source` is its left table, `select` reads the joined rows."""

    @property
    def updating(self) -> bool:
        """A GROUP BY without a window: each group's row is updated as its rows come."""
        return self.grouped and self.window is None

    @property
    def columns(self) -> tuple[str, ...]:
        outputs = self.rank.outputs if self.rank is not None else self.select
        return tuple(output.name for output in outputs)

    def explain(self) -> list[str]:
        """The operators, from the source to the sink, one line each."""
        sides = [(self.source, self.reads)] if self.join is None else [(s.table, s.reads) for s in self.join.sides]
        lines = []
        for table, reads in sides:
            lines.append(f"scan {table.name} (topic {table.topic}; reads {', '.join(reads) or 'nothing'})")
            if table.watermark is not None:
                lines.append(f"  watermark {table.watermark.column} - {table.watermark.delay_ms} ms")
        if isinstance(self.join, WindowJoin):
            join_ = self.join
            lines.append(f"window {join_.window.describe()} on each side")
            pair = f"{join_.left.alias} and {join_.right.alias}"
            lines.append(f"window join ({join_.kind}) {pair} on {len(join_.left.keys)} keys")
            lines.append("  state: each side's rows of each window, joined and dropped when the window fires")
        elif self.join is not None:
            join = self.join
            lines.append(
                f"interval join {join.left.alias} and {join.right.alias} on {len(join.left.keys)} keys,"
                f" {join.left.time} - {join.right.time} in [{join.lower}, {join.upper}] ms"
            )
            lines.append("  state: each side's rows, kept until the other side's watermark passes their interval")
        if self.where is not None:
            lines.append(f"filter {_clause(self.query, 'where')}")
        if self.window is not None:
            lines.append(f"window {self.window.describe()}")
        if self.updating:
            aggregates = ", ".join(a.text for a in self.aggregates) or "none"
            lines.append(f"group aggregate by {', '.join(k.name for k in self.keys) or '()'}: {aggregates}")
            lines.append("  state: one row per key, kept; each checkpoint upserts the keys that changed")
        elif self.grouped:
            keys = ["window_start", "window_end", *(k.name for k in self.keys)]
            aggregates = ", ".join(a.text for a in self.aggregates) or "none"
            lines.append(f"window aggregate by {', '.join(keys)}: {aggregates}")
            lines.append("  state: one row per window and key, dropped when the window fires")
            if self.having is not None:
                lines.append(f"filter {_clause(self.query, 'having')}")
        lines.append(f"project {', '.join(o.name for o in self.select)}")
        if self.rank is not None:
            order = ", ".join(f"{c} {'DESC' if d else 'ASC'}" for c, d in self.rank.order)
            lines.append(
                f"rank by {', '.join(self.rank.partition)} ORDER BY {order}: the first {self.rank.limit} of each"
            )
            lines.append(f"project {', '.join(self.columns)}")
        lines.append(f"insert into {self.sink.name} (topic {self.sink.topic})" if self.sink else "print")
        return lines


def plan(query: Query, tables: Mapping[str, Table], sql: str) -> Plan:
    """The plan of `query` over `tables` (by name); `sql` is the script, for error positions."""
    return _Planner(sql, tables).plan(query)


def plans(statements: Sequence[Statement], sql: str) -> list[Plan]:
    """The plans of a script's queries, each over the tables declared before it."""
    tables: dict[str, Table] = {}
    result = []
    for statement in statements:
        if isinstance(statement, Table):
            if statement.name in tables:
                raise InvalidSql(f"table {statement.name} is declared twice")
            tables[statement.name] = statement
        elif isinstance(statement, Query):
            result.append(plan(statement, tables, sql))
    return result


class _Planner:
    def __init__(self, sql: str, tables: Mapping[str, Table]) -> None:
        self.sql = sql
        self.tables = tables

    def fail(self, problem: str, node: exp.Expr) -> InvalidSql:
        """An error at `node`, or where the statement around it begins if it has no position."""
        position = where(self.sql, node)
        while position == (0, 0) and node.parent is not None:
            node = node.parent
            position = where(self.sql, node)
        return InvalidSql(problem, *position)

    def plan(self, query: Query) -> Plan:
        tree = query.tree
        select = tree.expression if isinstance(tree, exp.Insert) else tree
        if not isinstance(select, exp.Select):
            raise self.fail(f"unsupported query {select.key.upper()} (a SELECT is)", select)
        sink = self.sink(query, tree)
        result = self.top_n(query, select, sink) if _ranks(select) else self.select(query, select, sink)
        self.check_sink(result, tree)
        return result

    def select(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        if select.args.get("joins"):
            if isinstance(select.args["from_"].this, exp.Subquery):
                return self.window_join(query, select, sink)
            return self.interval_join(query, select, sink)
        self.refuse(select)
        source, window = self.source(select)
        columns = {c.name: ARROW_TYPES[c.type] for c in source.columns}
        if window is not None:
            time_type = columns[window.column]
            columns.update(dict.fromkeys(WINDOW_COLUMNS, time_type))
        condition = select.args.get("where")
        where_ = compile_expression(self.sql, condition.this, columns) if condition is not None else None
        items = self.items(select, source, window)
        group = select.args.get("group")
        has_aggregates = any(isinstance(node, AGGREGATES) for item in items for node in item.walk())
        if group is None and not has_aggregates:
            if window is not None and window.kind == "SESSION":
                raise self.fail(
                    "SESSION windows run in window aggregations (GROUP BY window_start, window_end, ...) only, for now",
                    select,
                )
            if select.args.get("having") is not None:
                raise self.fail("HAVING needs a GROUP BY", select.args["having"])
            names = _names(items)
            outputs = tuple(
                Output(n, compile_expression(self.sql, item, columns)) for n, item in zip(names, items, strict=True)
            )
            return Plan(query, source, self.reads(select, source, window), where_, window, (), (), None, outputs, sink)
        return self.aggregation(query, select, source, window, columns, where_, items, sink)

    def window_join(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`FROM (SELECT ... FROM TABLE(TUMBLE(...))) L [LEFT|RIGHT|FULL] JOIN (SELECT ...) R ON
        L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end`: Flink's
        window join."""
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
            side = self.select(query, node.this, None)
            if side.window is None or side.grouped or side.window.kind == "SESSION" or side.join is not None:
                raise self.fail(
                    "each side of a window join selects from TABLE(TUMBLE|HOP|CUMULATE(...)), without GROUP BY", node
                )
            if not {"window_start", "window_end"} <= set(side.columns):
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
                names = {c.name for c in (left, right) if isinstance(c, exp.Column)}
                both = isinstance(left, exp.Column) and isinstance(right, exp.Column)
                if both and len(names) == 1 and names <= {"window_start", "window_end"}:
                    bounds |= names
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
        items: list[exp.Expr] = []
        for item in select.expressions:
            if isinstance(item, exp.Star):
                items.extend(exp.column(name.split(".", 1)[1], table=name.split(".", 1)[0]) for name in columns)
            else:
                items.append(item)
        outputs = tuple(
            Output(n, compile_expression(self.sql, item, columns)) for n, item in zip(_names(items), items, strict=True)
        )
        rest = _all_of(residual)
        plan_join = WindowJoin(
            window_sides[0],
            window_sides[1],
            kind,
            compile_expression(self.sql, rest, columns) if rest is not None else None,
        )
        return Plan(query, sides[0].source, sides[0].reads, None, None, (), (), None, outputs, sink, join=plan_join)

    def interval_join(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        """`FROM l JOIN r ON l.k = r.k AND l.ts BETWEEN r.ts - INTERVAL ... AND r.ts + INTERVAL ...`
        (or the same conditions in WHERE, with `FROM l, r`): an interval join of two streams."""
        [join] = select.args["joins"] if len(select.args["joins"]) == 1 else [None]
        if join is None:
            raise self.fail("a join of more than two tables is not supported yet", select.args["joins"][1])
        if join.args.get("side") or join.args.get("kind") not in (None, "INNER", "CROSS"):
            raise self.fail("only inner joins of two streams (interval joins) are supported yet", join)
        for arg in ("group", "having", "order", "limit", "distinct", "qualify", "with_"):
            if select.args.get(arg):
                raise self.fail(f"{arg.upper()} over a join is not supported yet", select.args[arg])
        left_node, right_node = select.args["from_"].this, join.this
        for node in (left_node, right_node):
            if not (isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier)):
                raise self.fail("an interval join joins two tables (not subqueries or table functions)", node)
        tables = [self.table(left_node), self.table(right_node)]
        aliases = [left_node.alias_or_name, right_node.alias_or_name]
        if aliases[0] == aliases[1]:
            raise self.fail(f"both sides of the join are called {aliases[0]}: give one an alias", right_node)
        for table in tables:
            if table.watermark is None:
                raise self.fail(f"an interval join needs event time: table {table.name} has no WATERMARK", join)
        columns = {
            f"{a}.{c.name}": ARROW_TYPES[c.type] for a, t in zip(aliases, tables, strict=True) for c in t.columns
        }
        conditions = [*_conjuncts(join.args.get("on")), *_conjuncts((select.args.get("where") or exp.Where()).this)]
        times = [f"{a}.{t.watermark.column}" for a, t in zip(aliases, tables, strict=True)]  # type: ignore[union-attr]
        bounds: dict[str, int] = {}
        keys: list[tuple[exp.Expr, exp.Expr]] = []
        alone: list[list[exp.Expr]] = [[], []]
        residual: list[exp.Expr] = []
        for condition in conditions:
            touched = {self.side_of(column, aliases, columns) for column in condition.find_all(exp.Column)}
            if self.time_bound(condition, times, aliases, bounds):
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
        if set(bounds) != {"lower", "upper"}:
            raise self.fail(
                "a join of two streams needs a time interval, as Flink's interval joins: e.g."
                f" {times[0]} BETWEEN {times[1]} - INTERVAL '1' HOUR AND {times[1]}",
                join,
            )
        if bounds["lower"] > bounds["upper"]:
            raise self.fail("the join's time interval is empty (its lower bound is above its upper one)", join)
        sides = []
        for i, (alias, table) in enumerate(zip(aliases, tables, strict=True)):
            own = {name: t for name, t in columns.items() if name.startswith(f"{alias}.")}
            where_ = _all_of(alone[i])
            used = {
                c.name for c in select.walk() if isinstance(c, exp.Column) and self.side_of(c, aliases, columns) == i
            }
            if any(isinstance(item, exp.Star) for item in select.expressions):
                used.update(c.name for c in table.columns)
            used.add(table.watermark.column)  # type: ignore[union-attr]
            sides.append(
                Side(
                    table,
                    alias,
                    tuple(c.name for c in table.columns if c.name in used),
                    compile_expression(self.sql, where_, own) if where_ is not None else None,
                    tuple(compile_expression(self.sql, pair[i], own) for pair in keys),
                    times[i],
                )
            )
        items: list[exp.Expr] = []
        for item in select.expressions:
            if isinstance(item, exp.Star):
                items.extend(exp.column(name.split(".", 1)[1], table=name.split(".", 1)[0]) for name in columns)
            else:
                items.append(item)
        outputs = tuple(
            Output(n, compile_expression(self.sql, item, columns)) for n, item in zip(_names(items), items, strict=True)
        )
        rest = _all_of(residual)
        join_plan = IntervalJoin(
            sides[0],
            sides[1],
            bounds["lower"],
            bounds["upper"],
            compile_expression(self.sql, rest, columns) if rest is not None else None,
        )
        return Plan(query, tables[0], sides[0].reads, None, None, (), (), None, outputs, sink, join=join_plan)

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

    def time_bound(self, condition: exp.Expr, times: list[str], aliases: list[str], bounds: dict[str, int]) -> bool:
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

    def shifted_time(self, node: exp.Expr, times: list[str], aliases: list[str]) -> tuple[int, int] | None:
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
    def unique(name: str, times: list[str]) -> bool:
        return sum(t.endswith(f".{name}") for t in times) == 1

    def top_n(self, query: Query, outer: exp.Select, sink: Table | None) -> Plan:
        """`SELECT ... FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end
        ... ORDER BY ...) AS rownum FROM (a window aggregation)) WHERE rownum <= N`: the first N
        rows of each window (Flink's Window Top-N), ranked when the window fires."""
        ranking = outer.args["from_"].this.this
        for arg in ("where", "group", "having", "joins", "order", "limit", "distinct"):
            if ranking.args.get(arg):
                raise self.fail(f"unsupported {arg.upper()} beside ROW_NUMBER() (a Top-N takes rownum <= N)", ranking)
        numbered = [item for item in ranking.expressions if not isinstance(item, exp.Star)]
        if len(numbered) != 1 or not isinstance(numbered[0], exp.Alias) or len(ranking.expressions) != 2:
            raise self.fail("a Top-N selects *, ROW_NUMBER() OVER (...) AS name from its subquery", ranking)
        over = numbered[0].this
        inner = ranking.args.get("from_")
        if not isinstance(inner.this, exp.Subquery) or not isinstance(inner.this.this, exp.Select):
            raise self.fail("ROW_NUMBER() runs over a window aggregation in a subquery (a Window Top-N)", ranking)
        plan = self.select(query, inner.this.this, sink)
        if not plan.grouped or plan.updating:
            raise self.fail(
                "ROW_NUMBER() is supported over a window aggregation (a Window Top-N) only, for now", inner.this
            )
        names = plan.columns
        partition = tuple(self.ranked_column(node, names) for node in over.args.get("partition_by") or [])
        if not {"window_start", "window_end"} <= set(partition):
            raise self.fail("a Window Top-N partitions by window_start and window_end (and more keys)", over)
        order_by = over.args.get("order")
        if order_by is None:
            raise self.fail("ROW_NUMBER() needs an ORDER BY", over)
        order = tuple((self.ranked_column(o.this, names), bool(o.args.get("desc"))) for o in order_by.expressions)
        number = numbered[0].alias
        limit = self.rank_limit(outer.args.get("where"), number, outer)
        for arg in ("group", "having", "joins", "order", "limit", "distinct"):
            if outer.args.get(arg):
                raise self.fail(f"unsupported {arg.upper()} around a Top-N", outer)
        columns = dict.fromkeys([*names, number], pa.null())
        items: list[exp.Expr] = []
        for item in outer.expressions:
            items.extend(exp.column(n) for n in columns) if isinstance(item, exp.Star) else items.append(item)
        outputs = tuple(
            Output(n, compile_expression(self.sql, item, columns)) for n, item in zip(_names(items), items, strict=True)
        )
        return dataclasses.replace(plan, rank=Rank(partition, order, limit, number, outputs))

    def ranked_column(self, node: exp.Expr, names: Sequence[str]) -> str:
        if not isinstance(node, exp.Column) or node.name not in names:
            raise self.fail(f"a Top-N ranks by columns of its subquery ({', '.join(names)})", node)
        return node.name

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

    def check_sink(self, plan: Plan, tree: exp.Expr) -> None:
        """An INSERT INTO fills the sink's columns by position; metadata it can write: the
        event's key, type and subject."""
        if plan.sink is None:
            return
        if plan.updating and not plan.sink.primary_key:
            raise self.fail(
                f"INSERT INTO {plan.sink.name}: GROUP BY without a window updates its results, so the table"
                " needs a PRIMARY KEY (its rows are upserted by key, onto a compacted topic)",
                tree,
            )
        columns = [c for c in plan.sink.columns if not c.virtual]
        if len(columns) != len(plan.columns):
            names = ", ".join(c.name for c in columns)
            raise self.fail(
                f"INSERT INTO {plan.sink.name}: the query gives {len(plan.columns)} columns, the table takes"
                f" {len(columns)} ({names})",
                tree,
            )
        for column in columns:
            if column.metadata is not None and column.metadata not in WRITABLE:
                raise self.fail(
                    f"INSERT INTO {plan.sink.name}: metadata {column.metadata!r} of column {column.name} is"
                    f" read-only (declare it VIRTUAL; {', '.join(WRITABLE)} can be written)",
                    tree,
                )

    def refuse(self, select: exp.Select) -> None:
        """What the engine cannot run yet, named where it is written."""
        for arg, what in (
            ("joins", "JOIN"),
            ("order", "ORDER BY"),
            ("limit", "LIMIT"),
            ("distinct", "SELECT DISTINCT"),
            ("with_", "WITH"),
            ("qualify", "QUALIFY"),
        ):
            node = select.args.get(arg)
            if node:
                first = node[0] if isinstance(node, list) else node
                raise self.fail(f"{what} is not supported by the embedded engine yet", first)
        for node in select.walk():
            if isinstance(node, exp.Window):
                raise self.fail(f"OVER windows ({text_of(node.this)} OVER ...) are not supported yet", node)
            if isinstance(node, exp.Subquery) or (isinstance(node, exp.Select) and node is not select):
                raise self.fail("subqueries are not supported yet", node)
            if isinstance(node, exp.Distinct):
                raise self.fail(f"DISTINCT aggregates are not supported yet: {text_of(node.parent or node)}", node)

    def source(self, select: exp.Select) -> tuple[Table, Window | None]:
        from_ = select.args.get("from_")
        if from_ is None:
            raise self.fail("a query reads a table: SELECT ... FROM table", select)
        node = from_.this
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous) and node.this.name.upper() == "TABLE":
            return self.window(node.this)
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            return self.table(node), None
        raise self.fail(f"unsupported FROM {text_of(node)} (a table, or TABLE(TUMBLE|HOP|CUMULATE(...)))", node)

    def table(self, node: exp.Table) -> Table:
        table = self.tables.get(node.name)
        if table is None:
            known = ", ".join(self.tables) or "none: CREATE TABLE one first"
            raise self.fail(f"unknown table {node.name} (the tables are {known})", node)
        return table

    def window(self, call: exp.Anonymous) -> tuple[Table, Window]:
        [function] = call.expressions if len(call.expressions) == 1 else [None]
        kind = function.name.upper() if isinstance(function, exp.Anonymous) else ""
        if function is None or kind not in WINDOW_FUNCTIONS:
            name = text_of(function) if isinstance(function, exp.Expr) else text_of(call)
            raise self.fail(f"unsupported table function {name} (TUMBLE, HOP, CUMULATE and SESSION are)", call)
        args = list(function.expressions)
        if any(isinstance(arg, exp.Kwarg) for arg in args):
            args = self.named(function, args)
        wanted = {"TUMBLE": 4, "SESSION": 3}.get(kind, 5)
        least = wanted if kind == "SESSION" else wanted - 1
        if not least <= len(args) <= wanted:
            optional = "" if kind == "SESSION" else "[, offset]"
            raise self.fail(f"{kind} takes (TABLE t, DESCRIPTOR(time column), {self.sizes(kind)}{optional})", function)
        data, descriptor, *intervals = args
        if not isinstance(data, TableArgument) or (data.args.get("partition_by") and kind != "SESSION"):
            raise self.fail(f"{kind}'s first argument is TABLE name", data)
        table = self.table(data.this)
        partition = tuple(self.column_of(table, c) for c in data.args.get("partition_by") or [])
        if not (isinstance(descriptor, exp.Anonymous) and descriptor.name.upper() == "DESCRIPTOR"):
            raise self.fail(f"{kind}'s second argument is DESCRIPTOR(time column)", descriptor)
        column = descriptor.expressions[0].name if descriptor.expressions else ""
        if table.watermark is None or table.watermark.column != column:
            raise self.fail(
                f"{kind} needs an event-time column: {column or '?'} is not {table.name}'s watermarked column",
                descriptor,
            )
        lengths = [self.interval(kind, arg) for arg in intervals]
        offset = lengths[-1] if len(args) == wanted and kind != "SESSION" else 0
        if kind in ("TUMBLE", "SESSION"):
            size = step = lengths[0]
        else:  # HOP(slide, size), CUMULATE(step, size)
            step, size = lengths[0], lengths[1]
        if size <= 0 or step <= 0:
            raise self.fail(f"{kind}'s sizes must be positive", function)
        if size % step:
            raise self.fail(
                f"{kind}'s size must be a whole multiple of its {'slide' if kind == 'HOP' else 'step'}", function
            )
        if offset and kind == "CUMULATE":
            raise self.fail("CUMULATE with an offset is not supported yet", function)
        return table, Window(kind, column, size, step, offset, partition)

    def column_of(self, table: Table, node: exp.Expr) -> str:
        if not isinstance(node, exp.Column) or table.column(node.name) is None:
            raise self.fail(f"PARTITION BY takes columns of {table.name}", node)
        return node.name

    def named(self, function: exp.Anonymous, args: list[exp.Expr]) -> list[exp.Expr]:
        names = {
            "TUMBLE": ["DATA", "TIMECOL", "SIZE", "OFFSET"],
            "HOP": ["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"],
            "SESSION": ["DATA", "TIMECOL", "GAP"],
        }
        order = names.get(function.name.upper(), ["DATA", "TIMECOL", "STEP", "SIZE"])
        given = {}
        for arg in args:
            if not isinstance(arg, exp.Kwarg) or arg.this.name.upper() not in order:
                raise self.fail(f"{function.name} takes the named arguments {', '.join(order)}", arg)
            given[arg.this.name.upper()] = arg.expression
        present = [name for name in order if name in given]
        if present != order[: len(present)]:
            raise self.fail(f"{function.name}: arguments missing before {present[-1]}", function)
        return [given[name] for name in present]

    def interval(self, kind: str, node: exp.Expr) -> int:
        if not isinstance(node, exp.Interval):
            raise self.fail(f"{kind} takes INTERVAL sizes ({self.sizes(kind)})", node)
        return interval_ms(self.sql, node)

    @staticmethod
    def sizes(kind: str) -> str:
        return {"TUMBLE": "size", "HOP": "slide, size", "CUMULATE": "step, size", "SESSION": "gap"}[kind]

    def sink(self, query: Query, tree: exp.Expr) -> Table | None:
        if query.sink is None:
            return None
        assert isinstance(tree, exp.Insert)
        table = self.tables.get(query.sink)
        if table is None:
            raise self.fail(
                f"INSERT INTO {query.sink}: no such table (CREATE TABLE it first, over its topic)", tree.this
            )
        return table

    def items(self, select: exp.Select, source: Table, window: Window | None) -> list[exp.Expr]:
        """The SELECT list with `*` spelled out as the columns it means."""
        items: list[exp.Expr] = []
        for item in select.expressions:
            if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                names = [c.name for c in source.columns] + (list(WINDOW_COLUMNS) if window else [])
                items.extend(exp.column(name) for name in names)
            else:
                items.append(item)
        return items

    def reads(self, select: exp.Select, source: Table, window: Window | None) -> tuple[str, ...]:
        used = {node.name for node in select.walk() if isinstance(node, exp.Column)}
        if any(isinstance(item, exp.Star) for item in select.expressions):  # not COUNT(*)
            used.update(c.name for c in source.columns)
        if window is not None:
            used.add(window.column)
        if source.watermark is not None:
            used.add(source.watermark.column)
        # a batch is as long as its columns: a query that uses none still reads one
        return tuple(c.name for c in source.columns if c.name in used) or (source.columns[0].name,)

    def aggregation(
        self,
        query: Query,
        select: exp.Select,
        source: Table,
        window: Window | None,
        columns: dict[str, pa.DataType],
        where_: Compiled | None,
        items: list[exp.Expr],
        sink: Table | None,
    ) -> Plan:
        group = select.args.get("group")
        grouping = list(group.expressions) if group is not None else []
        bounds = {g.name for g in grouping if isinstance(g, exp.Column) and g.name in ("window_start", "window_end")}
        if window is not None and bounds != {"window_start", "window_end"}:
            raise self.fail(
                "a window aggregation groups by window_start and window_end (GROUP BY without a window table"
                " function gives updating results)",
                group or select,
            )
        input_columns = {name: t for name, t in columns.items() if name not in WINDOW_COLUMNS}
        keys: list[Output] = []
        replaced: dict[str, str] = {}
        grouped_columns: dict[str, pa.DataType] = {}
        if window is not None:
            grouped_columns.update(window_start=columns["window_start"], window_end=columns["window_end"])
        for node in grouping:
            if isinstance(node, exp.Column) and node.name in ("window_start", "window_end"):
                continue
            if isinstance(node, exp.Column) and node.name == "window_time":
                raise self.fail("GROUP BY window_time is not supported yet (window_start, window_end are)", node)
            name = node.name if isinstance(node, exp.Column) else f"key{len(keys)}"
            keys.append(Output(name, compile_expression(self.sql, node, input_columns)))
            replaced[text_of(node)] = name
            grouped_columns[name] = pa.null()
        if window is not None and window.kind == "SESSION" and sorted(k.name for k in keys) != sorted(window.partition):
            raise self.fail(
                "a SESSION window aggregation groups by window_start, window_end and SESSION's PARTITION BY"
                f" columns ({', '.join(window.partition) or 'none'})",
                group or select,
            )
        aggregates: list[Aggregate] = []
        having = select.args.get("having")
        for node in [n for item in [*items, *([having.this] if having else [])] for n in item.walk()]:
            if isinstance(node, AGGREGATES) and text_of(node) not in replaced:
                aggregates.append(self.aggregate(node, input_columns, f"agg{len(aggregates)}"))
                replaced[text_of(node)] = aggregates[-1].column
                grouped_columns[aggregates[-1].column] = pa.null()
        if window is not None:
            grouped_columns["window_time"] = columns["window_time"]
            replaced.update({name: name for name in WINDOW_COLUMNS})
        outputs = tuple(
            Output(n, self.grouped(item, grouped_columns, replaced))
            for n, item in zip(_names(items), items, strict=True)
        )
        having_ = self.grouped(having.this, grouped_columns, replaced) if having is not None else None
        return Plan(
            query,
            source,
            self.reads(select, source, window),
            where_,
            window,
            tuple(keys),
            tuple(aggregates),
            having_,
            outputs,
            sink,
            grouped=True,
        )

    def aggregate(self, node: exp.Expr, columns: Mapping[str, pa.DataType], column: str) -> Aggregate:
        function = type(node).__name__.upper()
        argument = node.this
        if isinstance(node, exp.Count) and isinstance(argument, exp.Star):
            return Aggregate("COUNT", None, column, text_of(node))
        if argument is None or node.expressions:
            raise self.fail(f"{function} takes one argument", node)
        return Aggregate(function, compile_expression(self.sql, argument, columns), column, text_of(node))

    def grouped(self, node: exp.Expr, columns: Mapping[str, pa.DataType], replaced: Mapping[str, str]) -> Compiled:
        """An expression over the groups: only the window's bounds, keys and aggregates."""
        for column in node.find_all(exp.Column):
            inside = any(isinstance(parent, AGGREGATES) for parent in _ancestors(column))
            if not inside and column.name not in columns and text_of(column) not in replaced:
                raise self.fail(f"column {column.name} is neither in GROUP BY nor inside an aggregate", column)
        return compile_expression(self.sql, node, columns, replaced)


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


def _ranks(select: exp.Select) -> bool:
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


def _ancestors(node: exp.Expr) -> list[exp.Expr]:
    found = []
    parent = node.parent
    while parent is not None:
        found.append(parent)
        parent = parent.parent
    return found


def _names(items: list[exp.Expr]) -> list[str]:
    """The output columns' names, as Flink gives them: the alias, else the column's name, else
    EXPR$<position>; a name taken already gets a number (sensor, sensor0)."""
    names: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, exp.Alias):
            name = item.alias
        elif isinstance(item, exp.Column):
            name = item.name
        else:
            name = f"EXPR${index}"
        unique, n = name, 0
        while unique in names:
            unique, n = f"{name}{n}", n + 1
        names.append(unique)
    return names


def _clause(query: Query, arg: str) -> str:
    tree = query.tree.expression if isinstance(query.tree, exp.Insert) else query.tree
    node = tree.args.get(arg)
    return text_of(node.this) if node is not None else ""
