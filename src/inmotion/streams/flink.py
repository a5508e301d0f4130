"""The same tables on Apache Flink: a script's CREATE TABLEs as Flink's Kafka connector declares
them, for the topics the log keeps on a Kafka cluster. The queries go to Flink as written.

Data columns read the events' JSON data (Flink's json format, ISO-8601 timestamps in UTC);
the record's `partition`, `offset` and `timestamp` are the connector's metadata of those names;
CloudEvents attributes and extensions travel in the record's headers (the Kafka binary binding,
`ce_<name>`) and become computed columns over the `headers` metadata. A table with a primary
key is an upsert-kafka table (its rows keyed by it, as an updating query writes them)."""

from __future__ import annotations

from collections.abc import Sequence

from inmotion.errors import InvalidSql
from inmotion.streams.sql import Column, Statement, Table

_TYPES = {"TIMESTAMP": "TIMESTAMP(3)", "TIMESTAMP_LTZ": "TIMESTAMP_LTZ(3)", "TIME": "TIME(3)", "DECIMAL": "DOUBLE"}
"""Flink's type of a column, where ours has no precision (the engine holds decimals as doubles)."""
_RECORD = {"partition": "INT", "offset": "BIGINT", "timestamp": "TIMESTAMP_LTZ(3)"}
_HEADERS = {"datacontenttype": "content-type"}


def flink_ddl(statements: Sequence[Statement], bootstrap: str, *, group: str = "inmotion-flink") -> list[str]:
    """Flink's CREATE TABLE for each of the script's tables over Kafka at `bootstrap`."""
    return [_table(s, bootstrap, group) for s in statements if isinstance(s, Table)]


def _table(table: Table, bootstrap: str, group: str) -> str:
    columns = [_column(table, c) for c in table.columns]
    if any(c.metadata and c.metadata not in _RECORD and c.metadata != "key" for c in table.columns):
        columns.append("`__headers` MAP<STRING, BYTES> METADATA FROM 'headers' VIRTUAL")
    if table.watermark is not None:
        column, delay = table.watermark.column, table.watermark.delay_ms / 1000
        columns.append(f"WATERMARK FOR `{column}` AS `{column}` - INTERVAL '{delay:g}' SECOND")
    options = {"topic": table.topic, "properties.bootstrap.servers": bootstrap, "value.format": "json"}
    options["value.json.timestamp-format.standard"] = "ISO-8601"
    if table.primary_key:
        keys = ", ".join(f"`{k}`" for k in table.primary_key)
        columns.append(f"PRIMARY KEY ({keys}) NOT ENFORCED")
        options.update({"connector": "upsert-kafka", "key.format": "raw" if len(table.primary_key) == 1 else "json"})
    else:
        options.update(
            {
                "connector": "kafka",
                "properties.group.id": group,
                "scan.startup.mode": table.start,
                "scan.bounded.mode": "latest-offset",  # a query ends where the topic ended when it began
                "value.json.ignore-parse-errors": "true",
            }
        )
    body = ",\n  ".join(columns)
    settings = ",\n  ".join(f"'{k}' = '{v}'" for k, v in sorted(options.items()))
    return f"CREATE TABLE `{table.name}` (\n  {body}\n) WITH (\n  {settings}\n)"


def _column(table: Table, column: Column) -> str:
    kind = _TYPES.get(column.type, column.type)
    name = f"`{column.name}`"
    if column.metadata is None:
        return f"{name} {kind}"
    if column.metadata in _RECORD:
        return f"{name} {kind} METADATA FROM '{column.metadata}' VIRTUAL"
    if column.metadata == "key":
        raise InvalidSql(f"table {table.name}: a key metadata column has no Flink twin yet (use the table's data)")
    header = _HEADERS.get(column.metadata, f"ce_{column.metadata}")
    if kind not in ("STRING",):
        raise InvalidSql(f"table {table.name}: on Flink, metadata column {column.name} is read as a STRING")
    return f"{name} AS CAST(`__headers`['{header}'] AS STRING)"
