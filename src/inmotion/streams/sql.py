"""Reading Flink SQL: a script's statements, and the tables over topics its CREATE TABLEs declare.

    CREATE TABLE bids (
      auction BIGINT,
      price BIGINT,
      ts TIMESTAMP_LTZ(3),
      `type` STRING METADATA VIRTUAL,
      WATERMARK FOR ts AS ts - INTERVAL '4' SECOND
    ) WITH ('topic' = 'bids');

A column reads the field of the same name of each event's data; a metadata column reads the
event's envelope instead: a CloudEvents attribute (`id`, `source`, `type`, `time`, `subject`,
`datacontenttype`, `dataschema`, `specversion`), an extension by its name, or the record's
`key`, `partition`, `offset` and `timestamp` in the log. Text that is not SQL, and SQL this
engine does not take, raise `InvalidSql` naming the construct, its line and its column.
"""

from __future__ import annotations

import dataclasses
import re

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from inmotion.errors import InvalidSql
from inmotion.streams.dialect import Flink, MetadataColumn, text_of

_TYPES = {
    exp.DType.BOOLEAN: "BOOLEAN",
    exp.DType.TINYINT: "TINYINT",
    exp.DType.SMALLINT: "SMALLINT",
    exp.DType.INT: "INT",
    exp.DType.BIGINT: "BIGINT",
    exp.DType.FLOAT: "FLOAT",
    exp.DType.DOUBLE: "DOUBLE",
    exp.DType.DECIMAL: "DECIMAL",
    exp.DType.TEXT: "STRING",
    exp.DType.VARCHAR: "STRING",
    exp.DType.CHAR: "STRING",
    exp.DType.BINARY: "BYTES",
    exp.DType.VARBINARY: "BYTES",
    exp.DType.DATE: "DATE",
    exp.DType.TIME: "TIME",
    exp.DType.TIMESTAMP: "TIMESTAMP",
    exp.DType.TIMESTAMPLTZ: "TIMESTAMP_LTZ",
}
"""The column types the engine takes (sqlglot's name -> Flink's)."""
TIME_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_LTZ"})

