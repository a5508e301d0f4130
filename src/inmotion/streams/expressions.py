"""Scalar expressions of a query, compiled once into functions over Arrow batches.

`compile_expression(node, columns)` turns a sqlglot expression into `f(batch) -> values`, where
`batch` is a `pyarrow.Table` and `values` an array (or a scalar, for constants) computed with
Arrow's kernels: no Python code runs per row. Semantics follow Flink's: NULL in, NULL out
(comparisons, arithmetic, CONCAT), three-valued AND/OR, integer division of integers, LIKE with
`%` and `_`, CAST to NULL where a value does not convert (TRY_CAST's semantics: a job keeps
running on one odd value). Anything else is an `InvalidSql` naming the construct."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from inmotion.errors import InvalidSql
from inmotion.streams.dialect import text_of
from inmotion.streams.sql import flink_type, interval_ms, where

Values = Any
"""A pyarrow Array, ChunkedArray or Scalar."""
Compiled = Callable[[pa.Table], Values]

ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int64(),
    "SMALLINT": pa.int64(),
    "INT": pa.int64(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float64(),
    "DOUBLE": pa.float64(),
    "DECIMAL": pa.float64(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "TIME": pa.time32("ms"),
    "TIMESTAMP": pa.timestamp("ms"),
    "TIMESTAMP_LTZ": pa.timestamp("ms", tz="UTC"),
}
"""How each Flink type is held in a batch: integers as 64 bits and decimals as doubles (the
engine's arithmetic), timestamps in milliseconds."""

_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.EQ: "equal",
    exp.NEQ: "not_equal",
    exp.GT: "greater",
    exp.GTE: "greater_equal",
    exp.LT: "less",
    exp.LTE: "less_equal",
}
_ARITHMETIC: dict[type[exp.Expr], str] = {exp.Add: "add", exp.Sub: "subtract", exp.Mul: "multiply"}
_UNARY: dict[type[exp.Expr], Callable[[Values], Values]] = {
    exp.Upper: pc.utf8_upper,
    exp.Lower: pc.utf8_lower,
    exp.Length: pc.utf8_length,
    exp.Trim: pc.utf8_trim_whitespace,
    exp.Abs: pc.abs,
    exp.Floor: pc.floor,
    exp.Ceil: pc.ceil,
    exp.Sqrt: pc.sqrt,
    exp.Ln: pc.ln,
    exp.Exp: pc.exp,
}
AGGREGATES = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg)


def compile_expression(
    sql: str, node: exp.Expr, columns: Mapping[str, pa.DataType], replaced: Mapping[str, str] | None = None
) -> Compiled:
    """`node` as a function of a batch with `columns` (name -> Arrow type). `replaced` maps
    the SQL text of subexpressions already computed (aggregates) to the column holding them."""
    return _Compiler(sql, columns, replaced or {}).compile(node)


