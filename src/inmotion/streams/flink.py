"""The same tables on Apache Flink: a script's CREATE TABLEs as Flink's Kafka connector declares
them, for the topics the log keeps on a Kafka cluster. The queries go to Flink as written; an
INSERT INTO also writes the CloudEvents headers of the events it appends (`flink_job`).

Data columns read the events' JSON data (Flink's json format, ISO-8601 timestamps in UTC);
the record's `partition`, `offset` and `timestamp` are the connector's metadata of those names;
CloudEvents attributes and extensions travel in the record's headers (the Kafka binary binding,
`ce_<name>`) and become computed columns over the `headers` metadata. A table with a primary
key is an upsert-kafka table (its rows keyed by it, as an updating query writes them)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from inmotion.errors import InvalidConfig, InvalidSql, UnknownTopic
from inmotion.log import Log, TopicConfig
from inmotion.streams.sql import Column, Query, Setting, Statement, Table

_TYPES = {"TIMESTAMP": "TIMESTAMP(3)", "TIMESTAMP_LTZ": "TIMESTAMP_LTZ(3)", "TIME": "TIME(3)", "DECIMAL": "DOUBLE"}
"""Flink's type of a column, where ours has no precision (the engine holds decimals as doubles)."""
_RECORD = {"partition": "INT", "offset": "BIGINT", "timestamp": "TIMESTAMP_LTZ(3)"}
_HEADERS = {"datacontenttype": "content-type"}
_HEADERS_COLUMN = "__headers"


def flink_ddl(
    statements: Sequence[Statement],
    bootstrap: str,
    *,
    group: str = "inmotion-flink",
    bounded: bool = True,
    sinks: Collection[str] = (),
) -> list[str]:
    """Flink's CREATE TABLE for each of the script's tables over Kafka at `bootstrap`. A
    bounded table ends where its topic ended when the query began; `sinks` (names) are written
    by INSERTs, with the events' headers."""
    return [_table(s, bootstrap, group, bounded, s.name in sinks) for s in statements if isinstance(s, Table)]


def flink_job(statements: Sequence[Statement], bootstrap: str, name: str) -> dict[str, Any]:
    """What `flink_runner` runs: the script's settings, its tables over Kafka at `bootstrap`
    (unbounded) and its INSERTs, each as written but for the headers of the events it appends
    (specversion, a fresh id, source /inmotion/sql/<name>, type: the table's name, JSON data)."""
    tables = {s.name: s for s in statements if isinstance(s, Table)}
    queries = [s for s in statements if isinstance(s, Query)]
    if not queries:
        raise InvalidSql("the SQL has no query: add an INSERT INTO a table SELECT ...")
    inserts = []
    for query in queries:
        if query.sink is None:
            raise InvalidSql(
                "on Flink, a job's queries write INSERT INTO a table (inmotion sql query runs SELECTs once)"
            )
        sink = tables.get(query.sink)
        if sink is None:
            raise InvalidSql(f"INSERT INTO {query.sink}: no such table (CREATE TABLE it first, over its topic)")
        if any(c.metadata is not None and not c.virtual for c in sink.columns):
            raise InvalidSql(f"INSERT INTO {sink.name}: on Flink, a table written to has no metadata columns yet")
        inserts.append(_insert(query.text, sink, name))
    settings = {s.option: s.value for s in statements if isinstance(s, Setting)}
    sinks = {query.sink for query in queries if query.sink is not None}
    ddl = flink_ddl(statements, bootstrap, group=f"inmotion-flink-{name}", bounded=False, sinks=sinks)
    return {"name": name, "settings": settings, "tables": ddl, "inserts": inserts}


def prepare_topics(log: Log, statements: Sequence[Statement]) -> None:
    """Flink reads topics that exist: a table read from needs its topic; one written to gets
    it made as the embedded engine makes it (compacted for a primary key)."""
    sinks = {s.sink for s in statements if isinstance(s, Query) and s.sink is not None}
    topics = set(log.list_topics())
    for table in (s for s in statements if isinstance(s, Table) and s.topic not in topics):
        if table.name not in sinks:
            raise UnknownTopic(table.topic)
        log.create_topic(table.topic, TopicConfig(compact=bool(table.primary_key)))


RUNNER = Path(__file__).with_name("flink_runner.py")
"""The script that runs a `flink_job` in PyFlink's Python."""


