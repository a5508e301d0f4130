"""The planner: a query over the tables of a script becomes a `Plan`, the operators the engine
runs, each compiled once (joins in plan_joins, queries in FROM in plan_nested, Top-N and OVER
aggregates in plan_over).

    scan(table) -> filter(WHERE) -> [window(TUMBLE | HOP | CUMULATE)] -> project(SELECT)
    scan(table) -> filter(WHERE) -> window -> aggregate(GROUP BY window_start, window_end, keys)
                -> filter(HAVING) -> project(SELECT) [-> rank(ROW_NUMBER() <= N) -> project]
                [-> filter(WHERE) -> aggregate each fired window again (GROUP BY its bounds, keys) -> ...]
    scan(table) -> filter(WHERE) -> aggregate(GROUP BY keys: updates) -> filter(HAVING) -> project
    scan(left), scan(right) -> filter(each side's conditions) -> [interval | outer] join -> filter -> project
    scan(left), scan(right) -> each side's windowed query (or window aggregation) -> window join -> project
    scan(table) -> filter(WHERE) -> over(PARTITION BY keys ORDER BY time, frame) -> project

Windows are TUMBLE, HOP, CUMULATE and SESSION, in event time (a watermarked column) or in
processing time (a PROCTIME() column). What a plan cannot express yet (ORDER BY,
SELECT DISTINCT, OVER in processing time) is an `InvalidSql` naming
the construct, its line and its column: never a plan that would give a different answer than Flink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
from sqlglot import exp

from inmotion.errors import InvalidSql
from inmotion.streams.dialect import TableArgument, text_of
from inmotion.streams.expressions import AGGREGATES, ARROW_TYPES, Compiled, compile_expression
from inmotion.streams.operators import (
    WINDOW_COLUMNS,
    WINDOW_FUNCTIONS,
    WRITABLE,
    Aggregate,
    Output,
    Plan,
    Window,
    output_names,
)
from inmotion.streams.plan_joins import JoinPlanner, aggregates
from inmotion.streams.plan_nested import NestedPlanner
from inmotion.streams.plan_over import OverPlanner, ranks
from inmotion.streams.sql import Query, Statement, Table, interval_ms, where


def plan(query: Query, tables: Mapping[str, Table], sql: str) -> Plan:
    """The plan of `query` over `tables` (by name); `sql` is the script, for error positions."""
    return Planner(sql, tables).plan(query)


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


class Planner:
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
        ranked = ranks(select)
        result = OverPlanner(self).top_n(query, select, sink) if ranked else self.select(query, select, sink)
        self.check_sink(result, tree)
        return result

    def select(self, query: Query, select: exp.Select, sink: Table | None) -> Plan:
        if select.args.get("joins"):
            joins = JoinPlanner(self)
            nodes = [select.args["from_"].this, *(join.this for join in select.args["joins"])]
            if all(isinstance(node, exp.Subquery) for node in nodes):
                return joins.window_join(query, select, sink)
            return joins.stream_join(query, select, sink)
        nested = NestedPlanner(self)
        select = self.group_window(nested.merged(nested.proctime_view(select)))
        from_ = select.args.get("from_")
        if from_ is not None and isinstance(from_.this, exp.Subquery) and aggregates(select):
            return nested.cascade(query, select, sink)
        if any(isinstance(n, exp.Window) and isinstance(n.this, AGGREGATES) for n in select.find_all(exp.Window)):
            return OverPlanner(self).over(query, select, sink)
        self.refuse(select)
        source, window = self.source(select)
        columns = {c.name: ARROW_TYPES[c.type] for c in source.columns}
        if window is not None:
            time_type = columns[window.column]
            columns.update(dict.fromkeys(WINDOW_COLUMNS, time_type))
        condition = select.args.get("where")
        where_ = compile_expression(self.sql, condition.this, columns) if condition is not None else None
        items = self.items(select, source, window)
        if select.args.get("group") is None and not aggregates(select):
            if window is not None and window.kind == "SESSION":
                raise self.fail(
                    "SESSION windows run in window aggregations (GROUP BY window_start, window_end, ...) only, for now",
                    select,
                )
            if select.args.get("having") is not None:
                raise self.fail("HAVING needs a GROUP BY", select.args["having"])
            names = output_names(items)
            outputs = tuple(
                Output(n, compile_expression(self.sql, item, columns)) for n, item in zip(names, items, strict=True)
            )
            reads = self.reads(select, source, window)
            return Plan(query, source, reads, where_, window, (), (), None, outputs, sink, node=select)
        return self.aggregation(query, select, source, window, columns, where_, items, sink)

    def group_window(self, select: exp.Select) -> exp.Select:
        """Flink's older group windows as the window table function they mean: `FROM t GROUP BY
        k, TUMBLE(ts, size)` with TUMBLE_START(ts, size) / TUMBLE_END / TUMBLE_ROWTIME is `FROM
        TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size)) GROUP BY k, window_start, window_end`, with
        window_start / window_end / window_time; HOP and SESSION (its keys partition it) alike."""
        group = select.args.get("group")
        calls = [
            node
            for node in (group.expressions if group is not None else [])
            if isinstance(node, exp.Anonymous) and node.name.upper() in ("TUMBLE", "HOP", "SESSION")
        ]
        if group is None or not calls:
            return select
        if len(calls) > 1:
            raise self.fail("a GROUP BY takes one group window", calls[1])
        [call] = calls
        source = select.args["from_"].this
        time = call.expressions[0] if call.expressions else None
        if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
            raise self.fail(f"a {call.name.upper()} group window reads a table", source)
        if not isinstance(time, exp.Column):
            raise self.fail(f"{call.name.upper()}'s first argument is the time column", call)
        kind = call.name.upper()
        keys = [node for node in group.expressions if node is not call]
        partition = [exp.column(k.name) for k in keys if isinstance(k, exp.Column)] if kind == "SESSION" else None
        table = TableArgument(this=exp.Table(this=source.this.copy()), partition_by=partition)
        descriptor = exp.Anonymous(this="DESCRIPTOR", expressions=[exp.column(time.name)])
        window = exp.Anonymous(this=kind, expressions=[table, descriptor, *(e.copy() for e in call.expressions[1:])])
        rewritten = select.copy()
        rewritten.set("from_", exp.From(this=exp.Table(this=exp.Anonymous(this="TABLE", expressions=[window]))))
        rewritten.set(
            "group",
            exp.Group(expressions=[*(k.copy() for k in keys), exp.column("window_start"), exp.column("window_end")]),
        )
        bounds = {"START": "window_start", "END": "window_end", "ROWTIME": "window_time"}
        for node in list(rewritten.find_all(exp.Anonymous)):
            prefix, _, bound = node.name.upper().partition("_")
            if prefix in ("TUMBLE", "HOP", "SESSION") and bound:
                if bound not in bounds:
                    raise self.fail(f"unsupported {node.name.upper()} (_START, _END and _ROWTIME are)", node)
                node.replace(exp.column(bounds[bound]))
        return rewritten

    def check_sink(self, plan: Plan, tree: exp.Expr) -> None:
        """An INSERT INTO fills the sink's columns by position; metadata it can write: the
        event's key, type and subject."""
        if plan.sink is None:
            return
        if plan.updating and not plan.sink.primary_key:
            raise self.fail(
                f"INSERT INTO {plan.sink.name}: {plan.updates} updates its results, so the table needs a PRIMARY KEY"
                " (its rows are upserted by key, onto a compacted topic)",
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

    def refuse(self, select: exp.Select, *, inside: exp.Expr | None = None) -> None:
        """What the engine cannot run yet, named where it is written (but `inside` the query
        it reads, planned apart)."""
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
        for node in select.walk(prune=lambda node: node is inside):
            if node is inside:
                continue
            if isinstance(node, exp.Window):
                raise self.fail(f"OVER windows ({text_of(node.this)} OVER ...) are not supported yet", node)
            if isinstance(node, exp.Subquery) or (isinstance(node, exp.Select) and node is not select):
                raise self.fail(
                    "this query inside a query is not supported yet (in FROM: one that projects and filters, a"
                    " Top-N's, a window or GROUP BY aggregation aggregated again)",
                    node,
                )

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
        time = table.column(column)
        proctime = time is not None and time.proctime
        if not proctime and (table.watermark is None or table.watermark.column != column):
            raise self.fail(
                f"{kind} needs a time attribute: {column or '?'} is neither {table.name}'s watermarked column nor"
                " a processing-time one (name AS PROCTIME())",
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
        return table, Window(kind, column, size, step, offset, partition, proctime)

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
            taken = isinstance(node, exp.Column) and node.name in (k.name for k in keys)  # GROUP BY a.id, b.id
            name = node.name if isinstance(node, exp.Column) and not taken else f"key{len(keys)}"
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
            if isinstance(node.parent, exp.Filter) and node is node.parent.this:
                continue  # planned with its FILTER
            if isinstance(node, exp.Filter) and not isinstance(node.this, AGGREGATES):
                raise self.fail("FILTER (WHERE ...) follows an aggregate: COUNT(*) FILTER (WHERE ...)", node)
            if isinstance(node, (*AGGREGATES, exp.Filter)) and text_of(node) not in replaced:
                aggregates.append(self.aggregate(node, input_columns, f"agg{len(aggregates)}"))
                replaced[text_of(node)] = aggregates[-1].column
                grouped_columns[aggregates[-1].column] = pa.null()
        if window is not None:
            grouped_columns["window_time"] = columns["window_time"]
            replaced.update({name: name for name in WINDOW_COLUMNS})
        outputs = tuple(
            Output(n, self.grouped(item, grouped_columns, replaced))
            for n, item in zip(output_names(items), items, strict=True)
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
            node=select,
        )

    def aggregate(self, node: exp.Expr, columns: Mapping[str, pa.DataType], column: str) -> Aggregate:
        """An aggregate call, maybe over DISTINCT values and with a FILTER (WHERE condition): the
        rows the condition does not hold for give it NULL, which aggregates leave out."""
        condition = node.expression.this if isinstance(node, exp.Filter) else None
        call = node.this if isinstance(node, exp.Filter) else node
        function = type(call).__name__.upper()
        argument = call.this
        distinct = isinstance(argument, exp.Distinct)
        if distinct:
            if len(argument.expressions) != 1:
                raise self.fail(f"{function}(DISTINCT ...) takes one argument", node)
            argument = argument.expressions[0]
        if isinstance(call, exp.Count) and isinstance(argument, exp.Star):
            if condition is None:
                return Aggregate("COUNT", None, column, text_of(node))
            argument = exp.Literal.number(1)  # COUNT(*) FILTER: the rows the condition holds for
        elif argument is None or call.expressions:
            raise self.fail(f"{function} takes one argument", node)
        if condition is not None:
            argument = exp.If(this=condition.copy(), true=argument.copy())
        return Aggregate(function, compile_expression(self.sql, argument, columns), column, text_of(node), distinct)

    def grouped(self, node: exp.Expr, columns: Mapping[str, pa.DataType], replaced: Mapping[str, str]) -> Compiled:
        """An expression over the groups: only the window's bounds, keys and aggregates."""
        for column in node.find_all(exp.Column):
            # inside an aggregate, or a GROUP BY expression (computed already)
            inside = any(
                isinstance(parent, (*AGGREGATES, exp.Filter)) or text_of(parent) in replaced
                for parent in _ancestors(column)
            )
            if not inside and column.name not in columns and text_of(column) not in replaced:
                raise self.fail(f"column {column.name} is neither in GROUP BY nor inside an aggregate", column)
        return compile_expression(self.sql, node, columns, replaced)


def _ancestors(node: exp.Expr) -> list[exp.Expr]:
    found = []
    parent = node.parent
    while parent is not None:
        found.append(parent)
        parent = parent.parent
    return found
