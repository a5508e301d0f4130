"""The operators a query plans into: what the engine runs, each expression compiled once (see
`inmotion.streams.plan`, which makes them, and `inmotion.streams.job`, which runs them)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pyarrow as pa
from sqlglot import exp

from inmotion.streams.dialect import text_of
from inmotion.streams.expressions import Compiled, as_array
from inmotion.streams.sql import Query, Table

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
    proctime: bool = False
    """Over a processing-time column (PROCTIME()): windows end by the wall clock, not by a watermark."""

    @property
    def slice(self) -> int:
        """The pane every window is made of: a row is late once its pane's window has fired
        (Flink's slicing windows drop a row whose slice ended before the watermark)."""
        return math.gcd(self.size, self.step) if self.kind == "HOP" else self.step

    def describe(self) -> str:
        return self._describe() + (" in processing time" if self.proctime else "")

    def _describe(self) -> str:
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
    """Computed per row; None for COUNT(*). NULL where a FILTER (WHERE ...) does not hold."""
    column: str
    """Where its value sits in the table of fired groups."""
    text: str
    distinct: bool = False
    """Over the argument's distinct values (COUNT(DISTINCT x)): its partial value is their set."""


@dataclasses.dataclass(frozen=True)
class Output:
    name: str
    value: Compiled


@dataclasses.dataclass(frozen=True)
class Over:
    """OVER aggregates: each row with `aggregates` (columns over0, ...) over the rows of its
    partition up to it in event time: those within `preceding` ms of its time, its peers of the
    same time included (RANGE), or the `preceding` rows before it (ROWS); None: every row before.
    Rows are given in time order as the watermark passes them (Flink's event-time OVER)."""

    partition: tuple[Output, ...]
    time: str
    frame: str
    """RANGE or ROWS."""
    preceding: int | None
    aggregates: tuple[Aggregate, ...]

    def describe(self) -> str:
        keys = ", ".join(o.name for o in self.partition) or "()"
        unit = " ms" if self.frame == "RANGE" else " rows"
        start = "UNBOUNDED" if self.preceding is None else f"{self.preceding}{unit}"
        aggregates = ", ".join(a.text for a in self.aggregates)
        return f"over by {keys} ORDER BY {self.time} {self.frame} {start} PRECEDING: {aggregates}"


@dataclasses.dataclass(frozen=True)
class Rank:
    """A Top-N: of the rows of each partition, the first `limit` in `order` ((column,
    descending) pairs), numbered in `column`; `outputs` read those rows. Over a window
    aggregation (a Window Top-N) the partitions are windows, ranked once as they fire; over a
    stream the first rows of a partition change as rows come (updates)."""

    partition: tuple[str, ...]
    order: tuple[tuple[str, bool], ...]
    limit: int
    column: str
    outputs: tuple[Output, ...]
    newest_first: bool = False
    """Of rows equal in the order, the newest ranks first (Flink's deduplication keeping the last
    row: ORDER BY the event time DESC, the first only); else the oldest."""


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
    time: str | None
    """The watermarked column, qualified (an interval join's sides have one)."""
    plan: Plan | None = None
    """A window aggregation over `table`: the side's rows are its groups, as its windows fire."""


@dataclasses.dataclass(frozen=True)
class StreamJoin:
    """An inner join of two streams: rows with equal keys for which `residual` holds on the
    joined row. An interval join's rows also have times `interval` apart (left time - right
    time within [lower, upper] ms): each side's rows are kept until the other's watermark
    passes their interval. A regular join (no interval) keeps every row for good."""

    left: Side
    right: Side
    interval: tuple[int, int] | None
    residual: Compiled | None
    kind: str = "INNER"
    """INNER, or LEFT, RIGHT or FULL: also the rows of that side that match nothing, with NULLs
    for the other side's columns; a regular join gives them at once and deletes them if a match
    comes (updates), an interval join once the other side's watermark passes their interval."""

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.left, self.right

    @property
    def timed(self) -> bool:
        """Do its rows meet watermarks: an interval join's late rows are dropped, a window
        aggregation's windows fire by them."""
        return self.interval is not None or any(side.plan is not None for side in self.sides)


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
class Cascade:
    """What an aggregation of a query aggregates: the rows `inner` gives (after its HAVING and
    SELECT) where `where` holds. Of a window aggregation (`bounds` set), window by window: all of
    a window's groups fire at once, so each is aggregated again as it fires, without state of
    its own. Of an updating GROUP BY, its rows' changes: a changed row retracts its old values
    from its group and adds its new ones."""

    inner: Plan
    where: Compiled | None
    bounds: tuple[str, str] | None
    """The inner query's names of window_start and window_end (`window_start AS starttime`)."""


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
    join: StreamJoin | WindowJoin | None = None
    """A join: `source` is its left table, `select` reads the joined rows."""
    cascade: Cascade | None = None
    """An aggregation of a query's rows (see `Cascade`): `keys` and `aggregates` are over those
    rows; `source`, `reads`, `where`, `window` and `join` are the inner query's."""
    node: exp.Select | None = None
    """The SELECT planned (of the query, or inside it), for its clauses' text."""
    over: Over | None = None
    """OVER aggregates: `select` reads the rows with them (over0, ...)."""

    @property
    def updating(self) -> bool:
        """A GROUP BY without a window, or a Top-N over a stream: a group's row, a partition's
        first rows, are updated as rows come."""
        return self.updates is not None

    @property
    def updates(self) -> str | None:
        """What makes the query's rows change as rows come (None: they are final once given)."""
        if isinstance(self.join, StreamJoin) and self.join.kind != "INNER" and self.join.interval is None:
            return f"a {self.join.kind} join"
        if self.grouped and self.window is None:
            return "GROUP BY without a window"
        if self.rank is not None and not self.grouped:
            return "a Top-N over a stream"
        return None

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
        lines.extend(self.operators())
        lines.append(f"insert into {self.sink.name} (topic {self.sink.topic})" if self.sink else "print")
        return lines

    def operators(self) -> list[str]:
        """The operators between the scans and the sink."""
        cascade = self.cascade
        if cascade is not None:
            lines = cascade.inner.operators()
            if cascade.where is not None:
                lines.append(f"filter {self.clause('where')}")
        else:
            lines = self.rows_operators()
        if self.grouped:
            aggregates = ", ".join(a.text for a in self.aggregates) or "none"
            windowed = self.window is not None
            keys = [*(["window_start", "window_end"] if windowed else []), *(k.name for k in self.keys)]
            what = "window aggregate" if windowed else "group aggregate"
            lines.append(f"{what} by {', '.join(keys) or '()'}: {aggregates}")
            states = {
                (True, False): "one row per window and key, dropped when the window fires",
                (True, True): "none (each window's groups are aggregated again as it fires)",
                (False, False): "one row per key, kept; each checkpoint upserts the keys that changed",
                (False, True): "one row per key, and the values each inner row added, retracted when it changes",
            }
            lines.append(f"  state: {states[windowed, cascade is not None]}")
        if self.grouped and self.having is not None:
            lines.append(f"filter {self.clause('having')}")
        lines.append(f"project {', '.join(o.name for o in self.select)}")
        if self.rank is not None:
            order = ", ".join(f"{c} {'DESC' if d else 'ASC'}" for c, d in self.rank.order)
            partition = ", ".join(self.rank.partition) or "()"
            lines.append(f"rank by {partition} ORDER BY {order}: the first {self.rank.limit} of each")
            if not self.grouped:
                lines.append("  state: each partition's first rows, kept; each checkpoint upserts those that changed")
            lines.append(f"project {', '.join(self.columns)}")
        return lines

    def rows_operators(self) -> list[str]:
        """The operators over the sources' rows: joins, filters, windows."""
        lines = []
        if isinstance(self.join, WindowJoin):
            join_ = self.join
            for window_side in join_.sides:
                if window_side.plan.grouped:
                    lines.append(f"{window_side.alias}:")
                    lines.extend(f"  {line}" for line in window_side.plan.operators())
            lines.append(f"window {join_.window.describe()} on each side")
            pair = f"{join_.left.alias} and {join_.right.alias}"
            lines.append(f"window join ({join_.kind}) {pair} on {len(join_.left.keys)} keys")
            lines.append("  state: each side's rows of each window, joined and dropped when the window fires")
        elif self.join is not None and self.join.interval is not None:
            join, (lower, upper) = self.join, self.join.interval
            lines.append(
                f"interval join {join.left.alias} and {join.right.alias} on {len(join.left.keys)} keys,"
                f" {join.left.time} - {join.right.time} in [{lower}, {upper}] ms"
            )
            lines.append("  state: each side's rows, kept until the other side's watermark passes their interval")
        elif self.join is not None:
            join = self.join
            for side in join.sides:
                if side.plan is not None and side.plan.window is not None:
                    lines.append(f"{side.alias}: window {side.plan.window.describe()}, aggregate by window and keys")
                    lines.append("  state: one row per window and key; the rows join as their window fires")
            lines.append(f"join ({join.kind}) {join.left.alias} and {join.right.alias} on {len(join.left.keys)} keys")
            lines.append("  state: each side's rows, kept for good (a regular join; or for table.exec.state.ttl)")
        if self.where is not None:
            lines.append(f"filter {self.clause('where')}")
        if self.window is not None:
            lines.append(f"window {self.window.describe()}")
        if self.over is not None:
            lines.append(self.over.describe())
            lines.append("  state: per partition the rows the watermark has not passed, and those their frames need")
        return lines

    def clause(self, arg: str) -> str:
        node = self.node.args.get(arg) if self.node is not None else None
        return text_of(node.this) if node is not None else ""


def project(rows: pa.Table, outputs: Sequence[Output]) -> pa.Table:
    """The outputs' values over `rows`, as a table of their names."""
    return pa.table([as_array(o.value(rows), rows.num_rows) for o in outputs], names=[o.name for o in outputs])


def output_names(items: list[exp.Expr]) -> list[str]:
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
