"""Flink's SQL dialect for sqlglot, which has none: Hive's (backquoted identifiers, single-quoted
strings, Flink's type names) plus what Flink adds to it:

- `TIMESTAMP_LTZ(p)`, a timestamp with the local time zone;
- in CREATE TABLE, `WATERMARK FOR col AS expr` and metadata columns (`METADATA [FROM 'key']
  [VIRTUAL]`);
- table arguments of table functions: `TABLE(TUMBLE(TABLE bids [PARTITION BY col], ...))`.

Only the parser is extended; text is never generated back (statements go to Flink unchanged).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlglot import exp
from sqlglot.dialects.hive import Hive
from sqlglot.parsers.hive import HiveParser
from sqlglot.tokenizer_core import TokenType


class MetadataColumn(exp.Expression, exp.ColumnConstraintKind):
    """`METADATA [FROM 'key'] [VIRTUAL]`: a column read from the event's envelope."""

    arg_types: ClassVar[dict[str, bool]] = {"this": False, "virtual": False}


class TableArgument(exp.Expression):
    """`TABLE name [PARTITION BY col, ...]`, an argument of a table function."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "partition_by": False}


class FlinkParser(HiveParser):
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

    def _parse_lambda(self, alias: bool = False) -> exp.Expr | None:
        # `TABLE name` as an argument; `TABLE(...)` stays the table-function call it is
        if (
            self._curr
            and self._curr.token_type == TokenType.TABLE
            and self._next
            and self._next.token_type != TokenType.L_PAREN
        ):
            self._advance()
            table = self._parse_table_parts()
            partition_by = self._parse_csv(self._parse_column) if self._match_text_seq("PARTITION", "BY") else None
            return self.expression(TableArgument(this=table, partition_by=partition_by))
        return super()._parse_lambda(alias=alias)


class Flink(Hive):
    class Tokenizer(Hive.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {**Hive.Tokenizer.KEYWORDS, "TIMESTAMP_LTZ": TokenType.TIMESTAMPLTZ}

    Parser = FlinkParser
