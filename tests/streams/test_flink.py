"""The embedded engine against Apache Flink: the same SQL over the same Nexmark events on Kafka
gives the same rows. Flink runs in PyFlink (`scripts/flink env` installs it apart, in
.venv-flink; `scripts/test` does), through bench/pyflink_nexmark.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from inmotion.events import Event
from inmotion.log import TopicConfig, connect
from inmotion.streams import Job, nexmark
from inmotion.streams.flink import flink_ddl
from inmotion.streams.job import iso_millis, job_results
from inmotion.streams.sql import parse
from inmotion.testing import wait_until
from tests.test_cli import INMOTION

ROOT = Path(__file__).resolve().parents[2]
PYFLINK = ROOT / ".venv-flink" / "bin" / "python"
STEP = timedelta(milliseconds=10)

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

QUERIES = {
    **nexmark.QUERIES,
    "tumble-top3": (
        "SELECT window_start, auction, num, rownum FROM ("
        " SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY num DESC, auction DESC) AS rownum"
        " FROM (SELECT window_start, window_end, auction, COUNT(*) AS num"
        "  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '1' SECOND))"
        "  GROUP BY window_start, window_end, auction)"
        ") WHERE rownum <= 3"
    ),
    "cumulate": (
        "SELECT window_start, window_end, COUNT(*) AS n, SUM(price) AS total, MIN(price) AS low"
        " FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '0.1' SECOND, INTERVAL '1' SECOND))"
        " GROUP BY window_start, window_end"
    ),
    "session": (
        "SELECT bidder, window_start, window_end, COUNT(*) AS n, MAX(price) AS top"
        " FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(`dateTime`), INTERVAL '0.002' SECOND))"
        " GROUP BY window_start, window_end, bidder"
    ),
    "new-sellers": (  # a window join: persons who opened an auction in the 10 s they signed up
        "SELECT P.id, P.name, P.window_start FROM"
        " (SELECT * FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))) P"
        " JOIN (SELECT * FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))) A"
        " ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end"
    ),
    "busy-auctions": (  # a window join of a window aggregation (with HAVING) and a windowed table
        "SELECT B.auction, B.n, B.top, A.seller, B.window_start FROM (SELECT auction, COUNT(*) AS n, MAX(price) AS top,"
        " window_start, window_end FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '0.1' SECOND,"
        " INTERVAL '0.2' SECOND)) GROUP BY auction, window_start, window_end HAVING COUNT(*) > 1) B"
        " JOIN (SELECT id, seller, window_start, window_end FROM TABLE(HOP(TABLE auction, DESCRIPTOR(`dateTime`),"
        " INTERVAL '0.1' SECOND, INTERVAL '0.2' SECOND))) A"
        " ON B.auction = A.id AND B.window_start = A.window_start AND B.window_end = A.window_end"
    ),
    "window-maxima": (  # a regular join of a stream and a window aggregation (q7 with windows of 0.1 s)
        "SELECT B.auction, B.price, M.ends FROM bid B JOIN (SELECT MAX(price) AS maxprice, window_end AS ends"
        " FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '0.1' SECOND))"
        " GROUP BY window_start, window_end) M ON B.price = M.maxprice"
        " WHERE B.`dateTime` BETWEEN M.ends - INTERVAL '0.1' SECOND AND M.ends"
    ),
    "quick-bids": (  # an interval join: bids within a second of their auction's opening
        "SELECT A.id, B.bidder, B.price FROM auction A JOIN bid B ON A.id = B.auction"
        " AND B.`dateTime` BETWEEN A.`dateTime` AND A.`dateTime` + INTERVAL '1' SECOND"
    ),
    "winning-bids": (  # a regular join: its time conditions bound it one way only (expires is no event time)
        "SELECT A.id, A.seller, B.bidder, B.price FROM auction A, bid B WHERE A.id = B.auction"
        " AND B.`dateTime` BETWEEN A.`dateTime` AND A.expires AND B.price > A.reserve"
    ),
    "first-bids": (  # deduplication keeping each bidder's first bid
        "SELECT bidder, auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY `dateTime`)"
        " AS rn FROM bid) WHERE rn = 1"
    ),
    "top-apple-bids": (  # a Top-N of one partition, over a filtered query
        "SELECT price, auction, rn FROM (SELECT auction, price, ROW_NUMBER() OVER (ORDER BY price DESC, auction)"
        " AS rn FROM bid WHERE channel = 'Apple') WHERE rn <= 5"
    ),
    "auction-stats": (  # updating: each auction's row as it ends
        "SELECT auction, COUNT(*) AS n, MAX(price) AS top, AVG(price) AS mean, SUM(price) AS total,"
        " SUM(DISTINCT bidder) AS bidders, AVG(DISTINCT bidder) FILTER (WHERE price > 1000) AS big"
        " FROM bid GROUP BY auction HAVING COUNT(*) > 2"
    ),
    "all-bids": "SELECT COUNT(*) AS n, MIN(price) AS low, AVG(CAST(price AS DOUBLE)) AS mean FROM bid",
    "filters": (
        "SELECT auction, channel, UPPER(channel) AS up, CHAR_LENGTH(url) AS n, price / 7 AS seventh,"
        " CASE WHEN price > 10000 THEN 'high' ELSE 'low' END AS band FROM bid"
        " WHERE channel LIKE 'G%' AND MOD(bidder, 3) <> 0"
    ),
    "texts": (
        "SELECT auction, DATE_FORMAT(`dateTime`, 'yy/M/d HH''h''mm:ss.SSS'), REGEXP_EXTRACT(url, 'www\\.([a-z]+)'),"
        " REGEXP_EXTRACT(url, 'channel_id=[0-9]+', 0), SPLIT_INDEX(url, '/', 0), SPLIT_INDEX(url, '?', 1),"
        " SPLIT_INDEX(channel, '-', 1) FROM bid WHERE MOD(price, 5) = 0"
    ),
    "q5-fast": nexmark.QUERIES["q5"].replace("'2' SECOND", "'0.05' SECOND").replace("'10' SECOND", "'0.25' SECOND"),
    "cascade": (  # an aggregation of a window aggregation, filtered on both levels
        "SELECT ws, channel, MAX(bids) AS most, SUM(bids) AS total, COUNT(*) AS bidders FROM ("
        " SELECT bidder, channel, COUNT(*) AS bids, window_start AS ws, window_end AS we"
        " FROM TABLE(CUMULATE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '0.05' SECOND, INTERVAL '0.2' SECOND))"
        " GROUP BY bidder, channel, window_start, window_end HAVING COUNT(*) > 1"
        ") WHERE bids < 40 GROUP BY ws, we, channel"
    ),
    "regroup": (  # an updating aggregation of an updating aggregation of a join: rows move between groups
        "SELECT bids, COUNT(*) AS auctions, MIN(top) AS low, MAX(top) AS high, SUM(top) AS total,"
        " COUNT(DISTINCT category) AS categories FROM ("
        " SELECT A.id, A.category, COUNT(*) AS bids, MAX(B.price) AS top FROM auction A JOIN bid B ON A.id = B.auction"
        " GROUP BY A.id, A.category HAVING MAX(B.price) > 1000"
        ") WHERE MOD(id, 7) <> 0 GROUP BY bids"
    ),
    "merged": (  # a query in FROM that projects and filters, its time column renamed
        "SELECT ch, COUNT(*) AS bids, MAX(dollars) AS top, TUMBLE_START(t, INTERVAL '0.1' SECOND) AS ws FROM ("
        " SELECT UPPER(channel) AS ch, price / 100 AS dollars, `dateTime` AS t FROM bid WHERE MOD(auction, 2) = 0"
        ") v WHERE dollars > 10 GROUP BY ch, TUMBLE(t, INTERVAL '0.1' SECOND)"
    ),
    "left-join": (  # an outer join's rows alone are given with NULLs, then deleted if a match comes
        "SELECT B.auction, B.price, A.category FROM bid B LEFT JOIN auction A ON B.auction = A.id AND A.category = 10"
        " WHERE MOD(B.price, 3) = 0"
    ),
    "full-join": "SELECT A.id, P.id, P.name FROM auction A FULL OUTER JOIN person P ON A.seller = P.id",
    "unbid-auctions": (  # an outer interval join: an auction alone once no bid can fall in its first 5 ms
        "SELECT A.id, A.category, B.price FROM auction A LEFT JOIN bid B ON A.id = B.auction"
        " AND B.`dateTime` BETWEEN A.`dateTime` AND A.`dateTime` + INTERVAL '0.005' SECOND AND MOD(B.bidder, 7) = 0"
    ),
    "over-range": (  # OVER aggregates in event time: rows of one millisecond are peers
        "SELECT auction, price, `dateTime`, SUM(price) OVER w AS recent, COUNT(*) OVER w AS n FROM bid"
        " WHERE MOD(bidder, 5) = 0".replace(
            "OVER w",
            "OVER (PARTITION BY auction ORDER BY `dateTime` RANGE BETWEEN INTERVAL '0.05' SECOND PRECEDING"
            " AND CURRENT ROW)",
        )
    ),
    "over-rows": (
        "SELECT bidder, price, MAX(price) OVER (PARTITION BY bidder ORDER BY `dateTime` ROWS BETWEEN 2 PRECEDING"
        " AND CURRENT ROW) AS top3, AVG(price) OVER (PARTITION BY bidder ORDER BY `dateTime` ROWS BETWEEN 2"
        " PRECEDING AND CURRENT ROW) AS mean3 FROM bid WHERE channel = 'Apple'"
    ),
    "over-all": (
        "SELECT channel, COUNT(*) OVER (PARTITION BY channel ORDER BY `dateTime`) AS so_far,"
        " MIN(price) OVER (PARTITION BY channel ORDER BY `dateTime`) AS lowest FROM bid WHERE MOD(auction, 3) = 0"
    ),
    "distinct-windows": (
        "SELECT window_start, channel, COUNT(DISTINCT bidder) AS bidders, COUNT(*) FILTER (WHERE price > 1000) AS big,"
        " MAX(price) FILTER (WHERE bidder > 1050) AS top,"
        " COUNT(DISTINCT auction) FILTER (WHERE price < 500) AS cheap"
        " FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '0.1' SECOND, INTERVAL '0.3' SECOND))"
        " GROUP BY window_start, window_end, channel"
    ),
}


PROCESSING_TIME = ("q12",)
"""Queries in processing time: Flink fires their windows by the clock alone (a bounded run ends
before they do), so it runs them over unbounded tables for a while; the engines' windows differ
(their clocks do), the bids counted per bidder do not."""

KEYS = {"q9": [0], "q18": [0, 1], "q19": [0, 7], "first-bids": [0], "top-apple-bids": [2]}
"""The keys of the Top-N queries, whose changes Flink sends as upserts (UPDATE_AFTER alone)."""


@pytest.fixture(scope="module")
def pyflink() -> Path:
    if not PYFLINK.exists():
        reason = "PyFlink is not installed: scripts/flink env"
        if os.environ.get("INMOTION_REQUIRE_FLINK") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return PYFLINK


def plain(value: Any) -> Any:
    """A value as both engines' rows can be compared: timestamps as Flink's CAST to STRING
    writes them (UTC), decimals and doubles rounded to 6 places."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str):
        try:
            if "." in value and value.replace(".", "", 1).lstrip("-").isdigit():
                return round(float(Decimal(value)), 6)
        except ArithmeticError:
            pass
    return value


