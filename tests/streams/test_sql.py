"""Reading Flink SQL scripts: tables over topics, queries for the planner, errors with positions."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmotion.errors import InvalidSql
from inmotion.streams import Column, Query, Table, Watermark, parse
from inmotion.streams.dialect import TableArgument
from inmotion.streams.sql import Setting

BIDS = """
CREATE TABLE bids (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  ts TIMESTAMP_LTZ(3),
  `type` STRING METADATA VIRTUAL,
  `time` TIMESTAMP_LTZ(3) METADATA FROM 'time',
  WATERMARK FOR ts AS ts - INTERVAL '4' SECOND
) WITH ('topic' = 'bids');

SELECT window_start, window_end, auction, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
GROUP BY window_start, window_end, auction;

INSERT INTO top_bids
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bids
) WHERE rn <= 3
"""


def test_a_script_gives_its_tables_and_queries_in_order() -> None:
    table, select, insert = parse(BIDS)
    assert table == Table(
        name="bids",
        topic="bids",
        columns=(
            Column("auction", "BIGINT"),
            Column("bidder", "BIGINT"),
            Column("price", "BIGINT"),
            Column("ts", "TIMESTAMP_LTZ"),
            Column("type", "STRING", metadata="type", virtual=True),
            Column("time", "TIMESTAMP_LTZ", metadata="time"),
        ),
        watermark=Watermark("ts", 4000),
        start="earliest-offset",
    )
    assert isinstance(select, Query)
    assert select.sink is None
    assert select.text.startswith("SELECT window_start")
    assert select.text.endswith("auction")
    assert isinstance(insert, Query)
    assert insert.sink == "top_bids"


def test_window_table_functions_keep_their_table_arguments() -> None:
    for window in (
        "TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND)",
        "HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        "CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        "SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(ts), INTERVAL '5' MINUTES)",
        "SESSION(TABLE bids PARTITION BY (auction, bidder), DESCRIPTOR(ts), INTERVAL '5' MINUTES)",
        "TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '10' MINUTES)",
    ):
        [query] = parse(f"SELECT * FROM TABLE({window})")
        assert isinstance(query, Query)
        [argument] = query.tree.find_all(TableArgument)
        assert argument.this.name == "bids"
        keys = [column.name for column in argument.args.get("partition_by") or []]
        assert keys == (["auction", "bidder"] if "bidder" in window else ["auction"] if "PARTITION" in window else [])


def test_a_table_keyed_for_upserts_and_starting_at_the_end() -> None:
    [table] = parse(
        "CREATE TABLE totals (card STRING, spent DOUBLE, PRIMARY KEY (card) NOT ENFORCED)"
        " WITH ('topic' = 'card-totals', 'scan.startup.mode' = 'latest-offset')"
    )
    assert isinstance(table, Table)
    assert (table.primary_key, table.start, table.watermark) == (("card",), "latest-offset", None)


def test_a_watermark_on_the_column_itself_allows_no_delay() -> None:
    [table] = parse("CREATE TABLE t (ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('topic' = 't')")
    assert isinstance(table, Table)
    assert table.watermark == Watermark("ts", 0)


@pytest.mark.parametrize(
    ("sql", "message", "line", "column"),
    [
        ("SELECT FROM WHERE", "cannot read the SQL", 1, 0),
        ("CREATE TABLE t (a BIGINT)", "WITH ('topic' = '...') names the topic", 1, 14),
        ("CREATE TABLE t (a BIGINT) WITH ('topic' = 't',\n 'format' = 'json')", "unknown option 'format'", 2, 2),
        ("CREATE TABLE t (\n  a ARRAY<INT>) WITH ('topic' = 't')", "column a: unsupported type", 2, 3),
        ("CREATE TABLE t (a BIGINT, WATERMARK FOR a AS a) WITH ('topic' = 't')", "must be a TIMESTAMP", 1, 41),
        (
            "CREATE TABLE t (ts TIMESTAMP(3), WATERMARK FOR ts AS ts + INTERVAL '1' SECOND) WITH ('topic' = 't')",
            "unsupported watermark",
            1,
            48,
        ),
        ("CREATE TABLE t (a STRING METADATA FROM 'Not-Valid') WITH ('topic' = 't')", "no metadata 'Not-Valid'", 1, 17),
        ("CREATE TABLE t (a BIGINT, a STRING) WITH ('topic' = 't')", "column a is declared twice", 1, 27),
        ("CREATE TABLE t (a BIGINT, PRIMARY KEY (b) NOT ENFORCED) WITH ('topic' = 't')", "names no column b", 1, 40),
        ("SELECT 1;\n  DROP TABLE t", "unsupported statement DROP TABLE", 2, 3),
        ("SELECT 'unterminated", "cannot read the SQL", 0, 0),
        ("SELECT 1;\n ELSE", "'ELSE' is no statement", 2, 2),
        (
            "SET 'table.exec.sink.not-null-enforcer' = 'DROP'",
            "unknown option 'table.exec.sink.not-null-enforcer'",
            1,
            5,
        ),
        ("SET 'table.exec.state.ttl' = 'a while'", "'a while' is no duration", 0, 0),
        ("SET x = 1", "SET takes one 'option' = 'value'", 1, 5),
        (
            "CREATE TABLE t (ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '500' MILLISECOND)"
            " WITH ('topic' = 't')",
            "Flink takes no MILLISECOND intervals: write INTERVAL '0.5' SECOND",
            1,
            68,
        ),
    ],
)
def test_sql_the_engine_cannot_take_is_named_with_its_position(sql: str, message: str, line: int, column: int) -> None:
    with pytest.raises(InvalidSql, match=re.escape(message)) as raised:
        parse(sql)
    assert raised.value.line == line
    if column:
        assert raised.value.column == column


@given(st.text(max_size=200))
def test_any_text_is_statements_or_invalid_sql(text: str) -> None:
    with contextlib.suppress(InvalidSql):  # anything else raised fails the test
        assert all(isinstance(statement, Table | Query) for statement in parse(text))


@given(
    st.lists(
        st.sampled_from(
            [
                "SELECT",
                "*",
                "FROM",
                "TABLE",
                "(",
                ")",
                "TUMBLE",
                "DESCRIPTOR",
                ",",
                "INTERVAL",
                "'5'",
                "SECOND",
                "CREATE",
                "WATERMARK",
                "FOR",
                "AS",
                "ts",
                "-",
                "METADATA",
                "WITH",
                "'topic'",
                "=",
                ";",
                "GROUP BY",
                "BIGINT",
                "TIMESTAMP_LTZ(3)",
            ]
        ),
        max_size=30,
    )
)
def test_any_sequence_of_flink_words_is_statements_or_invalid_sql(words: list[str]) -> None:
    with contextlib.suppress(InvalidSql):
        assert all(isinstance(statement, Table | Query) for statement in parse(" ".join(words)))


def test_set_gives_options_and_takes_flinks_durations() -> None:
    settings = parse(
        "SET 'table.exec.state.ttl' = '1 h'; SET 'table.exec.source.idle-timeout' = '500ms';"
        " SET 'execution.checkpointing.interval' = '10 s'; SET 'parallelism.default' = '4'"
    )
    assert settings == [
        Setting("table.exec.state.ttl", "1 h"),
        Setting("table.exec.source.idle-timeout", "500ms"),
        Setting("execution.checkpointing.interval", "10 s"),
        Setting("parallelism.default", "4"),
    ]
    assert [s.duration_ms() for s in settings[:3] if isinstance(s, Setting)] == [3_600_000, 500, 10_000]


def test_tables_become_flinks_kafka_tables() -> None:
    from inmotion.streams.flink import flink_ddl

    script = """
    CREATE TABLE bids (auction BIGINT, price DECIMAL(10, 2), ts TIMESTAMP_LTZ(3), `type` STRING METADATA VIRTUAL,
      `offset` BIGINT METADATA VIRTUAL, seen AS PROCTIME(), WATERMARK FOR ts AS ts - INTERVAL '0.5' SECOND)
      WITH ('topic' = 'bids');
    CREATE TABLE totals (auction BIGINT, total DOUBLE, PRIMARY KEY (auction) NOT ENFORCED) WITH ('topic' = 'totals');
    """
    bids, totals = flink_ddl(parse(script), "127.0.0.1:9092")
    assert "`price` DOUBLE" in bids
    assert "`type` AS CAST(`__headers`['ce_type'] AS STRING)" in bids
    assert "`__headers` MAP<STRING, BYTES> METADATA FROM 'headers' VIRTUAL" in bids
    assert "`offset` BIGINT METADATA FROM 'offset' VIRTUAL" in bids
    assert "WATERMARK FOR `ts` AS `ts` - INTERVAL '0.5' SECOND" in bids
    assert "`seen` AS PROCTIME()" in bids
    assert "'connector' = 'kafka'" in bids
    assert "'scan.bounded.mode' = 'latest-offset'" in bids
    assert "PRIMARY KEY (`auction`) NOT ENFORCED" in totals
    assert "'connector' = 'upsert-kafka'" in totals
    with pytest.raises(InvalidSql, match="key metadata column has no Flink twin"):
        flink_ddl(parse("CREATE TABLE t (k STRING METADATA FROM 'key') WITH ('topic' = 't')"), "b:1")
