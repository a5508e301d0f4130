"""PyFlink as a yardstick: Nexmark's bid queries in Flink SQL over a Kafka topic, at parallelism 1.

    scripts/flink env && KAFKA_PORT=9292 scripts/kafka up
    .venv-flink/bin/python bench/pyflink_nexmark.py --bootstrap 127.0.0.1:9292 --events 500000 --produce
    .venv-flink/bin/python bench/pyflink_nexmark.py --bootstrap 127.0.0.1:9292 --queries queries.json --json

The queries come in a file (a JSON object, name -> SQL over the table `bid`): bench/streams.py
writes inmotion.streams.nexmark's, so that both engines run the same text.

Each query runs in a fresh TableEnvironment (streaming mode, a local mini-cluster) that reads the
topic `bids` from its earliest offset to the latest one at the start ('scan.bounded.mode'), so
the job finishes, and writes its results to a blackhole sink. The figures are of the JVM that
PyFlink starts (it holds the mini-cluster, and these queries run no Python code):
- start-up: from creating the TableEnvironment to the job's status RUNNING (planning, code
  generation, the mini-cluster's start), with the JVM's CPU in that time. The JVM itself is
  started once, before the first query, and timed apart (jvm_start_seconds).
- run: from RUNNING to FINISHED, wall seconds and the JVM's CPU seconds (utime + stime of
  /proc/<java pid>/stat), and events per JVM CPU-second: the throughput per core.
`events` is the number of records in the topic (every one is read, a bid or not); --events N
with --produce first replaces the topic with N bids, seeded, 1 ms of event time apart from
2026-12-04T10:00:00Z, as CloudEvents in the Kafka binary binding (ce_* headers are ignored).
--verify counts the rows Flink parses and those whose dateTime it could not parse (null).
The first query in a JVM pays for loading the planner and for a cold JIT (start-up ~6 s instead
of ~1.3 s here, and fewer events per CPU-second): --warmup runs it once first, unreported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

# in .venv-flink only: mypy runs in .venv
from py4j.protocol import Py4JJavaError  # type: ignore[import-not-found]
from pyflink.java_gateway import get_gateway  # type: ignore[import-not-found]
from pyflink.table import (  # type: ignore[import-not-found]
    DataTypes,
    EnvironmentSettings,
    TableDescriptor,
    TableEnvironment,
)
from pyflink.table.expressions import col  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parent.parent
TOPIC = os.environ.get("NEXMARK_BIDS", "bids")
START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
CHANNELS = ("Google", "Facebook", "Baidu", "Apple")

DDL = """
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
  `dateTime` TIMESTAMP_LTZ(3), extra STRING,
  WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = 'pyflink-nexmark',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset',
  'format' = 'json',
  'json.timestamp-format.standard' = 'ISO-8601',
  'json.ignore-parse-errors' = 'true'
)
"""

# dateTime is quoted: Calcite 1.34 (Flink 2.x) made DATETIME a keyword, as nexmark/nexmark#63 found


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bid(rng: random.Random, n: int) -> bytes:
    at = START + timedelta(milliseconds=n)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{at.microsecond // 1000:03d}Z" if at.microsecond else "Z")
    word = "".join(rng.choice("abcdefghij") for _ in range(5))
    return json.dumps(
        {
            "auction": 1000 + rng.randrange(1000),
            "bidder": 2000 + rng.randrange(10_000),
            "price": rng.randrange(100, 1_000_000),
            "channel": rng.choice(CHANNELS),
            "url": f"https://www.nexmark.com/{word}/item.htm?query=1&channel_id={rng.randrange(1 << 20)}",
            "dateTime": stamp,
            "extra": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20)),
        },
        separators=(",", ":"),
    ).encode()


def produce(bootstrap: str, count: int) -> None:
    """Replace the topic with `count` bids (one partition, so the order is event-time order)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    if TOPIC in admin.list_topics(timeout=10).topics:
        admin.delete_topics([TOPIC])[TOPIC].result()
    deadline = time.monotonic() + 60
    while True:  # a deleted topic lingers a moment
        try:
            admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result()
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    rng = random.Random(42)
    started = time.monotonic()
    for n in range(count):
        headers: list[tuple[str, str | bytes | None]] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"%d" % n),
            ("ce_source", b"/nexmark"),
            ("ce_type", b"nexmark.bid"),
            ("content-type", b"application/json"),
        ]
        value = bid(rng, n)
        while True:
            try:
                producer.produce(TOPIC, value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise SystemExit(f"{TOPIC}: not every bid was delivered")
    log(f"produced {count:,} bids to {TOPIC} in {time.monotonic() - started:.1f} s")


def records_in_topic(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "pyflink-nexmark-count"})
    try:
        topic = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC]
        if topic.error is not None:
            raise SystemExit(f"no topic {TOPIC} on {bootstrap} ({topic.error}): try --produce")
        total = 0
        for partition in topic.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def connector_jar() -> str:
    done = subprocess.run([str(REPO / "scripts" / "flink"), "jar"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr.strip())
    return done.stdout.strip()


def java_pid() -> int:
    """The JVM PyFlink started: a `java` process among this one's descendants."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            names[int(entry)] = stat[stat.index("(") + 1 : stat.rindex(")")]
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        if names[pid] == "java":
            return pid
        todo += children.get(pid, [])
    raise SystemExit("no java process under this one: did PyFlink start its JVM?")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


TABLES: list[str] = []
"""The CREATE TABLEs to run (--ddl), else DDL's table bid."""


def table_environment(bootstrap: str, jar: str, *, batch: bool = False) -> TableEnvironment:
    settings = EnvironmentSettings.in_batch_mode() if batch else EnvironmentSettings.in_streaming_mode()
    env = TableEnvironment.create(settings)
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.jars", f"file://{jar}")
    for statement in TABLES or [DDL.format(topic=TOPIC, bootstrap=bootstrap)]:
        env.execute_sql(statement)
    return env


def run(name: str, sql: str, bootstrap: str, jar: str, java: int, events: int) -> dict[str, Any]:
    cpu_before, started = cpu_seconds(java), time.monotonic()
    env = table_environment(bootstrap, jar)
    result = env.sql_query(sql).execute_insert(TableDescriptor.for_connector("blackhole").build())
    job = result.get_job_client()._j_job_client  # Java's: PyFlink's JobStatus has no INITIALIZING
    try:
        while job.getJobStatus().get().name() in ("INITIALIZING", "CREATED"):
            time.sleep(0.005)
    except Py4JJavaError:  # the job has ended already and shut its mini-cluster down
        pass
    cpu_running, running = cpu_seconds(java), time.monotonic()
    result.wait()  # raises if the job fails; its mini-cluster is gone once it ends
    cpu_after, finished = cpu_seconds(java), time.monotonic()
    cpu = cpu_after - cpu_running
    return {
        "query": name,
        "events": events,
        "wall_seconds": round(finished - running, 3),
        "jvm_cpu_seconds": round(cpu, 3),
        "events_per_cpu_second": round(events / cpu) if cpu else None,
        "startup_seconds": round(running - started, 3),
        "startup_jvm_cpu_seconds": round(cpu_running - cpu_before, 3),
    }


def collect(
    name: str, sql: str, bootstrap: str, jar: str, directory: Path, key: list[int] | None = None, wait: float = 0
) -> int:
    """Write a query's rows to DIRECTORY/NAME.jsonl (a JSON array each; timestamps as Flink's
    CAST to STRING writes them, in UTC: PyFlink cannot bring an Instant back); how many. An
    updating query's changes are applied: the rows are those it ends with. PyFlink's to_pandas
    does that for retractions, fast (Arrow batches); a Top-N's changes come as upserts
    (UPDATE_AFTER without UPDATE_BEFORE), which only its `key` (the positions of the query's key
    columns) tells how to apply: those are read row by row, a row replacing the one of its key.
    With `wait` (seconds), the query runs that long and is cancelled, its rows so far taken: for
    a query that never ends (over unbounded tables; processing-time windows fire by the clock
    alone, so a bounded run ends before they do)."""
    env = table_environment(bootstrap, jar)
    table = env.sql_query(sql)
    schema = table.get_schema()
    columns = [
        col(name).cast(DataTypes.STRING()) if "TIMESTAMP" in str(kind).upper() else col(name)
        for name, kind in zip(schema.get_field_names(), schema.get_field_data_types(), strict=True)
    ]
    if wait:
        rows = _rows_for(table.select(*columns), wait)
    elif key is None:
        rows = [[_plain(v) for v in row] for row in table.select(*columns).to_pandas().itertuples(index=False)]
    else:
        keyed: dict[tuple[Any, ...], list[Any]] = {}
        with table.select(*columns).execute().collect() as changes:
            for change in changes:
                values = [_plain(v) for v in change]
                if change.get_row_kind().name in ("UPDATE_BEFORE", "DELETE"):
                    keyed.pop(tuple(values[i] for i in key), None)
                else:
                    keyed[tuple(values[i] for i in key)] = values
        rows = list(keyed.values())
    (directory / f"{name}.jsonl").write_text("".join(f"{json.dumps(row)}\n" for row in rows))
    return len(rows)


def _rows_for(table: Any, seconds: float) -> list[list[Any]]:
    """The rows an append-only query gives in `seconds`, then cancelled."""
    result = table.execute()
    rows: list[list[Any]] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            with result.collect() as changes:
                for change in changes:
                    if change.get_row_kind().name != "INSERT":
                        raise ValueError(f"a {change.get_row_kind().name} row: the query is not append-only")
                    rows.append([_plain(v) for v in change])
        except Py4JJavaError:  # cancelled
            pass
        except BaseException as exc:
            failures.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    result.get_job_client().cancel().result()
    reader.join(30)
    if failures:
        raise failures[0]
    return list(rows)


def _plain(value: Any) -> Any:
    """A value of a pandas row as JSON has it: NULL (pandas' NaN) as None, a decimal as text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value  # numpy's scalars


def verify(bootstrap: str, jar: str) -> None:
    env = table_environment(bootstrap, jar, batch=True)  # one row, not one update per record
    # CAST: PyFlink cannot bring a TIMESTAMP_LTZ (a java.time.Instant) back to Python
    query = "SELECT COUNT(*), COUNT(`dateTime`), CAST(MIN(`dateTime`) AS STRING), CAST(MAX(`dateTime`) AS STRING)"
    with env.execute_sql(f"{query} FROM bid").collect() as rows:
        ((count, timed, first, last),) = rows
    log(f"verify: {count:,} rows parsed, {count - timed:,} without a dateTime; {first} .. {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="the Kafka bootstrap address, host:port")
    parser.add_argument("--events", type=int, help="bids to produce with --produce (else: the topic's records)")
    parser.add_argument(
        "--queries",
        type=Path,
        help="a JSON object of queries by name over the table bid, run in order (bench/streams.py writes"
        " inmotion.streams.nexmark's); without it, only --produce and --verify run",
    )
    parser.add_argument("--produce", action="store_true", help="first replace the topic with --events bids")
    parser.add_argument("--verify", action="store_true", help="first count the rows Flink parses")
    parser.add_argument("--warmup", action="store_true", help="first run the first query once, unreported")
    parser.add_argument("--json", action="store_true", help="one JSON object per query")
    parser.add_argument(
        "--ddl",
        type=Path,
        help="a JSON list of the CREATE TABLEs to declare (inmotion.streams.flink writes them from a script's)",
    )
    parser.add_argument(
        "--results", type=Path, help="instead of timing the queries, write their rows to RESULTS/<query>.jsonl"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        help="with --results: run each query this many seconds, then cancel it and take its rows so far"
        " (queries that never end: unbounded tables, processing-time windows)",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        help="with --results: a JSON object, query name -> the positions of its key columns, for the"
        " queries whose changes Flink sends as upserts (Top-N)",
    )

    args = parser.parse_args()
    if args.ddl:
        TABLES.extend(json.loads(args.ddl.read_text()))
    if args.produce:
        if not args.events:
            parser.error("--produce needs --events N")
        produce(args.bootstrap, args.events)
    events = records_in_topic(args.bootstrap)
    if args.events and events != args.events:
        log(f"warning: {TOPIC} holds {events:,} records, not --events {args.events:,}; the figures are per record")
    jar = connector_jar()
    started = time.monotonic()
    get_gateway()
    jvm_start = time.monotonic() - started
    java = java_pid()
    log(f"JVM (pid {java}) started in {jvm_start:.2f} s; {events:,} records in {TOPIC}")
    if args.verify:
        verify(args.bootstrap, jar)
    queries: dict[str, str] = json.loads(args.queries.read_text()) if args.queries else {}
    if args.results:
        keys: dict[str, list[int]] = json.loads(args.keys.read_text()) if args.keys else {}
        for name, sql in queries.items():
            found = collect(name, sql, args.bootstrap, jar, args.results, keys.get(name), args.wait)
            log(f"{name}: {found:,} rows")
        return
    if args.warmup and queries:
        first = next(iter(queries))
        warm = run(first, queries[first], args.bootstrap, jar, java, events)
        log(f"warm-up: {first} in {warm['startup_seconds'] + warm['wall_seconds']:.1f} s")
    for name, sql in queries.items():
        row = run(name, sql, args.bootstrap, jar, java, events) | {"jvm_start_seconds": round(jvm_start, 3)}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{name:<10} {events:>10,} events  wall {row['wall_seconds']:6.2f} s"
                f"  JVM CPU {row['jvm_cpu_seconds']:6.2f} s  {row['events_per_cpu_second'] or 0:>9,} events/JVM-CPU-s"
                f"  start-up {row['startup_seconds']:5.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