ATTRIBUTES = frozenset({"id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "specversion"})
RECORD_FIELDS = frozenset({"key", "partition", "offset", "timestamp"})
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")
"""A CloudEvents extension's name."""

STARTS = frozenset({"earliest-offset", "latest-offset"})
_OPTIONS = frozenset({"topic", "scan.startup.mode", "key.fields"})

_MS = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
"""The units of the intervals Flink's parser takes (no MILLISECOND: '0.5' SECOND is one)."""


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    """Flink's type name, without its precision: BIGINT, DOUBLE, STRING, TIMESTAMP_LTZ..."""
    metadata: str | None = None
    """The envelope's attribute, extension or record field it reads; None: the data field `name`."""
    virtual: bool = False
    """Read only: an INSERT INTO the table does not write it."""
    proctime: bool = False
    """`name AS PROCTIME()`: the wall-clock time when the engine reads the row (a TIMESTAMP_LTZ),
    for windows in processing time."""


@dataclasses.dataclass(frozen=True)
class Watermark:
    """`WATERMARK FOR column AS column - INTERVAL ...`: event time is `column`, and events up to
    `delay_ms` older than the newest one seen are still on time."""

    column: str
    delay_ms: int


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    topic: str
    columns: tuple[Column, ...]
    watermark: Watermark | None = None
    primary_key: tuple[str, ...] = ()
    start: str = "earliest-offset"
    """Where a job with no checkpoint starts reading: `earliest-offset` or `latest-offset`."""
    key_fields: tuple[str, ...] = ()
    """`'key.fields' = 'a;b'` (Flink's option): the columns the events' key is made of, so rows
    with equal values share a partition (what lets a job split by partition)."""

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclasses.dataclass(frozen=True)
class Query:
    """A SELECT, or an INSERT INTO `sink` SELECT: what the planner takes."""

    text: str
    """As written: the statement Flink is given unchanged."""
    tree: exp.Expr
    sink: str | None = None


@dataclasses.dataclass(frozen=True)
class Setting:
    """`SET 'option' = 'value'`: an option of the job (see `OPTIONS`)."""

    option: str
    value: str

    def duration_ms(self) -> int:
        return duration_ms(self.option, self.value)


OPTIONS = {
    "table.exec.state.ttl": "how long an updating GROUP BY keeps a key's state after its last row, and a regular"
    " join a row after it came (0: always)",
    "table.exec.source.idle-timeout": "how long a silent partition holds the watermark back",
    "execution.checkpointing.interval": "the time between checkpoints while busy",
}
"""The options a script may SET, with what they do here."""
NEUTRAL_OPTIONS = frozenset(
    {
        "parallelism.default",
        "pipeline.name",
        "table.exec.mini-batch.enabled",
        "table.exec.mini-batch.allow-latency",
        "table.exec.mini-batch.size",
    }
)
"""Flink's options that change how a job runs, never its results: taken, and left to Flink."""

Statement = Table | Query | Setting

_DURATION = re.compile(r"\s*(\d+)\s*([a-z]*)\s*")
_DURATION_UNITS = {
    "": 1, "ms": 1, "milli": 1, "millis": 1, "millisecond": 1, "milliseconds": 1,
    "s": 1000, "sec": 1000, "secs": 1000, "second": 1000, "seconds": 1000,
    "m": 60_000, "min": 60_000, "mins": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
    "d": 86_400_000, "day": 86_400_000, "days": 86_400_000,
}  # fmt: skip


def duration_ms(option: str, text: str) -> int:
    """A duration as Flink writes one ('1 h', '30min', '500 ms'; a bare number is ms)."""
    match = _DURATION.fullmatch(text.lower())
    if match is None or match.group(2) not in _DURATION_UNITS:
        raise InvalidSql(f"SET '{option}': {text!r} is no duration (e.g. '10 s', '5 min', '1 h', '500 ms')")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse(sql: str) -> list[Statement]:
    """The statements of a script (separated by semicolons), in order."""
    try:
        tokens = Flink().tokenize(sql)
    except TokenError as exc:
        raise InvalidSql(f"cannot read the SQL: {exc}") from None
    return [_statement(sql, chunk) for chunk in _split(tokens)]


def _split(tokens: list[Token]) -> list[list[Token]]:
    chunks: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            chunks.append([])
        else:
            chunks[-1].append(token)
    return [chunk for chunk in chunks if chunk]


def _statement(sql: str, tokens: list[Token]) -> Statement:
    text = sql[tokens[0].start : tokens[-1].end + 1]
    try:
        trees = Flink().parser().parse(tokens, sql)
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        raise InvalidSql(
            f"cannot read the SQL: {error.get('description') or exc}", error.get("line", 0), error.get("col", 0)
        ) from None
    if len(trees) != 1 or trees[0] is None:
        raise InvalidSql(f"cannot read the SQL: {text[:60]!r} is no statement", *_at(sql, tokens[0].start))
    [tree] = trees
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "TABLE":
        return _table(sql, tree)
    if isinstance(tree, exp.Insert) and isinstance(tree.this, exp.Table):
        return Query(text, tree, sink=tree.this.name)
    if isinstance(tree, exp.Query):
        return Query(text, tree)
    if isinstance(tree, exp.Set):
        return _setting(sql, tree)
    words = " ".join(token.text.upper() for token in tokens[:2])
    where = _at(sql, tokens[0].start)
    raise InvalidSql(f"unsupported statement {words} (CREATE TABLE, SET, SELECT and INSERT INTO are)", *where)


def _setting(sql: str, tree: exp.Set) -> Setting:
    items = tree.expressions
    item = items[0].this if len(items) == 1 and isinstance(items[0], exp.SetItem) else None
    if not (
        isinstance(item, exp.EQ)
        and isinstance(item.this, exp.Literal)
        and item.this.is_string
        and isinstance(item.expression, exp.Literal)
    ):
        raise InvalidSql("SET takes one 'option' = 'value'", *where(sql, tree))
    setting = Setting(item.this.this, item.expression.this)
    if setting.option not in OPTIONS and setting.option not in NEUTRAL_OPTIONS:
        known = ", ".join(sorted([*OPTIONS, *NEUTRAL_OPTIONS]))
        raise InvalidSql(f"unknown option {setting.option!r} (the options are {known})", *where(sql, item.this))
    if setting.option in OPTIONS:
        setting.duration_ms()  # checked now, not when the job has started
    return setting


def _table(sql: str, tree: exp.Create) -> Table:
    schema = tree.this
    if not isinstance(schema, exp.Schema) or not isinstance(schema.this, exp.Table):
        raise InvalidSql("CREATE TABLE needs its columns: CREATE TABLE name (column TYPE, ...)", *where(sql, tree))
    name = schema.this.name
    columns: list[Column] = []
    watermark: exp.WatermarkColumnConstraint | None = None
    primary_key: tuple[str, ...] = ()
    for element in schema.expressions:
        if isinstance(element, exp.ColumnDef):
            column = _column(sql, element)
            if any(c.name == column.name for c in columns):
                raise InvalidSql(f"table {name}: column {column.name} is declared twice", *where(sql, element))
            columns.append(column)
        elif isinstance(element, exp.WatermarkColumnConstraint):
            watermark = element
        elif isinstance(element, exp.PrimaryKey):
            primary_key = tuple(e.name for e in element.expressions)
            for key in element.expressions:
                if not any(c.name == key.name for c in columns):
                    raise InvalidSql(f"table {name}: the primary key names no column {key.name}", *where(sql, key))
        else:
            raise InvalidSql(f"unsupported in CREATE TABLE: {element.key.upper()}", *where(sql, element))
    options = _options(sql, name, tree)
    key_fields = tuple(field.strip() for field in options.get("key.fields", "").split(";") if field.strip())
    for field in key_fields:
        if not any(c.name == field for c in columns):
            raise InvalidSql(f"table {name}: 'key.fields' names no column {field}", *where(sql, tree))
    return Table(
        name,
        options["topic"],
        tuple(columns),
        watermark=None if watermark is None else _watermark(sql, name, columns, watermark),
        primary_key=primary_key,
        start=options.get("scan.startup.mode", "earliest-offset"),
        key_fields=key_fields,
    )


def _column(sql: str, element: exp.ColumnDef) -> Column:
    kind = element.args.get("kind")
    constraints = element.args.get("constraints") or []
    computed = [c.args["kind"] for c in constraints if isinstance(c.args.get("kind"), exp.ComputedColumnConstraint)]
    if computed:
        if not (isinstance(computed[0].this, exp.Anonymous) and computed[0].this.name.upper() == "PROCTIME"):
            raise InvalidSql(
                f"column {element.name}: unsupported computed column (`{element.name} AS PROCTIME()` is supported)",
                *where(sql, element),
            )
        return proctime_column(element.name)
    if not isinstance(kind, exp.DataType):
        raise InvalidSql(f"column {element.name} needs a type", *where(sql, element))
    flink = flink_type(kind.this)
    if flink is None:
        raise InvalidSql(f"column {element.name}: unsupported type {text_of(kind)}", *where(sql, element))
    metadata, virtual = None, False
    for constraint in element.args.get("constraints") or []:
        if not isinstance(constraint.args.get("kind"), MetadataColumn):
            raise InvalidSql(f"column {element.name}: unsupported {text_of(constraint)}", *where(sql, element))
        source = constraint.args["kind"]
        metadata = source.this.name if isinstance(source.this, exp.Literal) else element.name
        virtual = bool(source.args.get("virtual"))
        if metadata not in ATTRIBUTES | RECORD_FIELDS and not _EXTENSION.fullmatch(metadata):
            raise InvalidSql(
                f"column {element.name}: no metadata {metadata!r} (CloudEvents attributes, extension names,"
                f" {', '.join(sorted(RECORD_FIELDS))})",
                *where(sql, element),
            )
    return Column(element.name, flink, metadata, virtual)


def proctime_column(name: str) -> Column:
    """A processing-time column (`name AS PROCTIME()`): read only, never written."""
    return Column(name, "TIMESTAMP_LTZ", virtual=True, proctime=True)


def flink_type(kind: exp.DType) -> str | None:
    """Flink's name of a sqlglot type, if the engine takes it."""
    return _TYPES.get(kind)


def _watermark(sql: str, table: str, columns: list[Column], declared: exp.WatermarkColumnConstraint) -> Watermark:
    name = declared.this.name if isinstance(declared.this, exp.Column) else ""
    column = next((c for c in columns if c.name == name), None)
    if column is None or column.type not in TIME_TYPES:
        raise InvalidSql(
            f"table {table}: the watermark's column must be a TIMESTAMP or TIMESTAMP_LTZ column of the table",
            *where(sql, declared),
        )
    delay = declared.expression
    if isinstance(delay, exp.Column) and delay.name == name:
        return Watermark(name, 0)
    if (
        isinstance(delay, exp.Sub)
        and isinstance(delay.this, exp.Column)
        and delay.this.name == name
        and isinstance(delay.expression, exp.Interval)
    ):
        return Watermark(name, interval_ms(sql, delay.expression))
    raise InvalidSql(
        f"table {table}: unsupported watermark {text_of(declared.expression)} (`{name}` or `{name} - INTERVAL ...`)",
        *where(sql, declared),
    )


def interval_ms(sql: str, interval: exp.Interval) -> int:
    unit = str(interval.args.get("unit") or "").upper().removesuffix("S")
    try:
        amount = float(interval.this.name)
    except ValueError:
        amount = -1
    if unit == "MILLISECOND":
        raise InvalidSql(
            f"Flink takes no MILLISECOND intervals: write INTERVAL '{amount / 1000:g}' SECOND", *where(sql, interval)
        )
    if unit not in _MS or amount < 0:
        raise InvalidSql(f"unsupported interval {text_of(interval)}", *where(sql, interval))
    return round(amount * _MS[unit])


def _options(sql: str, name: str, tree: exp.Create) -> dict[str, str]:
    properties = tree.args.get("properties")
    options: dict[str, str] = {}
    for prop in properties.expressions if properties is not None else []:
        key, value = prop.this, prop.args.get("value")
        if not isinstance(prop, exp.Property) or not isinstance(key, exp.Literal) or not isinstance(value, exp.Literal):
            raise InvalidSql(f"table {name}: WITH takes 'option' = 'value' pairs", *where(sql, prop))
        if key.name not in _OPTIONS:
            raise InvalidSql(
                f"table {name}: unknown option {key.name!r} (the options are {', '.join(sorted(_OPTIONS))})",
                *where(sql, key),
            )
        options[key.name] = value.name
    if not options.get("topic"):
        raise InvalidSql(f"table {name}: WITH ('topic' = '...') names the topic it reads", *where(sql, tree))
    if options.get("scan.startup.mode", "earliest-offset") not in STARTS:
        raise InvalidSql(f"table {name}: 'scan.startup.mode' is {' or '.join(sorted(STARTS))}", *where(sql, tree))
    return options


def where(sql: str, node: exp.Expr) -> tuple[int, int]:
    """The line and column where `node` begins (its first token that keeps a position)."""
    starts = [n.meta["start"] for n in node.walk() if isinstance(n, exp.Expr) and "start" in n.meta]
    return _at(sql, min(starts)) if starts else (0, 0)


def _at(sql: str, offset: int) -> tuple[int, int]:
    line = sql.count("\n", 0, offset) + 1
    return line, offset - (sql.rfind("\n", 0, offset) + 1) + 1
