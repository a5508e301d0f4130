"""Continuous SQL: the embedded engine on Nexmark's events, next to reading the same records
raw and (with --flink) PyFlink at parallelism 1 reading the same events from Kafka, in one run.

    .venv/bin/python bench/streams.py                 # 500,000 Nexmark events on SQLite
    .venv/bin/python bench/streams.py --quick         # a smoke run at a tenth of the size
    .venv/bin/python bench/streams.py --flink         # also PyFlink (scripts/flink env; scripts/kafka up)
    .venv/bin/python bench/streams.py --queries q5,q7 # some of the queries

- Throughput: each query run once over the topics (Job.query: read, decode, compute, results
  dropped as Flink's blackhole sink drops them): the topic's bids per CPU-second of this process
  (all its threads), and per wall second; the bids whatever topics a query reads (q8 reads
  persons and auctions), as PyFlink's figures are: the ratio is that of the CPU seconds. The raw
  yardstick reads the same records and decodes their JSON with msgspec: the floor any engine on
  this log pays before it computes anything.
- Cold start: a windowed query over a small topic in a fresh interpreter, from its first import
  to the first results; and the command `inmotion sql query`, from process start to exit.
- Result latency: a job (HOP count per auction, INSERT INTO a topic) while bids arrive at
  10,000 a second with their event time the wall clock: from the append of the bid that moved
  the watermark past a window's end to the append of that window's results.

Targets (issue 16): >= 1x PyFlink per core on every query; cold start < 0.5 s; p99 result
latency <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from inmotion.events import Event
from inmotion.log import Log, Message, TopicConfig, connect
from inmotion.streams import Job, nexmark
from inmotion.streams.flink import flink_ddl
from inmotion.streams.sql import parse
from inmotion.testing import wait_until

REPO = Path(__file__).resolve().parent.parent
INMOTION = str(Path(sys.executable).parent / "inmotion")


def bids_in(log: Log) -> int:
    return sum(log.latest_offset("bids", p) for p in range(log.partition_count("bids")))


def raw(log: Log) -> tuple[float, float]:
    """Read every bid record and decode its JSON: (per CPU-second, per wall second)."""
    decoder = msgspec.json.Decoder()
    cpu, wall, count = time.process_time(), time.perf_counter(), 0
    for partition in range(log.partition_count("bids")):
        offset = 0
        while records := log.read("bids", partition, offset, 10_000):
            for record in records:
                decoder.decode(record.value or b"")
            count += len(records)
            offset = records[-1].offset + 1
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def query(log: Log, name: str) -> tuple[float, float, int]:
    """Run a Nexmark query once: (the topic's bids per CPU-second, per wall second, result rows).
    The bids in the topic, whatever topics the query reads (q8 reads persons and auctions): the
    figure PyFlink's runs are divided by too, so the two compare as their CPU seconds do."""
    job = Job(log, nexmark.DDL + nexmark.QUERIES[name])
    cpu, wall, rows = time.process_time(), time.perf_counter(), 0
    for _, table in job.query():
        rows += table.num_rows
    bids = bids_in(log)
    return bids / (time.process_time() - cpu), bids / (time.perf_counter() - wall), rows


ENGINE_START = """
import sys, time
started = time.perf_counter()
from inmotion.log import connect
from inmotion.streams import Job
log = connect(sys.argv[1], create=False)
for _ in Job(log, sys.argv[2]).query():
    break
print(time.perf_counter() - started)
"""


def cold_start(directory: Path) -> tuple[float, float]:
    """(the engine: a fresh interpreter's imports to a query's first results; the command
    `inmotion sql query`: process start to exit), the best of 3."""
    broker = f"sqlite:///{directory}/cold.db"
    with connect(broker) as log:
        nexmark.write(log, 50)
    sql = nexmark.DDL + nexmark.QUERIES["q5-counts"]
    engine = command = float("inf")
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", ENGINE_START, broker, sql], check=True, capture_output=True)
        engine = min(engine, float(run.stdout))
        started = time.perf_counter()
        subprocess.run([INMOTION, "sql", "query", sql, "--json", "--broker", broker], check=True, capture_output=True)
        command = min(command, time.perf_counter() - started)
    return engine, command


LATENCY_JOB = """
CREATE TABLE bid (auction BIGINT, price BIGINT, dateTime TIMESTAMP_LTZ(3),
  WATERMARK FOR dateTime AS dateTime - INTERVAL '0.2' SECOND) WITH ('topic' = 'live');
CREATE TABLE counts (auction BIGINT, num BIGINT, endtime TIMESTAMP_LTZ(3)) WITH ('topic' = 'counts');
INSERT INTO counts
SELECT auction, COUNT(*), window_end FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '1' SECOND,
  INTERVAL '2' SECOND)) GROUP BY auction, window_start, window_end;
"""


def latency(directory: Path, seconds: float, rate: int = 10_000) -> list[float]:
    """Milliseconds from the bid that closes a window to its results, at `rate` bids a second."""
    log = connect(f"sqlite:///{directory}/latency.db")
    log.create_topic("live", TopicConfig())
    appended: list[tuple[int, int]] = []  # (the batch's newest event time, its append time), ms
    stop = threading.Event()
    job = Job(log, LATENCY_JOB, name="latency")
    runner = threading.Thread(target=job.run, args=(stop,))
    runner.start()
    batch, n = rate // 100, 0
    started = time.time()
    while time.time() - started < seconds:
        now_ms = int(time.time() * 1000)
        stamp = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()
        messages = [
            Message.from_event(
                Event(type="bid", source="/bench", data={"auction": (n + i) % 100, "price": 1, "dateTime": stamp})
            )
            for i in range(batch)
        ]
        n += batch
        log.append("live", messages)
        appended.append((now_ms, int(time.time() * 1000)))
        time.sleep(max(0.0, started + n / rate - time.time()))
    wait_until(lambda: job.pipelines[0].progress.read == n, what="the job to read every bid")
    stop.set()
    runner.join()
    found = [r for p in range(log.partition_count("counts")) for r in log.read("counts", p, 0, 1_000_000)]
    ends: dict[int, int] = {}
    for record in found:
        window_end = datetime.fromisoformat(msgspec.json.decode(record.value or b"{}")["endtime"])
        ends.setdefault(int(window_end.timestamp() * 1000), record.timestamp)
    delays: list[float] = []
    for end, shown in ends.items():
        closer = next((at for newest, at in appended if newest - 200 >= end - 1), None)
        if closer is not None:
            delays.append(shown - closer)
    log.close()
    return delays


def pyflink(events: int, directory: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """PyFlink's figures on the same events and queries, from Kafka (bench/pyflink_nexmark.py,
    at parallelism 1, after a warm-up run of the first query)."""
    python = REPO / ".venv-flink" / "bin" / "python"
    if not python.exists():
        raise SystemExit("PyFlink is not installed: scripts/flink env")
    queries, ddl = directory / "queries.json", directory / "ddl.json"
    queries.write_text(json.dumps({name: nexmark.QUERIES[name] for name in names}))
    bootstrap = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    with connect(f"kafka://{bootstrap}") as log:
        for topic in nexmark.TOPICS:
            if topic in log.list_topics():
                log.delete_topic(topic)
        nexmark.write(log, events)
    ddl.write_text(json.dumps(flink_ddl(parse(nexmark.DDL), bootstrap)))
    script = str(REPO / "bench" / "pyflink_nexmark.py")
    arguments = ["--bootstrap", bootstrap, "--json", "--warmup", "--queries", str(queries), "--ddl", str(ddl)]
    output = subprocess.run(
        [str(python), script, *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {row["query"]: row for row in map(json.loads, output.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="a tenth of the events, a shorter latency run")
    parser.add_argument("--flink", action="store_true", help="also PyFlink (scripts/flink env; scripts/kafka up)")
    parser.add_argument("--queries", help=f"a comma-separated few of {', '.join(nexmark.QUERIES)} (default: all)")
    args = parser.parse_args()
    names = args.queries.split(",") if args.queries else list(nexmark.QUERIES)
    unknown = [name for name in names if name not in nexmark.QUERIES]
    if unknown:
        parser.error(f"unknown queries {', '.join(unknown)} (the queries are {', '.join(nexmark.QUERIES)})")
    events = args.events // 10 if args.quick else args.events
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with connect(f"sqlite:///{directory}/nexmark.db") as log:
            nexmark.write(log, events)
            bids = bids_in(log)
            print(f"Nexmark: {events:,} events, {bids:,} bids, on SQLite ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
            cpu, wall = raw(log)
            print(f"  {'raw read + JSON decode':<24} {cpu:>12,.0f} bids/CPU-s {wall:>12,.0f} bids/s")
            ours = {}
            for name in names:
                cpu, wall, rows = query(log, name)
                ours[name] = cpu
                print(f"  {name:<24} {cpu:>12,.0f} bids/CPU-s {wall:>12,.0f} bids/s {rows:>10,} rows")
        flink = pyflink(events, directory, names) if args.flink else {}
        for name, row in flink.items():
            ratio = ours.get(name, 0) / row["events_per_cpu_second"] if row.get("events_per_cpu_second") else 0
            print(
                f"  PyFlink {name:<16} {row['events_per_cpu_second']:>12,.0f} bids/CPU-s"
                f"  start {row['startup_seconds']:.1f} s  -> inmotion {ratio:.2f}x"
            )
        engine, command = cold_start(directory)
        print(f"cold start: engine {engine:.2f} s (imports to first results), `inmotion sql query` {command:.2f} s")
        delays = latency(directory, 3.0 if args.quick else 10.0)
        if delays:
            p99 = statistics.quantiles(delays, n=100, method="inclusive")[98] if len(delays) > 1 else delays[0]
            print(
                f"result latency at 10,000 bids/s: {len(delays)} windows, p50 {statistics.median(delays):.0f} ms,"
                f" p99 {p99:.0f} ms, max {max(delays):.0f} ms"
            )


if __name__ == "__main__":
    main()
