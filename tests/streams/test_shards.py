"""A job split across processes (`inmotion sql run --split`): each runs the partitions its
consumer group gives it, a partition's state and offsets move with it, and every result is
appended once across handovers and a kill -9."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.errors import InvalidConfig
from inmotion.log import Log, TopicConfig, connect
from inmotion.streams import Job
from inmotion.streams.checkpoints import open_checkpoints
from inmotion.streams.shards import Shards, split_topic
from inmotion.testing import wait_until
from tests.streams.test_jobs import SCRIPT, cli, expected, readings, results, sink
from tests.test_cli import INMOTION

SPLIT = SCRIPT.replace("WITH ('topic' = 'readings')", "WITH ('topic' = 'readings', 'key.fields' = 'sensor')")
SENSORS = 8


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    with connect(f"sqlite:///{tmp_path}/shards.db") as log:
        log.create_topic("readings", TopicConfig(partitions=4))
        yield log


def feed(log: Log, first: int, count: int) -> int:
    log.append_events("readings", readings(first, count, sensors=SENSORS))
    return first + count


def check_once(log: Log, produced: int) -> None:
    """Each closed window's result once, as a run of the job alone over the same events gives it."""
    found = sink(log)
    assert len({event_id for event_id, _, _ in found}) == len(found)
    assert len({(data["window_start"], data["sensor"]) for _, data, _ in found}) == len(found)
    every = expected(log, closed_before_ms=10 * produced)
    closed = expected(log, closed_before_ms=10 * (produced - 1) - 1_000)
    assert set(closed) <= set(results(found))
    assert results(found) == {key: every[key] for key in results(found)}


def test_processes_split_the_partitions_and_hand_them_over_with_their_state(log: Log, tmp_path: Path) -> None:
    runs: list[tuple[Shards, threading.Event, threading.Thread, list[BaseException]]] = []

    def start() -> Shards:
        own = connect(log.url)  # a process of its own: its own connection to the file
        shards, stop, errors = Shards(own, SPLIT, "averages", interval=0.05, session_timeout=1.0), threading.Event(), []

        def run() -> None:
            try:
                shards.run(stop)
            except BaseException as exc:
                errors.append(exc)
            finally:
                own.close()

        thread = threading.Thread(target=run)
        thread.start()
        runs.append((shards, stop, thread, errors))
        return shards

    try:
        produced = feed(log, 0, 1_000)
        first = start()
        wait_until(lambda: len(first.running) == 4 and len(sink(log)) > 0, what="one process running every partition")
        second = start()
        wait_until(lambda: len(first.running) == len(second.running) == 2, what="the partitions split in two")
        produced = feed(log, produced, 1_000)
        runs[0][1].set()  # the first stops: the second takes its partitions over, state and all
        runs[0][2].join()
        wait_until(lambda: len(second.running) == 4, what="the second process running every partition")
        produced = feed(log, produced, 1_000)
        want = expected(log, closed_before_ms=10 * (produced - 1) - 1_000)
        wait_until(lambda: set(want) <= set(results(sink(log))), what="every closed window's result")
    finally:
        for _, stop, thread, _ in runs:
            stop.set()
            thread.join()
    assert not [error for *_, errors in runs for error in errors]
    check_once(log, produced)
    assert sorted(job.name for job in open_checkpoints(log).jobs()) == [f"averages#{p}" for p in range(4)]
    assert cli(log.url, "sql", "reset", "averages").stdout == "job averages reset (4 shards)\n"
    assert open_checkpoints(log).jobs() == []


@pytest.mark.slow
def test_a_process_killed_with_sigkill_leaves_its_partitions_to_the_other(log: Log, tmp_path: Path) -> None:
    script = tmp_path / "averages.sql"
    script.write_text(SPLIT)
    output = tmp_path / "jobs.log"

    def run_job() -> subprocess.Popen[bytes]:
        arguments = ["--broker", log.url, "--interval", "0.05", "--split", "--session-timeout", "1"]
        with output.open("ab") as sink_file:
            return subprocess.Popen([INMOTION, "sql", "run", str(script), *arguments], stderr=sink_file)

    def owners() -> set[str]:
        return {job.owner for job in open_checkpoints(log).jobs() if job.status == "running"}

    first, second = run_job(), run_job()
    produced = 0
    try:
        wait_until(lambda: len(owners()) == 2, what="both processes running partitions")
        while produced < 16_000:
            produced = feed(log, produced, 500)
            if produced == 8_000:
                wait_until(lambda: len(sink(log)) > 0, what="the first results")
                first.kill()  # SIGKILL, mid-stream: its partitions move once its session times out
                first.wait()
        want = expected(log, closed_before_ms=10 * (produced - 1) - 1_000)
        wait_until(lambda: set(want) <= set(results(sink(log))), limit=60, what="every closed window's result")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, output.read_text()
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    check_once(log, produced)
    assert "runs partition" in output.read_text()


def test_only_jobs_whose_state_is_per_key_of_the_partitioning_split(log: Log) -> None:
    def topic(script: str) -> str:
        return split_topic(Job(log, script, name="split").plans)

    assert topic(SPLIT) == "readings"
    assert (
        topic(
            SPLIT.split("CREATE TABLE averages")[0] + "SELECT SUM(temp) OVER (PARTITION BY sensor ORDER BY ts)"
            " FROM readings"
        )
        == "readings"
    )
    by_key = SCRIPT.replace("ts TIMESTAMP_LTZ(3),", "ts TIMESTAMP_LTZ(3), id STRING METADATA FROM 'key',").replace(
        "GROUP BY window_start, window_end, sensor", "GROUP BY window_start, window_end, sensor, id"
    )
    assert topic(by_key) == "readings"
    assert topic(SCRIPT.split("CREATE TABLE averages")[0] + "SELECT sensor FROM readings WHERE temp > 3") == "readings"
    table = SPLIT.split("CREATE TABLE averages")[0]
    refused = [
        (SCRIPT, "groups by sensor, no column of the events' key \\(none declared"),
        (table + "SELECT COUNT(*) FROM readings GROUP BY temp", "groups by temp, no column of the events' key"),
        (table + "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY temp ORDER BY ts DESC) AS n FROM readings)"
         " WHERE n = 1", "ranks by temp"),
        (table + "SELECT a.sensor FROM readings a JOIN readings b ON a.sensor = b.sensor", "joins two tables"),
        (table + "SELECT SUM(temp) OVER (PARTITION BY temp ORDER BY ts) FROM readings", "OVER partitions by temp"),
        (table.replace("readings", "others") + table + "SELECT sensor FROM readings; SELECT sensor FROM others",
         "read 2 topics"),
    ]  # fmt: skip
    for script, problem in refused:
        with pytest.raises(InvalidConfig, match=problem):
            topic(script)
    split = cli(log.url, "sql", "run", "--name", "x", "--split", "--engine", "flink", SPLIT, check=False)
    assert split.returncode == 2
    assert "--split shares an embedded job between processes" in split.stderr