def flink_python() -> str:
    """The Python that has PyFlink: $INMOTION_FLINK_PYTHON, else this one if it has it, else
    .venv-flink/bin/python in the current directory (where `scripts/flink env` makes it)."""
    chosen = os.environ.get("INMOTION_FLINK_PYTHON")
    if chosen:
        if not Path(chosen).is_file():
            raise InvalidConfig(f"INMOTION_FLINK_PYTHON={chosen}: no such file")
        return chosen
    if importlib.util.find_spec("pyflink") is not None:
        return sys.executable
    here = Path(".venv-flink/bin/python")
    if here.is_file():
        return str(here.resolve())
    raise InvalidConfig(
        "PyFlink is not installed: pip install apache-flink==2.3.0 (or scripts/flink env in inmotion's"
        " repository), or set INMOTION_FLINK_PYTHON to a Python that has it"
    )


def flink_jars() -> list[str]:
    """The Kafka SQL connector's jar: in $INMOTION_FLINK_JARS (a directory), else .flink/jars in
    the current directory (where `scripts/flink env` fetches it)."""
    directory = Path(os.environ.get("INMOTION_FLINK_JARS") or ".flink/jars")
    jars = sorted(str(jar.resolve()) for jar in directory.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise InvalidConfig(
            f"no Flink Kafka connector in {directory}: fetch org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
            " from Maven Central into it (scripts/flink env does), or set INMOTION_FLINK_JARS to its directory"
        )
    return jars


_INSERT = re.compile(r"\s*INSERT\s+INTO\s+(?:`[^`]+`|[\w.]+)\s*", re.IGNORECASE)


def _insert(text: str, sink: Table, job: str) -> str:
    """`INSERT INTO sink query` as `INSERT INTO sink SELECT *, <headers> FROM (query)`."""
    match = _INSERT.match(text)
    if match is None:
        raise InvalidSql(f"cannot find the query of INSERT INTO {sink.name}")
    query = text[match.end() :].strip().rstrip(";")
    headers = {
        "ce_specversion": "'1.0'",
        "ce_id": "UUID()",
        "ce_source": _string(f"/inmotion/sql/{job}"),
        "ce_type": _string(sink.name),
        "content-type": "'application/json'",
    }
    pairs = ", ".join(f"'{name}', CAST({value} AS BYTES)" for name, value in headers.items())
    return f"INSERT INTO `{sink.name}` SELECT *, MAP[{pairs}] FROM ({query})"


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _table(table: Table, bootstrap: str, group: str, bounded: bool, sink: bool) -> str:
    columns = [_column(table, c) for c in table.columns]
    if sink:  # the INSERTs write the events' headers
        columns.append(f"`{_HEADERS_COLUMN}` MAP<STRING, BYTES> METADATA FROM 'headers'")
    elif any(c.metadata and c.metadata not in _RECORD and c.metadata != "key" for c in table.columns):
        columns.append(f"`{_HEADERS_COLUMN}` MAP<STRING, BYTES> METADATA FROM 'headers' VIRTUAL")
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
                "value.json.ignore-parse-errors": "true",
            }
        )
        if bounded:  # a query ends where the topic ended when it began
            options["scan.bounded.mode"] = "latest-offset"
    body = ",\n  ".join(columns)
    settings = ",\n  ".join(f"'{k}' = '{v}'" for k, v in sorted(options.items()))
    return f"CREATE TABLE `{table.name}` (\n  {body}\n) WITH (\n  {settings}\n)"


def _column(table: Table, column: Column) -> str:
    kind = _TYPES.get(column.type, column.type)
    name = f"`{column.name}`"
    if column.proctime:
        return f"{name} AS PROCTIME()"
    if column.metadata is None:
        return f"{name} {kind}"
    if column.metadata in _RECORD:
        return f"{name} {kind} METADATA FROM '{column.metadata}' VIRTUAL"
    if column.metadata == "key":
        raise InvalidSql(f"table {table.name}: a key metadata column has no Flink twin yet (use the table's data)")
    header = _HEADERS.get(column.metadata, f"ce_{column.metadata}")
    if kind not in ("STRING",):
        raise InvalidSql(f"table {table.name}: on Flink, metadata column {column.name} is read as a STRING")
    return f"{name} AS CAST(`{_HEADERS_COLUMN}`['{header}'] AS STRING)"