@pytest.mark.timeout(600)  # Flink runs each of the 33 queries as a job of its own: ~3 min here
def test_the_embedded_engine_gives_flinks_rows(pyflink: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    with connect(f"kafka://{kafka_bootstrap}?timeout=30") as log:
        for topic in nexmark.TOPICS:
            if topic in log.list_topics():
                log.delete_topic(topic)
        nexmark.write(log, 5_000, seed=3)
        ours = {
            name: Counter(
                tuple(plain(v) for v in row.values())
                for _, table in Job(log, nexmark.DDL + query).query()
                for row in job_results(table)
            )
            for name, query in QUERIES.items()
        }
    ddl, keys = tmp_path / "ddl.json", tmp_path / "keys.json"
    keys.write_text(json.dumps({name: key for name, key in KEYS.items() if name in QUERIES}))
    ddl.write_text(json.dumps(flink_ddl(parse(nexmark.DDL), kafka_bootstrap)))
    unbounded = tmp_path / "unbounded.json"
    unbounded.write_text(json.dumps(flink_ddl(parse(nexmark.DDL), kafka_bootstrap, bounded=False)))
    script = str(ROOT / "bench" / "pyflink_nexmark.py")
    # Flink processes at once: a query's job mostly waits (start-up, handing rows to Python, the clock)
    bounded = [name for name in QUERIES if name not in PROCESSING_TIME]
    runs = [(bounded[0::2], ddl, []), (bounded[1::2], ddl, []), (list(PROCESSING_TIME), unbounded, ["--wait", "40"])]
    processes = []
    for number, (names, tables, extra) in enumerate(runs):
        queries = tmp_path / f"queries-{number}.json"
        queries.write_text(json.dumps({name: QUERIES[name] for name in names if name in QUERIES}))
        arguments = ["--bootstrap", kafka_bootstrap, "--queries", str(queries), "--ddl", str(tables), *extra]
        command = [str(pyflink), script, *arguments, "--keys", str(keys), "--results", str(tmp_path)]
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    for name in QUERIES:
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        theirs = Counter(tuple(plain(v) for v in json.loads(line)) for line in lines)
        assert sum(theirs.values()) > 0, name
        if name in PROCESSING_TIME:  # (bidder, count, window start, window end): the counts per bidder
            ours[name], theirs = per_bidder(ours[name]), per_bidder(theirs)
        only_ours, only_theirs = list((ours[name] - theirs).items())[:3], list((theirs - ours[name]).items())[:3]
        assert ours[name] == theirs, f"{name}: only ours {only_ours}, only Flink's {only_theirs}"


def per_bidder(rows: Counter[tuple[Any, ...]]) -> Counter[Any]:
    counts: Counter[Any] = Counter()
    for (bidder, count, *_), times in rows.items():
        counts[bidder] += count * times
    return counts


def test_a_job_runs_on_flink_writes_cloudevents_and_resumes_from_its_savepoint(
    pyflink: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    readings, averages = f"flink-readings-{suffix}", f"flink-averages-{suffix}"
    tables = (
        "CREATE TABLE readings (sensor STRING, temp DOUBLE, ts TIMESTAMP_LTZ(3),"
        f" WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('topic' = '{readings}');\n"
    )
    select = (
        "SELECT sensor, window_start, AVG(temp) AS avg_temp, COUNT(*) AS n"
        " FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '5' SECOND))"
        " GROUP BY window_start, window_end, sensor"
    )
    script = tmp_path / "averages.sql"
    script.write_text(
        tables + "CREATE TABLE averages (sensor STRING, window_start TIMESTAMP_LTZ(3), avg_temp DOUBLE, n BIGINT)"
        f" WITH ('topic' = '{averages}');\nINSERT INTO averages {select};\n"
    )
    broker = f"kafka://{kafka_bootstrap}"
    env = {**os.environ, "INMOTION_FLINK_PYTHON": str(pyflink), "INMOTION_FLINK_JARS": str(ROOT / ".flink" / "jars")}
    command = [INMOTION, "sql", "run", str(script), "--engine", "flink", "--broker", broker]
    command += ["--state", str(tmp_path / "state")]
    start = datetime(2026, 12, 4, tzinfo=UTC)
    with connect(f"{broker}?timeout=30") as log:
        log.create_topic(readings, TopicConfig(partitions=2))

        def feed(first: int, count: int) -> None:  # a reading every 10 ms, 4 sensors
            log.append_events(
                readings,
                [
                    Event(
                        type="reading",
                        source="/sensors",
                        data={"sensor": f"s{i % 4}", "temp": float(i % 7), "ts": iso_millis(start + i * STEP)},
                        extensions={"partitionkey": f"s{i % 4}"},
                    )
                    for i in range(first, first + count)
                ],
            )

        def results() -> list[Event]:
            if averages not in log.list_topics():
                return []
            partitions = range(len(log.describe_topic(averages).partitions))
            return [record.event() for p in partitions for record in log.read(averages, p, 0, 10_000)]

        def run_until(count: int) -> str:
            process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
            try:
                wait_until(lambda: len(results()) >= count, limit=240, what=f"{count} results from Flink")
            finally:
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, stderr[-3000:]
            assert "stopped with savepoint" in stderr
            return stderr

        feed(0, 2_000)  # 20 s: the watermark (19.99 s - 1 s) closes 3 windows of 5 s, 4 sensors each
        run_until(3 * 4)
        feed(2_000, 2_000)  # to 40 s: 4 windows more, and none of the first 3 again
        assert "resuming from" in run_until(7 * 4)
        events = results()
        embedded = [row for _, table in Job(log, tables + select).query() for row in job_results(table)]
    assert len(events) == 7 * 4
    kinds = {(e.type, e.source, e.datacontenttype) for e in events}
    assert kinds == {("averages", "/inmotion/sql/averages", "application/json")}
    assert len({e.id for e in events}) == len(events)
    flink_rows = sorted(
        (e.data["sensor"], datetime.fromisoformat(e.data["window_start"]), round(e.data["avg_temp"], 6), e.data["n"])
        for e in events
    )
    closed = start + 35 * timedelta(seconds=1)  # the embedded query fires the last window too, at its end
    ours = [(r["sensor"], r["window_start"], round(r["avg_temp"], 6), r["n"]) for r in embedded]
    assert flink_rows == sorted(row for row in ours if row[1] < closed)
