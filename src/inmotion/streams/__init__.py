"""Continuous SQL over topics in Flink's dialect (being built: see the issue on continuous SQL).

What stands: reading a script (`parse`): its CREATE TABLEs as `Table`s over topics (columns
from the events' data or envelope, the watermark, the primary key), its SELECT and INSERT INTO
statements as `Query`s for the planner; SQL that cannot be read or that the engine does not
take raises `InvalidSql` with its line and column."""

from inmotion.streams.sql import Column, Query, Statement, Table, Watermark, parse

__all__ = ["Column", "Query", "Statement", "Table", "Watermark", "parse"]
