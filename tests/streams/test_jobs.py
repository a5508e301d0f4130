"""Continuous jobs on a real SQLite file: results appended once with their checkpoint, resumed
after a stop or a kill -9, a second run fencing out the first, idle partitions, the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig, InvalidSql, UnknownTopic
from inmotion.events import Event
from inmotion.log import Log, Message, TopicConfig, connect
from inmotion.streams.checkpoints import JobTakenOver, open_checkpoints
from inmotion.streams.flink import flink_jars, flink_job, flink_python, prepare_topics
from inmotion.streams.job import Job, job_results
from inmotion.streams.sql import parse
from inmotion.testing import wait_until
from tests.conftest import Place
from tests.test_cli import INMOTION

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
SCRIPT = """
CREATE TABLE readings (sensor STRING, temp DOUBLE, ts TIMESTAMP_LTZ(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('topic' = 'readings');
CREATE TABLE averages (window_start TIMESTAMP_LTZ(3), sensor STRING, avg_temp DOUBLE, n BIGINT,
  k STRING METADATA FROM 'key') WITH ('topic' = 'averages');
INSERT INTO averages
SELECT window_start, sensor, AVG(temp), COUNT(*), sensor
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY window_start, window_end, sensor;
"""
WINDOWS = (
    SCRIPT.split("INSERT INTO averages")[0].split("CREATE TABLE averages")[0] + SCRIPT.split("INSERT INTO averages")[1]
)


def readings(first: int, count: int, sensors: int = 4) -> list[Event]:
    """One reading every 10 ms, sensors in turn."""
    return [
        Event(
            type="reading",
            source="/sensors",
            id=f"r{i}",
            data={
                "sensor": f"s{i % sensors}",
                "temp": float(i % 13),
                "ts": (T0 + timedelta(milliseconds=10 * i)).isoformat(),
            },
            extensions={"partitionkey": f"s{i % sensors}"},
        )
        for i in range(first, first + count)
    ]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    with connect(f"sqlite:///{tmp_path}/jobs.db") as log:
        log.create_topic("readings")
        yield log


def sink(log: Log, topic: str = "averages") -> list[tuple[str, dict[str, Any], bytes | None]]:
    if topic not in log.list_topics():
        return []
    found = []
    for partition in range(log.partition_count(topic)):
        for record in log.read(topic, partition, 0, 100_000):
            event = record.event()
            found.append((event.id, event.data, record.key))
    return found


def newest(log: Log, topic: str) -> dict[bytes | None, dict[str, Any] | None]:
    """An upserted topic's newest row per key (None: deleted), as a compacted topic keeps them."""
    records = log.read(topic, 0, 0, 1000) if topic in log.list_topics() else []
    return {record.key: None if record.value is None else record.event().data for record in records}


def expected(log: Log, closed_before_ms: int) -> dict[tuple[str, str], tuple[float, int]]:
    """What a bounded run over the same events gives, for the windows a watermark at
    `closed_before_ms` has closed."""
    found = {}
    for _, table in Job(log, WINDOWS).query():
        for row in job_results(table):
            end = row["window_start"] + timedelta(seconds=1)
            if (end - T0) / timedelta(milliseconds=1) - 1 <= closed_before_ms:
                found[(row["window_start"].isoformat(), row["sensor"])] = (row["EXPR$2"], row["EXPR$3"])
    return found


def results(found: list[tuple[str, dict[str, Any], bytes | None]]) -> dict[tuple[str, str], tuple[float, int]]:
    by_window = {}
    for _, data, key in found:
        assert key == data["sensor"].encode()
        start = datetime.fromisoformat(data["window_start"]).isoformat()
        by_window[(start, data["sensor"])] = (data["avg_temp"], data["n"])
    return by_window


def start(job: Job) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            job.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, stop, errors


PAYMENTS = "CREATE TABLE payments (card STRING, amount BIGINT) WITH ('topic' = 'payments');\n"


def pay(log: Log, card: str, *amounts: int) -> None:
    """Append a card's payments (the topic made if missing)."""
    if "payments" not in log.list_topics():
        log.create_topic("payments")
    events = [Event(type="payment", source="/cards", data={"card": card, "amount": a}) for a in amounts]
    log.append_events("payments", events)


def run_until(job: Job, condition: Callable[[], bool], what: str) -> None:
    """Run `job` until `condition` holds, then stop it (it checkpoints) and check it ended well."""
    thread, stop, errors = start(job)
    wait_until(condition, what=what)
    stop.set()
    thread.join()
    assert not errors


def checkpointed(log: Log) -> bool:
    """Has a job checkpointed yet."""
    return any(job.sequence for job in open_checkpoints(log).jobs())


def test_a_job_appends_each_result_once_and_resumes_from_its_checkpoint(log: Log) -> None:
    log.append_events("readings", readings(0, 500))  # up to 4.99 s: the watermark 3.99 s closes 3 windows
    run_until(Job(log, SCRIPT, name="averages"), lambda: len(sink(log)) == 3 * 4, what="the closed windows' results")
    log.append_events("readings", readings(500, 500))
    run_until(Job(log, SCRIPT, name="averages"), lambda: len(sink(log)) == 8 * 4, what="the results after the restart")
    found = sink(log)
    assert len({event_id for event_id, _, _ in found}) == len(found)
    assert results(found) == expected(log, closed_before_ms=9_990 - 1_000)
    [info] = open_checkpoints(log).jobs()
    assert (info.name, info.status, info.epoch) == ("averages", "stopped", 2)
    assert info.positions == {"0": ("readings", {0: 1000})}


def test_a_second_run_of_the_same_job_fences_out_the_first(log: Log) -> None:
    log.append_events("readings", readings(0, 300))
    first, first_stop, first_errors = start(Job(log, SCRIPT, name="averages"))
    wait_until(lambda: len(sink(log)) == 1 * 4, what="the first run's results")
    second, second_stop, second_errors = start(Job(log, SCRIPT, name="averages"))
    log.append_events("readings", readings(300, 300))
    first.join(timeout=30)
    assert [type(e) for e in first_errors] == [JobTakenOver]
    wait_until(lambda: len(sink(log)) == 4 * 4, what="the second run's results")
    second_stop.set()
    second.join()
    assert not second_errors
    assert results(sink(log)) == expected(log, closed_before_ms=5_990 - 1_000)
    assert len(sink(log)) == 4 * 4
    first_stop.set()


def test_a_job_refuses_other_sql_under_its_name_until_reset(log: Log) -> None:
    log.append_events("readings", readings(0, 250))
    thread, stop, _ = start(Job(log, SCRIPT, name="averages"))
    wait_until(lambda: len(sink(log)) == 4, what="the first window's results")
    stop.set()
    thread.join()
    changed = SCRIPT.replace("INTERVAL '1' SECOND))", "INTERVAL '2' SECOND))")
    with pytest.raises(InvalidConfig, match="job averages ran other SQL before"):
        Job(log, changed, name="averages").run(threading.Event())
    assert open_checkpoints(log).reset("averages")
    assert not open_checkpoints(log).reset("averages")
    stop = threading.Event()
    stop.set()
    Job(log, changed, name="averages").run(stop)  # from the start: the first checkpoint
    assert [j.status for j in open_checkpoints(log).jobs()] == ["stopped"]


def test_an_idle_partition_stops_holding_the_watermark_after_the_idle_timeout(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path}/idle.db") as log:
        log.create_topic("readings", TopicConfig(partitions=2))
        events = readings(0, 300, sensors=1)
        log.append("readings", [msgspec.structs.replace(Message.from_event(e), partition=0) for e in events])
        clock = FakeClock(autojump=False)
        job = Job(log, SCRIPT, name="idle", clock=clock, idle_timeout=5.0)
        thread, stop, errors = start(job)
        wait_until(lambda: job.pipelines[0].progress.read == 300, what="the readings read")
        assert sink(log) == []  # partition 1 has not been heard from: no watermark
        clock.advance(5.0)
        wait_until(lambda: len(sink(log)) == 1, what="windows fired once partition 1 is idle")
        stop.set()
        thread.join()
        assert not errors
        assert [data["window_start"] for _, data, _ in sink(log)] == ["2026-12-04T10:00:00.000Z"]


def test_state_ttl_lets_a_regular_joins_rows_go(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    SET 'table.exec.state.ttl' = '1 min';
    CREATE TABLE cards (card STRING, owner STRING) WITH ('topic' = 'cards');
    CREATE TABLE owned (owner STRING, amount BIGINT) WITH ('topic' = 'owned');
    INSERT INTO owned SELECT c.owner, p.amount FROM payments p JOIN cards c ON p.card = c.card;
    """
    )
    log.create_topic("cards")

    def card(name: str, owner: str) -> None:
        log.append_events("cards", [Event(type="card", source="/cards", data={"card": name, "owner": owner})])

    def owned() -> list[tuple[str, int]]:
        return sorted((data["owner"], data["amount"]) for _, data, _ in sink(log, "owned"))

    clock = FakeClock(autojump=False)
    card("a", "ann")
    pay(log, "b", 1)
    run_until(Job(log, script, name="owned", clock=clock), lambda: checkpointed(log), what="the first rows kept")
    clock.advance(45)
    pay(log, "a", 10)  # ann's card came 45 s ago: kept
    job = Job(log, script, name="owned", clock=clock)  # restarted: the rows come back from the checkpoint
    thread, stop, errors = start(job)
    wait_until(lambda: owned() == [("ann", 10)], what="a payment on a kept card")
    clock.advance(30)  # ann's card came 75 s ago: gone; b's payment too
    card("b", "bob")
    pay(log, "a", 20)
    wait_until(lambda: job.pipelines[0].progress.read == 5, what="the new rows read")
    stop.set()
    thread.join()
    assert not errors
    assert owned() == [("ann", 10)]


def test_windows_in_processing_time_end_by_the_clock(log: Log) -> None:
    script = """
    CREATE TABLE payments (card STRING, amount BIGINT, seen AS PROCTIME()) WITH ('topic' = 'payments');
    CREATE TABLE minutes (card STRING, total BIGINT, starts TIMESTAMP_LTZ(3)) WITH ('topic' = 'minutes');
    INSERT INTO minutes SELECT card, SUM(amount), window_start
    FROM TABLE(TUMBLE(TABLE payments, DESCRIPTOR(seen), INTERVAL '1' MINUTE)) GROUP BY card, window_start, window_end;
    """
    clock = FakeClock(start=1_800_000_000.0, autojump=False)  # a minute's start
    job = Job(log, script, name="minutes", clock=clock)
    pay(log, "a", 10)
    pay(log, "b", 1)
    thread, stop, errors = start(job)
    wait_until(lambda: job.pipelines[0].progress.read == 2, what="the first payments read")
    clock.advance(30)
    pay(log, "a", 5)
    wait_until(lambda: job.pipelines[0].progress.read == 3, what="a's second payment read")
    assert sink(log, "minutes") == []  # the minute is not over
    clock.advance(30)
    wait_until(lambda: len(sink(log, "minutes")) == 2, what="the first minute's totals")
    pay(log, "b", 2)
    wait_until(lambda: job.pipelines[0].progress.read == 4, what="b's second payment read")
    clock.advance(60)
    wait_until(lambda: len(sink(log, "minutes")) == 3, what="the second minute's total")
    stop.set()
    thread.join()
    assert not errors
    first, second = "2027-01-15T08:00:00.000Z", "2027-01-15T08:01:00.000Z"
    found = sorted((data["starts"], data["card"], data["total"]) for _, data, _ in sink(log, "minutes"))
    assert found == [(first, "a", 15), (first, "b", 1), (second, "b", 2)]


# --- the command ------------------------------------------------------------------------------
def cli(broker: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([INMOTION, *args, "--broker", broker], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"inmotion {' '.join(args)} failed: {result.stderr}")
    return result


def test_sql_query_prints_a_table_or_json_lines(log: Log, tmp_path: Path) -> None:
    log.append_events("readings", readings(0, 250, sensors=2))
    broker = log.url
    query = WINDOWS.replace("AVG(temp), COUNT(*)", "AVG(temp) AS mean, COUNT(*) AS n")
    lines = cli(broker, "sql", "query", query, "--json").stdout.splitlines()
    first = json.loads(lines[0])
    assert first == {"window_start": "2026-12-04T10:00:00.000Z", "sensor": "s0", "mean": 5.84, "n": 50, "sensor0": "s0"}
    assert len(lines) == 3 * 2
    script = tmp_path / "windows.sql"
    script.write_text(query)
    table = cli(broker, "sql", "query", str(script)).stdout
    assert "window_start" in table
    assert "2026-12-04T10:00:02.000Z" in table


def test_sql_commands_fail_with_one_clear_line(log: Log, tmp_path: Path) -> None:
    broker = log.url
    bad = cli(broker, "sql", "query", WINDOWS.replace("GROUP BY window_start, ", "GROUP BY "), check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: a window aggregation groups by window_start and window_end")
    assert "at line 7, column 10" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    unread = cli(
        broker, "sql", "query", "CREATE TABLE t (a INT) WITH ('topic' = 'missing'); SELECT a FROM t", check=False
    )
    assert unread.returncode == 1
    assert "unknown topic 'missing'" in unread.stderr
    assert cli(broker, "sql", "reset", "nothing", check=False).stderr == "error: no SQL job nothing\n"
    nameless = cli(broker, "sql", "run", SCRIPT, check=False)
    assert nameless.returncode == 2
    assert "--name" in nameless.stderr
    on_sqlite = cli(broker, "sql", "run", SCRIPT, "--name", "f", "--engine", "flink", check=False)
    assert on_sqlite.returncode == 1
    assert "--engine flink runs over Kafka" in on_sqlite.stderr
    kafka = "kafka://127.0.0.1:1"  # never reached: each of these fails before
    selects = cli(kafka, "sql", "run", WINDOWS, "--name", "f", "--engine", "flink", check=False)
    assert "on Flink, a job's queries write INSERT INTO a table" in selects.stderr
    unknown = cli(kafka, "sql", "run", SCRIPT, "--name", "f", "--engine", "spark", check=False)
    assert (unknown.returncode, unknown.stderr) == (2, "error: --engine spark: the engines are embedded and flink\n")
    explained = cli(broker, "sql", "explain", SCRIPT).stdout
    assert "window TUMBLE(ts, size 1000 ms)" in explained
    assert "insert into averages (topic averages)" in explained


@pytest.mark.slow
def test_a_job_killed_with_sigkill_resumes_with_every_result_once(log: Log, tmp_path: Path) -> None:
    script = tmp_path / "averages.sql"
    script.write_text(SCRIPT)
    broker = log.url

    output = tmp_path / "job.log"

    def run_job() -> subprocess.Popen[bytes]:
        with output.open("ab") as sink_file:
            return subprocess.Popen(
                [INMOTION, "sql", "run", str(script), "--broker", broker, "--interval", "0.05"],
                stdout=subprocess.DEVNULL,
                stderr=sink_file,
            )

    job = run_job()
    produced = 0
    try:
        while produced < 20_000:
            log.append_events("readings", readings(produced, 500))
            produced += 500
            if produced == 10_000:
                wait_until(lambda: len(sink(log)) > 0, what="the job's first results")
                job.kill()  # SIGKILL, mid-stream
                job.wait()
                gone = json.loads(cli(broker, "sql", "jobs", "--json").stdout)
                assert (gone["job"], gone["status"]) == ("averages", "gone")
                job = run_job()
        closed = 10 * (produced - 1) - 1_000
        want = expected(log, closed_before_ms=closed)
        wait_until(lambda: len(sink(log)) >= len(want), limit=60, what="every closed window's result")
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=30) == 0, output.read_text()
    finally:
        if job.poll() is None:
            job.kill()
    found = sink(log)
    assert len({event_id for event_id, _, _ in found}) == len(found)
    assert len(found) == len(want)
    assert results(found) == want
    jobs = json.loads(cli(broker, "sql", "jobs", "--json").stdout)
    assert (jobs["job"], jobs["status"], jobs["lag"], jobs["late"]) == ("averages", "stopped", 0, 0)
    assert jobs["read"] >= 20_000


def test_an_updating_query_upserts_by_primary_key_and_deletes_with_tombstones(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    CREATE TABLE balances (card STRING, total BIGINT, payments BIGINT, PRIMARY KEY (card) NOT ENFORCED)
      WITH ('topic' = 'balances');
    INSERT INTO balances
    SELECT card, SUM(amount), COUNT(*) FROM payments GROUP BY card HAVING SUM(amount) > 5;
    """
    )

    def balances() -> dict[bytes | None, dict[str, Any] | None]:
        return newest(log, "balances")

    pay(log, "a", 4)
    pay(log, "b", 10)
    pay(log, "a", 3)
    thread, stop, errors = start(Job(log, script, name="balances"))
    wait_until(lambda: "balances" in log.list_topics() and len(balances()) == 2, what="the first upserts")
    assert balances() == {
        b"a": {"card": "a", "total": 7, "payments": 2},
        b"b": {"card": "b", "total": 10, "payments": 1},
    }
    pay(log, "b", -8)
    pay(log, "c", 1)
    wait_until(lambda: balances().get(b"b", {}) is None, what="b's tombstone")
    stop.set()
    thread.join()
    assert not errors
    assert balances() == {b"a": {"card": "a", "total": 7, "payments": 2}, b"b": None}
    assert log.describe_topic("balances").config.compact


def test_an_aggregation_of_an_updating_aggregation_retracts_across_a_restart(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    CREATE TABLE spread (payments BIGINT, cards BIGINT, PRIMARY KEY (payments) NOT ENFORCED) WITH ('topic' = 'spread');
    INSERT INTO spread SELECT n, COUNT(*) FROM (SELECT card, COUNT(*) AS n FROM payments GROUP BY card) GROUP BY n;
    """
    )

    def spread() -> dict[bytes | None, dict[str, Any] | None]:
        return newest(log, "spread")

    pay(log, "a", 1)
    pay(log, "b", 1, 2)
    run_until(Job(log, script, name="spread"), lambda: len(spread()) == 2, what="a card of 1 payment, one of 2")
    assert spread() == {b"1": {"payments": 1, "cards": 1}, b"2": {"payments": 2, "cards": 1}}
    pay(log, "a", 5)  # a moves from the cards of 1 payment (none left: deleted) to those of 2
    run_until(Job(log, script, name="spread"), lambda: spread().get(b"1", 0) is None, what="the tombstone of 1")
    assert spread() == {b"1": None, b"2": {"payments": 2, "cards": 2}}


def test_distinct_values_survive_a_restart(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    CREATE TABLE amounts (card STRING, kinds BIGINT, big BIGINT, PRIMARY KEY (card) NOT ENFORCED)
      WITH ('topic' = 'amounts');
    INSERT INTO amounts
    SELECT card, COUNT(DISTINCT amount), COUNT(DISTINCT amount) FILTER (WHERE amount > 4) FROM payments GROUP BY card;
    """
    )

    def newest() -> dict[str, Any] | None:
        found = [r.event().data for r in log.read("amounts", 0, 0, 1000)] if "amounts" in log.list_topics() else []
        return found[-1] if found else None

    def run_to(kinds: int, big: int) -> None:
        want = {"card": "a", "kinds": kinds, "big": big}
        run_until(Job(log, script, name="amounts"), lambda: newest() == want, what=f"the row {want}")

    pay(log, "a", 4, 4, 5)
    run_to(kinds=2, big=1)
    pay(log, "a", 5, 6, 3)  # 5 was seen before the restart: not counted again
    run_to(kinds=4, big=2)


def test_an_interval_join_resumes_with_the_rows_it_kept(log: Log) -> None:
    script = """
    CREATE TABLE clicks (ad BIGINT, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
      WITH ('topic' = 'clicks');
    CREATE TABLE buys (ad BIGINT, amount BIGINT, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
      WITH ('topic' = 'buys');
    CREATE TABLE conversions (ad BIGINT, amount BIGINT, clicked TIMESTAMP_LTZ(3)) WITH ('topic' = 'conversions');
    INSERT INTO conversions
    SELECT c.ad, b.amount, c.ts FROM clicks c JOIN buys b
      ON c.ad = b.ad AND b.ts BETWEEN c.ts AND c.ts + INTERVAL '10' SECOND;
    """
    log.create_topic("clicks")
    log.create_topic("buys")

    def at(topic: str, seconds: float, **data: Any) -> Event:
        return Event(type=topic, source="/ads", data={**data, "ts": (T0 + timedelta(seconds=seconds)).isoformat()})

    log.append_events("clicks", [at("clicks", s, ad=s % 3) for s in range(0, 20, 2)])
    log.append_events("buys", [at("buys", 5, ad=2, amount=1), at("buys", 6, ad=0, amount=2)])
    run_until(
        Job(log, script, name="conversions"), lambda: len(sink(log, "conversions")) == 3, what="the first conversions"
    )
    # the clicks kept come back from the checkpoint: later buys still meet them
    log.append_events("buys", [at("buys", 15, ad=1, amount=3), at("buys", 21, ad=0, amount=4)])
    log.append_events("clicks", [at("clicks", 30, ad=9)])
    run_until(
        Job(log, script, name="conversions"),
        lambda: len(sink(log, "conversions")) == 6,
        what="the conversions after the restart",
    )
    found = sorted((data["ad"], data["amount"], data["clicked"]) for _, data, _ in sink(log, "conversions"))
    clicks = {s: s % 3 for s in range(0, 20, 2)}
    buys = [(5, 2, 1), (6, 0, 2), (15, 1, 3), (21, 0, 4)]
    want = sorted(
        (ad, amount, (T0 + timedelta(seconds=c)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        for bought, ad, amount in buys
        for c, clicked_ad in clicks.items()
        if clicked_ad == ad and c <= bought <= c + 10
    )
    assert found == want


def test_a_regular_join_resumes_with_every_row_it_kept(log: Log) -> None:
    script = """
    CREATE TABLE customers (id BIGINT, name STRING) WITH ('topic' = 'customers');
    CREATE TABLE orders (customer BIGINT, amount BIGINT) WITH ('topic' = 'orders');
    CREATE TABLE named (name STRING, amount BIGINT) WITH ('topic' = 'named');
    INSERT INTO named SELECT c.name, o.amount FROM orders o JOIN customers c ON o.customer = c.id;
    """
    for topic in ("customers", "orders"):
        log.create_topic(topic)

    def row(topic: str, **data: Any) -> Event:
        return Event(type=topic, source="/shop", data=data)

    log.append_events("customers", [row("customers", id=1, name="ann"), row("customers", id=2, name="bob")])
    log.append_events("orders", [row("orders", customer=1, amount=10)])
    run_until(Job(log, script, name="named"), lambda: len(sink(log, "named")) == 1, what="the first joined order")
    # both sides' rows come back from the checkpoint, however old: new rows of either side meet them
    log.append_events("orders", [row("orders", customer=2, amount=20), row("orders", customer=3, amount=30)])
    log.append_events("customers", [row("customers", id=1, name="ann2")])
    run_until(
        Job(log, script, name="named"), lambda: len(sink(log, "named")) == 3, what="the joined rows after the restart"
    )
    assert sorted((data["name"], data["amount"]) for _, data, _ in sink(log, "named")) == [
        ("ann", 10),
        ("ann2", 10),
        ("bob", 20),
    ]


def test_a_top_n_upserts_its_rows_and_deletes_those_that_fall_out_across_restarts(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    CREATE TABLE top2 (card STRING, amount BIGINT, n BIGINT, PRIMARY KEY (card, n) NOT ENFORCED)
      WITH ('topic' = 'top2');
    CREATE TABLE biggest (card STRING, amount BIGINT, PRIMARY KEY (card, amount) NOT ENFORCED)
      WITH ('topic' = 'biggest');
    INSERT INTO top2 SELECT * FROM (
      SELECT card, amount, ROW_NUMBER() OVER (PARTITION BY card ORDER BY amount DESC) AS n FROM payments
    ) WHERE n <= 2;
    INSERT INTO biggest SELECT card, amount FROM (
      SELECT card, amount, ROW_NUMBER() OVER (PARTITION BY card ORDER BY amount DESC) AS n FROM payments
    ) WHERE n = 1;
    """
    )

    def table(topic: str) -> dict[bytes | None, Any]:
        newest: dict[bytes | None, Any] = {}
        for record in log.read(topic, 0, 0, 1000) if topic in log.list_topics() else []:
            newest[record.key] = None if record.value is None else record.event().data["amount"]
        return {key: amount for key, amount in newest.items() if amount is not None}

    def run_to(top2: dict[bytes | None, Any], biggest: dict[bytes | None, Any]) -> None:
        shown = lambda: table("top2") == top2 and table("biggest") == biggest  # noqa: E731
        run_until(Job(log, script, name="top"), shown, what=f"{top2} and {biggest}")

    pay(log, "a", 5)
    pay(log, "b", 1)
    run_to({b"a|1": 5, b"b|1": 1}, {b"a|5": 5, b"b|1": 1})
    pay(log, "a", 7)  # a's 5 moves to place 2; in `biggest`, 5 is deleted and 7 comes
    run_to({b"a|1": 7, b"a|2": 5, b"b|1": 1}, {b"a|7": 7, b"b|1": 1})
    pay(log, "a", 6, 2)  # after the restart: 6 takes place 2 from 5; 2 ranks nowhere
    run_to({b"a|1": 7, b"a|2": 6, b"b|1": 1}, {b"a|7": 7, b"b|1": 1})
    assert log.describe_topic("top2").config.compact


def test_state_ttl_forgets_a_group_no_row_came_to(log: Log) -> None:
    script = (
        PAYMENTS
        + """
    SET 'table.exec.state.ttl' = '1 min';
    CREATE TABLE totals (card STRING, total BIGINT, PRIMARY KEY (card) NOT ENFORCED) WITH ('topic' = 'totals');
    INSERT INTO totals SELECT card, SUM(amount) FROM payments GROUP BY card;
    """
    )

    def totals() -> list[tuple[str, int]]:
        return [(data["card"], data["total"]) for _, data, _ in sink(log, "totals")]

    clock = FakeClock(autojump=False)
    job = Job(log, script, name="totals", clock=clock)
    pay(log, "a", 10)
    pay(log, "b", 1)
    thread, stop, errors = start(job)
    wait_until(lambda: len(totals()) == 2, what="the first totals")
    clock.advance(45)
    pay(log, "b", 2)  # b's last row was 45 s ago: it lives on
    wait_until(lambda: len(totals()) == 3, what="b's new total")
    clock.advance(30)  # a was last touched 75 s ago: forgotten, so its next payment starts anew
    pay(log, "a", 5)
    pay(log, "b", 4)
    wait_until(lambda: len(totals()) == 5, what="the totals after a's state expired")
    stop.set()
    thread.join()
    assert not errors
    assert sorted(totals()) == [("a", 5), ("a", 10), ("b", 1), ("b", 3), ("b", 7)]


PAGES = """
CREATE TABLE views (page STRING, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts) WITH ('topic' = 'views');
CREATE TABLE likes (page STRING, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts) WITH ('topic' = 'likes');
"""


def pages(log: Log, views: list[tuple[float, str]], likes: list[tuple[float, str]]) -> None:
    """Append page views and likes, (seconds after T0, page) each, to their topics (made if missing)."""
    for topic, rows in (("views", views), ("likes", likes)):
        if topic not in log.list_topics():
            log.create_topic(topic)
        at = [(T0 + timedelta(seconds=seconds)).isoformat() for seconds, _ in rows]
        log.append_events(
            topic,
            [Event(type=topic, source="/site", data={"page": p, "ts": t}) for (_, p), t in zip(rows, at, strict=True)],
        )


def test_a_window_join_resumes_with_the_rows_of_open_windows(log: Log) -> None:
    script = (
        PAGES
        + """
    CREATE TABLE pairs (page STRING, liked STRING, window_start TIMESTAMP_LTZ(3)) WITH ('topic' = 'pairs');
    INSERT INTO pairs
    SELECT v.page, l.page, v.window_start
    FROM (SELECT * FROM TABLE(TUMBLE(TABLE views, DESCRIPTOR(ts), INTERVAL '10' SECOND))) v
    LEFT JOIN (SELECT * FROM TABLE(TUMBLE(TABLE likes, DESCRIPTOR(ts), INTERVAL '10' SECOND))) l
    ON v.page = l.page AND v.window_start = l.window_start AND v.window_end = l.window_end;
    """
    )
    pages(log, views=[(1, "a"), (2, "b")], likes=[(3, "a")])
    run_until(Job(log, script, name="pairs"), lambda: checkpointed(log), what="a checkpoint of the open window")
    assert sink(log, "pairs") == []  # the window [0 s, 10 s) is open: its rows are in the checkpoint
    pages(log, views=[(11, "c")], likes=[(12, "c")])
    run_until(Job(log, script, name="pairs"), lambda: len(sink(log, "pairs")) == 2, what="the first window's pairs")
    assert sorted((data["page"], data["liked"]) for _, data, _ in sink(log, "pairs")) == [("a", "a"), ("b", None)]


def test_a_window_join_of_a_window_aggregation_resumes_with_its_groups(log: Log) -> None:
    script = (
        PAGES
        + """
    CREATE TABLE liked (page STRING, likes BIGINT) WITH ('topic' = 'liked');
    INSERT INTO liked
    SELECT v.page, l.n
    FROM (SELECT * FROM TABLE(TUMBLE(TABLE views, DESCRIPTOR(ts), INTERVAL '10' SECOND))) v
    JOIN (SELECT page, COUNT(*) AS n, window_start AS starts, window_end AS ends
          FROM TABLE(TUMBLE(TABLE likes, DESCRIPTOR(ts), INTERVAL '10' SECOND))
          GROUP BY page, window_start, window_end) l
    ON v.page = l.page AND v.window_start = l.starts AND v.window_end = l.ends;
    """
    )
    pages(log, views=[(1, "a"), (2, "b")], likes=[(3, "a"), (4, "a")])
    run_until(Job(log, script, name="liked"), lambda: checkpointed(log), what="a checkpoint of the open window")
    pages(log, views=[(12, "c")], likes=[(5, "a"), (11, "c")])  # a's third like counts with the two
    run_until(Job(log, script, name="liked"), lambda: len(sink(log, "liked")) == 1, what="the first window's row")
    assert [(data["page"], data["likes"]) for _, data, _ in sink(log, "liked")] == [("a", 3)]


def test_an_aggregation_of_a_window_aggregation_resumes_with_the_inner_groups(log: Log) -> None:
    script = (
        PAGES
        + """
    CREATE TABLE busiest (starts TIMESTAMP_LTZ(3), views BIGINT, pages BIGINT) WITH ('topic' = 'busiest');
    INSERT INTO busiest
    SELECT starts, MAX(n), COUNT(*) FROM (
      SELECT page, COUNT(*) AS n, window_start AS starts, window_end AS ends
      FROM TABLE(TUMBLE(TABLE views, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY page, window_start, window_end
    ) GROUP BY starts, ends;
    """
    )
    pages(log, views=[(1, "a"), (2, "b"), (3, "a")], likes=[])
    run_until(Job(log, script, name="busiest"), lambda: checkpointed(log), what="a checkpoint of the open window")
    pages(log, views=[(4, "b"), (5, "b"), (11, "c")], likes=[])  # b's 3 views beat a's 2
    run_until(Job(log, script, name="busiest"), lambda: len(sink(log, "busiest")) == 1, what="the first window's row")
    assert [(data["views"], data["pages"]) for _, data, _ in sink(log, "busiest")] == [(3, 2)]


def test_over_aggregates_resume_with_their_frames(log: Log) -> None:
    script = (
        PAGES
        + """
    CREATE TABLE trend (page STRING, recent BIGINT) WITH ('topic' = 'trend');
    INSERT INTO trend SELECT page,
      COUNT(*) OVER (PARTITION BY page ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)
    FROM views;
    """
    )
    pages(log, views=[(1, "a"), (2, "a"), (3, "b")], likes=[])
    run_until(Job(log, script, name="trend"), lambda: len(sink(log, "trend")) == 3, what="the first rows")
    pages(log, views=[(5, "a"), (14, "a")], likes=[])  # a's views at 1 s and 2 s come back from the checkpoint
    run_until(Job(log, script, name="trend"), lambda: len(sink(log, "trend")) == 5, what="the rows after the restart")
    found = [(data["page"], data["recent"]) for _, data, _ in sink(log, "trend")]
    assert sorted(found[:3]) == [("a", 1), ("a", 2), ("b", 1)]
    assert found[3:] == [("a", 3), ("a", 2)]


def test_a_join_with_a_window_aggregation_resumes_with_its_groups_and_rows(log: Log) -> None:
    script = """
    CREATE TABLE prices (symbol STRING, price BIGINT, ts TIMESTAMP_LTZ(3), WATERMARK FOR ts AS ts)
      WITH ('topic' = 'prices');
    CREATE TABLE highs (symbol STRING, price BIGINT) WITH ('topic' = 'highs');
    INSERT INTO highs
    SELECT p.symbol, p.price FROM prices p
    JOIN (SELECT MAX(price) AS top, window_end AS ends
          FROM TABLE(TUMBLE(TABLE prices, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end) m
    ON p.price = m.top WHERE p.ts >= m.ends - INTERVAL '10' SECOND AND p.ts < m.ends;
    """
    log.create_topic("prices")

    def at(seconds: float, symbol: str, price: int) -> Event:
        data = {"symbol": symbol, "price": price, "ts": (T0 + timedelta(seconds=seconds)).isoformat()}
        return Event(type="price", source="/market", data=data)

    log.append_events("prices", [at(1, "a", 5), at(2, "b", 7)])
    run_until(Job(log, script, name="highs"), lambda: checkpointed(log), what="a checkpoint of the open window")
    # the window's maximum so far (7) and b's row come back from the checkpoint
    log.append_events("prices", [at(3, "c", 6), at(11, "d", 1)])
    run_until(Job(log, script, name="highs"), lambda: len(sink(log, "highs")) == 1, what="the first window's high")
    assert [(data["symbol"], data["price"]) for _, data, _ in sink(log, "highs")] == [("b", 7)]


def test_a_query_reads_the_same_on_sqlite_and_kafka_and_a_job_on_kafka_says_why_not(place: Place) -> None:
    script = WINDOWS.replace("'readings'", f"'{place.topic}'")
    with connect(place.url) as log:
        log.create_topic(place.topic, TopicConfig(partitions=2))
        log.append_events(place.topic, readings(0, 400, sensors=2))
        found = sorted(
            (row["window_start"], row["sensor"], row["EXPR$3"])
            for _, t in Job(log, script).query()
            for row in job_results(t)
        )
        assert len(found) == 4 * 2
        assert sum(n for _, _, n in found) == 400
        if place.backend == "kafka":
            with pytest.raises(InvalidConfig, match="kafka:// has no place for them yet"):
                Job(log, SCRIPT, name="averages").run(threading.Event())


def test_a_running_job_tells_its_progress(log: Log, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="inmotion.streams")
    log.append_events("readings", readings(0, 250))
    clock = FakeClock(autojump=False)
    job = Job(log, SCRIPT, name="averages", clock=clock)
    thread, stop, errors = start(job)
    wait_until(lambda: job.pipelines[0].progress.read == 250, what="the readings read")
    clock.advance(10)
    wait_until(lambda: "job averages: checkpoint" in caplog.text, what="a progress line")
    stop.set()
    thread.join()
    assert not errors
    assert "read 250, emitted 4, late 0, malformed 0, watermark 2026-12-04T10:00:01.490Z" in caplog.text


def test_a_job_for_flink_writes_the_events_headers_and_finds_pyflink_where_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = SCRIPT.replace(",\n  k STRING METADATA FROM 'key')", ")").replace(", COUNT(*), sensor", ", COUNT(*)")
    job = flink_job(parse(script), "127.0.0.1:9092", "averages")
    [insert] = job["inserts"]
    assert insert.startswith("INSERT INTO `averages` SELECT *, MAP[")
    assert insert.endswith(
        "] FROM (SELECT window_start, sensor, AVG(temp), COUNT(*)\nFROM TABLE(TUMBLE(TABLE readings,"
        " DESCRIPTOR(ts), INTERVAL '1' SECOND))\nGROUP BY window_start, window_end, sensor)"
    )
    assert "'ce_type', CAST('averages' AS BYTES)" in insert
    assert "'ce_source', CAST('/inmotion/sql/averages' AS BYTES)" in insert
    assert "'ce_id', CAST(UUID() AS BYTES)" in insert
    with connect("memory://") as kafka_like:  # the topics Flink needs: the sink's is made, a source's must exist
        with pytest.raises(UnknownTopic, match="readings"):
            prepare_topics(kafka_like, parse(script))
        kafka_like.create_topic("readings")
        prepare_topics(kafka_like, parse(script))
        assert set(kafka_like.list_topics()) == {"readings", "averages"}
    readings_ddl, averages_ddl = job["tables"]
    assert "`__headers` MAP<STRING, BYTES> METADATA FROM 'headers'\n" in averages_ddl  # written
    assert "__headers" not in readings_ddl  # read,
    assert "scan.bounded.mode" not in readings_ddl  # unbounded
    with pytest.raises(InvalidSql, match="on Flink, a table written to has no metadata columns yet"):
        flink_job(parse(SCRIPT), "127.0.0.1:9092", "averages")  # its sink has a key column
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INMOTION_FLINK_JARS", str(tmp_path))
    with pytest.raises(InvalidConfig, match=f"no Flink Kafka connector in {tmp_path}"):
        flink_jars()
    (tmp_path / "flink-sql-connector-kafka-5.0.0-2.2.jar").write_bytes(b"")
    assert flink_jars() == [str(tmp_path / "flink-sql-connector-kafka-5.0.0-2.2.jar")]
    monkeypatch.setenv("INMOTION_FLINK_PYTHON", str(tmp_path / "nowhere"))
    with pytest.raises(InvalidConfig, match=r"INMOTION_FLINK_PYTHON=.*: no such file"):
        flink_python()
    monkeypatch.delenv("INMOTION_FLINK_PYTHON")
    with pytest.raises(InvalidConfig, match="PyFlink is not installed"):  # not in this Python, nor ./.venv-flink
        flink_python()