class _Compiler:
    def __init__(self, sql: str, columns: Mapping[str, pa.DataType], replaced: Mapping[str, str]) -> None:
        self.sql = sql
        self.columns = columns
        self.replaced = replaced

    def fail(self, problem: str, node: exp.Expr) -> InvalidSql:
        return InvalidSql(problem, *where(self.sql, node))

    def compile(self, node: exp.Expr) -> Compiled:
        if self.replaced and text_of(node) in self.replaced:
            return self.column(self.replaced[text_of(node)], node)
        if isinstance(node, (exp.Paren, exp.Alias)):
            return self.compile(node.this)
        if isinstance(node, exp.Column):
            return self.column(self.qualified(node), node)
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
            constant = literal(node)
            return lambda batch: constant
        if isinstance(node, exp.Interval):
            duration = pa.scalar(interval_ms(self.sql, node), pa.duration("ms"))
            return lambda batch: duration
        if isinstance(node, AGGREGATES):
            raise self.fail(f"aggregate {text_of(node)} outside a GROUP BY or window aggregation", node)
        kind = type(node)
        if kind in _COMPARISONS:
            return self.call(_COMPARISONS[kind], node.this, node.expression)
        if kind in _ARITHMETIC:
            return self.call(_ARITHMETIC[kind], node.this, node.expression)
        if kind in _UNARY:
            if any(node.args.get(extra) for extra in ("expression", "decimals", "position")):
                raise self.fail(f"unsupported arguments of {text_of(node)}", node)
            return self.unary(_UNARY[kind], node.this)
        if isinstance(node, exp.Div):
            return self.call("divide", node.this, node.expression)  # integers: integer division, as Flink
        if isinstance(node, exp.Mod):
            return self.modulo(node)
        if isinstance(node, exp.Neg):
            return self.unary(pc.negate, node.this)
        if isinstance(node, exp.And):
            return self.call("and_kleene", node.this, node.expression)
        if isinstance(node, exp.Or):
            return self.call("or_kleene", node.this, node.expression)
        if isinstance(node, exp.Not):
            return self.unary(pc.invert, node.this)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise self.fail(f"unsupported {text_of(node)} (IS [NOT] NULL is)", node)
            return self.unary(pc.is_null, node.this)
        if isinstance(node, exp.Between):
            low, high = (
                self.call("greater_equal", node.this, node.args["low"]),
                self.call("less_equal", node.this, node.args["high"]),
            )
            return lambda batch: pc.and_kleene(low(batch), high(batch))
        if isinstance(node, exp.In):
            return self.member(node)
        if isinstance(node, exp.Like):
            return self.like(node)
        if isinstance(node, (exp.Cast, exp.TryCast)):
            return self.cast(node)
        if isinstance(node, exp.Coalesce):
            parts = [self.compile(e) for e in [node.this, *node.expressions]]
            return lambda batch: pc.coalesce(*(part(batch) for part in parts))
        if isinstance(node, exp.Concat):
            parts = [self.compile(e) for e in node.expressions]
            return lambda batch: pc.binary_join_element_wise(*(text(part(batch)) for part in parts), "")
        if isinstance(node, exp.If):
            return self.cases([(node.this, node.args["true"])], node.args.get("false"))
        if isinstance(node, exp.Case):
            if node.this is not None:
                raise self.fail("unsupported CASE x WHEN ... (CASE WHEN condition THEN ... is)", node)
            return self.cases([(i.this, i.args["true"]) for i in node.args["ifs"]], node.args.get("default"))
        if isinstance(node, exp.Round):
            return self.round(node)
        if isinstance(node, exp.Substring):
            return self.substring(node)
        if isinstance(node, exp.RegexpExtract):
            return self.regexp_extract(node)
        if isinstance(node, exp.Anonymous) and node.name.upper() == "DATE_FORMAT":
            return self.date_format(node)
        if isinstance(node, exp.Anonymous) and node.name.upper() == "SPLIT_INDEX":
            return self.split_index(node)
        name = node.name.upper() if isinstance(node, exp.Anonymous) else node.key.upper()
        raise self.fail(f"unsupported function or expression {name}: {text_of(node)}", node)

    def qualified(self, node: exp.Column) -> str:
        """The batch's name of a column: `alias.name` in a join's rows (unqualified, if only one
        side has it), else its name."""
        if node.table and f"{node.table}.{node.name}" in self.columns:
            return f"{node.table}.{node.name}"
        if node.name in self.columns:
            return node.name
        found = [name for name in self.columns if name.endswith(f".{node.name}")]
        return found[0] if len(found) == 1 else node.name

    def column(self, name: str, node: exp.Expr) -> Compiled:
        if name not in self.columns:
            known = ", ".join(self.columns) or "none"
            raise self.fail(f"unknown column {name} (the columns here are {known})", node)
        return lambda batch: batch.column(name)

    def call(self, function: str, *args: exp.Expr) -> Compiled:
        parts = [self.compile(arg) for arg in args]
        return lambda batch: pc.call_function(function, [part(batch) for part in parts])

    def unary(self, function: Callable[[Values], Values], arg: exp.Expr) -> Compiled:
        part = self.compile(arg)
        return lambda batch: function(part(batch))

    def modulo(self, node: exp.Expr) -> Compiled:
        # Java's remainder (the sign of the dividend), as Flink's MOD and %
        dividend, divisor = self.compile(node.this), self.compile(node.expression)

        def remainder(batch: pa.Table) -> Values:
            a, b = dividend(batch), divisor(batch)
            return pc.subtract(a, pc.multiply(pc.divide(a, b), b))

        return remainder

    def member(self, node: exp.In) -> Compiled:
        if node.args.get("query") or not node.expressions:
            raise self.fail(f"unsupported {text_of(node)} (IN takes a list of values)", node)
        value = self.compile(node.this)
        options = [self.compile(e) for e in node.expressions]

        def among(batch: pa.Table) -> Values:
            found: Values = pa.scalar(False)
            v = value(batch)
            for option in options:
                found = pc.or_kleene(found, pc.equal(v, option(batch)))
            return found

        return among

    def like(self, node: exp.Like) -> Compiled:
        pattern = node.expression
        if not isinstance(pattern, exp.Literal) or not pattern.is_string:
            raise self.fail("LIKE takes a string literal pattern", node)
        regex = "^" + "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern.this) + "$"
        part = self.compile(node.this)
        return lambda batch: pc.match_substring_regex(part(batch), regex)

    def cast(self, node: exp.Cast) -> Compiled:
        target = node.to
        flink = flink_type(target.this) if isinstance(target, exp.DataType) else None
        if flink is None:
            raise self.fail(f"unsupported CAST to {text_of(target)}", node)
        arrow = ARROW_TYPES[flink]
        part = self.compile(node.this)

        def convert(batch: pa.Table) -> Values:
            value = part(batch)
            if pa.types.is_string(arrow):
                return text(value)
            try:
                return pc.cast(value, arrow, safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return _cast_each(value, arrow)

        return convert

    def cases(self, branches: list[tuple[exp.Expr, exp.Expr]], default: exp.Expr | None) -> Compiled:
        conditions = [self.compile(condition) for condition, _ in branches]
        results = [self.compile(result) for _, result in branches]
        otherwise = self.compile(default) if default is not None else None

        def choose(batch: pa.Table) -> Values:
            tests = [pc.fill_null(as_array(c(batch), batch.num_rows), False) for c in conditions]
            values = [as_array(r(batch), batch.num_rows) for r in results]
            if otherwise is not None:
                values.append(as_array(otherwise(batch), batch.num_rows))
            values = unify(values)
            names = [str(i) for i in range(len(tests))]
            return pc.case_when(pc.make_struct(*tests, field_names=names), *values)

        return choose

    def round(self, node: exp.Round) -> Compiled:
        decimals = node.args.get("decimals")
        digits = int(decimals.this) if isinstance(decimals, exp.Literal) and not decimals.is_string else 0
        if decimals is not None and not isinstance(decimals, exp.Literal):
            raise self.fail("ROUND takes a number of decimals as a literal", node)
        part = self.compile(node.this)
        # Flink rounds half away from zero
        return lambda batch: pc.round(part(batch), digits, round_mode="half_towards_infinity")

    def substring(self, node: exp.Substring) -> Compiled:
        start, length = node.args.get("start"), node.args.get("length")
        if not isinstance(start, exp.Literal) or (length is not None and not isinstance(length, exp.Literal)):
            raise self.fail("SUBSTRING takes literal positions", node)
        begin = max(int(start.this) - 1, 0)  # SQL counts from 1
        stop = None if length is None else begin + int(length.this)
        part = self.compile(node.this)
        return lambda batch: pc.utf8_slice_codeunits(part(batch), begin, stop)

    def date_format(self, node: exp.Anonymous) -> Compiled:
        """DATE_FORMAT(timestamp, 'yyyy-MM-dd HH:mm:ss.SSS'), Java's pattern letters (a string
        argument is read as a timestamp first). The fields are UTC's, the engine's time zone."""
        if len(node.expressions) != 2 or not _is_string(node.expressions[1]):
            raise self.fail("DATE_FORMAT takes (timestamp, 'pattern'), the pattern a string literal", node)
        pieces: list[str | tuple[Callable[[Values], Values], int]] = []
        for match in re.finditer(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+", node.expressions[1].name):
            token = match.group(0)
            if token.startswith("'"):
                pieces.append(token[1:-1].replace("''", "'") or "'")  # '' is a quote
            elif token[0].isalpha():
                field = _DATE_FIELDS.get(token)
                if field is None:
                    known = ", ".join(_DATE_FIELDS)
                    raise self.fail(f"DATE_FORMAT: unsupported pattern letters {token!r} ({known} are)", node)
                pieces.append(field)
            else:
                pieces.append(token)
        part = self.compile(node.expressions[0])

        def format_(batch: pa.Table) -> Values:
            value = as_array(part(batch), batch.num_rows)
            if not pa.types.is_timestamp(value.type):
                value = _cast_each(value, pa.timestamp("ms"))
            texts = []
            for piece in pieces:
                if isinstance(piece, str):
                    texts.append(pa.scalar(piece))
                else:
                    function, width = piece
                    texts.append(pc.utf8_lpad(pc.cast(function(value), pa.string()), width, "0"))
            return pc.binary_join_element_wise(*texts, "")

        return format_

    def regexp_extract(self, node: exp.RegexpExtract) -> Compiled:
        """REGEXP_EXTRACT(text, 'regex'[, group]): the group (0, the whole match, unless given)
        of the regex's first match, NULL where it does not match."""
        pattern, group = node.expression, node.args.get("group")
        if not _is_string(pattern) or (group is not None and not isinstance(group, exp.Literal)):
            raise self.fail("REGEXP_EXTRACT takes a string literal regex and a literal group number", node)
        wanted = int(group.this) if group is not None else 0
        named, groups = _named_groups(pattern.name)
        if not 0 <= wanted <= groups:
            raise self.fail(f"REGEXP_EXTRACT: the regex has {groups} groups, there is no group {wanted}", node)
        regex = f"(?P<g0>{named})"
        try:
            pc.extract_regex(pa.array([""]), regex)
        except pa.ArrowInvalid as exc:
            raise self.fail(f"REGEXP_EXTRACT: invalid regex {pattern.name!r}: {exc}", node) from None
        part = self.compile(node.this)

        def extract(batch: pa.Table) -> Values:
            found = pc.extract_regex(as_array(part(batch), batch.num_rows), regex)
            value = pc.struct_field(found, [wanted])
            return pc.if_else(pc.is_valid(found), value, pa.scalar(None, pa.string()))

        return extract

    def split_index(self, node: exp.Anonymous) -> Compiled:
        """SPLIT_INDEX(text, 'separator', n): the n-th piece (from 0), NULL past the last."""
        args = node.expressions
        if len(args) != 3 or not _is_string(args[1]) or not isinstance(args[2], exp.Literal) or args[2].is_string:
            raise self.fail("SPLIT_INDEX takes (text, 'separator', index), both literals", node)
        separator, index = args[1].name, int(args[2].this)
        part = self.compile(args[0])

        def split(batch: pa.Table) -> Values:
            value = as_array(part(batch), batch.num_rows)
            if index < 0 or not separator:
                return pa.nulls(len(value), pa.string())
            pieces = pc.split_pattern(pc.fill_null(value, ""), separator)
            chosen = pc.list_flatten(pc.list_slice(pieces, index, index + 1, return_fixed_size_list=True))
            # Flink splits an empty text into no pieces at all
            return pc.if_else(pc.fill_null(pc.equal(value, ""), True), pa.scalar(None, pa.string()), chosen)

        return split


_DATE_FIELDS: dict[str, tuple[Callable[[Values], Values], int]] = {
    "yyyy": (pc.year, 4),
    "yy": (lambda v: pc.subtract(pc.year(v), pc.multiply(pc.divide(pc.year(v), 100), 100)), 2),
    "MM": (pc.month, 2),
    "M": (pc.month, 1),
    "dd": (pc.day, 2),
    "d": (pc.day, 1),
    "HH": (pc.hour, 2),
    "H": (pc.hour, 1),
    "mm": (pc.minute, 2),
    "m": (pc.minute, 1),
    "ss": (pc.second, 2),
    "s": (pc.second, 1),
    "SSS": (pc.millisecond, 3),
}
"""DATE_FORMAT's pattern letters: the field and its width (zero-padded)."""


def _is_string(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


def _named_groups(regex: str) -> tuple[str, int]:
    """`regex` with its capturing groups named g1, g2, ... (Arrow's extract_regex reads named
    groups only), and how many there are."""
    out, count, index, in_class = [], 0, 0, False
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            out.append(regex[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(" and not regex.startswith("?", index + 1):
            count += 1
            out.append(f"(?P<g{count}>")
            index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out), count


def literal(node: exp.Expr) -> pa.Scalar:
    if isinstance(node, exp.Null):
        return pa.scalar(None)
    if isinstance(node, exp.Boolean):
        return pa.scalar(bool(node.this))
    assert isinstance(node, exp.Literal)
    if node.is_string:
        return pa.scalar(node.this)
    text = node.this
    return pa.scalar(int(text)) if re.fullmatch(r"-?\d+", text) else pa.scalar(float(text))


def as_array(values: Values, rows: int) -> pa.Array | pa.ChunkedArray:
    """`values` as one value per row (a constant repeated)."""
    if isinstance(values, pa.Scalar):
        return pa.repeat(values, rows)
    return values


def unify(values: list[Any]) -> list[Any]:
    """The branches of a CASE as one type (NULL branches take the others' type; integers and
    doubles meet as doubles)."""
    types = {v.type for v in values if v.type != pa.null()}
    if len(types) <= 1:
        target = types.pop() if types else pa.null()
    elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        target = pa.float64()
    else:
        target = pa.string()
    return [v if v.type == target else pc.cast(v, target) for v in values]


def text(values: Values) -> Values:
    """Values as text, as Flink writes them: doubles as Java does (1250.0, 1.0E7)."""
    if pa.types.is_string(values.type):
        return values
    if not pa.types.is_floating(values.type):
        return pc.cast(values, pa.string())
    if isinstance(values, pa.Scalar):
        return pa.scalar(_java_double(values.as_py()), pa.string())
    return pa.array([_java_double(v) for v in values.to_pylist()], pa.string())


def _java_double(value: float | None) -> str | None:
    """Java's Double.toString: plain between 10^-3 and 10^7, else scientific (1.0E-4), each
    with the fewest digits that read back the same."""
    if value is None:
        return None
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(float(value))
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    power = len(digits) + exponent - 1
    shown = "".join(map(str, digits)).rstrip("0") or "0"
    return f"{'-' if sign else ''}{shown[0]}.{shown[1:] or '0'}E{power}"


def _cast_each(values: Values, arrow: pa.DataType) -> Values:
    """Cast value by value, NULL where one does not convert."""
    if isinstance(values, pa.Scalar):
        try:
            return pc.cast(values, arrow, safe=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.scalar(None, arrow)
    converted = []
    for value in values:
        try:
            converted.append(pc.cast(value, arrow, safe=False).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            converted.append(None)
    return pa.array(converted, arrow)
