"""Flink's SQL dialect for sqlglot, which has none: Hive's (backquoted identifiers, single-quoted
strings, Flink's type names) plus what Flink adds to it:

- `TIMESTAMP_LTZ(p)`, a timestamp with the local time zone;
- in CREATE TABLE, `WATERMARK FOR col AS expr` and metadata columns (`METADATA [FROM 'key']
  [VIRTUAL]`);
- table arguments of table functions: `TABLE(TUMBLE(TABLE bids [PARTITION BY col], ...))`, also
  as named arguments (`DATA => TABLE bids`), and SESSION windows.

Statements go to Flink as written; text is generated back only to name a construct in an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlglot import exp
from sqlglot.dialects.hive import Hive
from sqlglot.generators.hive import HiveGenerator
from sqlglot.helper import seq_get
from sqlglot.parsers.hive import HiveParser
from sqlglot.tokenizer_core import TokenType


class MetadataColumn(exp.Expression, exp.ColumnConstraintKind):
    """`METADATA [FROM 'key'] [VIRTUAL]`: a column read from the event's envelope."""

    arg_types: ClassVar[dict[str, bool]] = {"this": False, "virtual": False}


class TableArgument(exp.Expression):
    """`TABLE name [PARTITION BY col, ...]`, an argument of a table function."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "partition_by": False}


class FlinkParser(HiveParser):
    FUNCTIONS: ClassVar[dict[str, Any]] = {
        # DATE_FORMAT keeps its Java pattern as written (Hive's parser turns it into strftime's)
        **{name: build for name, build in HiveParser.FUNCTIONS.items() if name != "DATE_FORMAT"},
        # without a group, REGEXP_EXTRACT gives the whole match in Flink (group 1 in Hive)
        "REGEXP_EXTRACT": lambda args: exp.RegexpExtract(
            this=seq_get(args, 0), expression=seq_get(args, 1), group=seq_get(args, 2)
        ),
    }
    CONSTRAINT_PARSERS: ClassVar[dict[str, Any]] = {
        **HiveParser.CONSTRAINT_PARSERS,
        "WATERMARK": lambda self: self.expression(
            exp.WatermarkColumnConstraint(
                this=self._match(TokenType.FOR) and self._parse_column(),
                expression=self._match(TokenType.ALIAS) and self._parse_disjunction(),
            )
        ),
        "METADATA": lambda self: self.expression(
            MetadataColumn(
                this=self._parse_string() if self._match(TokenType.FROM) else None,
                virtual=self._match_text_seq("VIRTUAL"),
            )
        ),
    }
    SCHEMA_UNNAMED_CONSTRAINTS: ClassVar[set[str]] = {*HiveParser.SCHEMA_UNNAMED_CONSTRAINTS, "WATERMARK"}

    FUNC_TOKENS: ClassVar[set[TokenType]] = {*HiveParser.FUNC_TOKENS, TokenType.SESSION}  # SESSION(...) windows
    LAMBDAS: ClassVar[dict[TokenType, Any]] = {
        **HiveParser.LAMBDAS,
        # named arguments: TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(ts), SIZE => ...)
        TokenType.FARROW: lambda self, expressions: self.expression(
            exp.Kwarg(
                this=exp.var(expressions[0].name),
                expression=self._parse_table_argument() or self._parse_disjunction() or self._parse_select(),
            )
        ),
    }

    def _parse_lambda(self, alias: bool = False) -> exp.Expr | None:
        return self._parse_table_argument() or super()._parse_lambda(alias=alias)

    def _parse_table_argument(self) -> TableArgument | None:
        """`TABLE name [PARTITION BY ...]` here, if it is one (`TABLE(...)` is a table-function call)."""
        if not (
            self._curr
            and self._curr.token_type == TokenType.TABLE
            and self._next
            and self._next.token_type != TokenType.L_PAREN
        ):
            return None
        self._advance()
        table = self._parse_table_parts()
        partition_by = None
        if self._match(TokenType.PARTITION_BY):  # one column, or several in parentheses
            wrapped = self._match(TokenType.L_PAREN)
            partition_by = self._parse_csv(self._parse_column) if wrapped else [self._parse_column()]
            if wrapped:
                self._match_r_paren()
        return self.expression(TableArgument(this=table, partition_by=partition_by))


def _table_argument_sql(generator: Any, node: TableArgument) -> str:
    partition_by = node.args.get("partition_by")
    columns = f" PARTITION BY {', '.join(generator.sql(c) for c in partition_by)}" if partition_by else ""
    return f"TABLE {generator.sql(node.this)}{columns}"


class FlinkGenerator(HiveGenerator):
    TRANSFORMS: ClassVar[dict[type[exp.Expr], Any]] = {
        **HiveGenerator.TRANSFORMS,
        TableArgument: _table_argument_sql,
        MetadataColumn: lambda self, node: "METADATA",
        exp.RegexpExtract: lambda self, node: self.func(
            "REGEXP_EXTRACT", node.this, node.expression, node.args.get("group")
        ),
    }


class Flink(Hive):
    class Tokenizer(Hive.Tokenizer):
        STRING_ESCAPES: ClassVar[list[str]] = ["'"]  # 'it''s', as in standard SQL; a backslash is itself
        KEYWORDS: ClassVar[dict[str, TokenType]] = {**Hive.Tokenizer.KEYWORDS, "TIMESTAMP_LTZ": TokenType.TIMESTAMPLTZ}

    Parser = FlinkParser

    Generator = FlinkGenerator


def text_of(node: exp.Expr) -> str:
    """`node` as Flink SQL text (to name it in an error; the key of a computed expression)."""
    return node.sql(dialect=Flink)
