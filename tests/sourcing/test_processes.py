"""Several real processes on one SQLite file, and processes killed with SIGKILL."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import inmotion
from inmotion.sourcing import EventStore, NewEvent, OutboxRelay, Projector, Repository
from inmotion.testing import wait_until

from . import workers
from .bank import Account

spawn = multiprocessing.get_context("spawn")


def kill(process: BaseProcess) -> None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL


@contextlib.contextmanager
def running(target: Callable[..., None], *args: Any) -> Iterator[BaseProcess]:
    """A child process for the body of the `with`; killed at the end if the body left it running."""
    process = spawn.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield process
    finally:
        if process.is_alive():
            kill(process)


def test_two_processes_on_one_aggregate_exactly_one_wins_each_version(sqlite_url: str) -> None:
    store = EventStore(sqlite_url)
    accounts = Repository(store, Account)
    account = Account("acc")
    account.open("ann")
    accounts.save(account)
    rounds = 10
    barrier = spawn.Barrier(2)
    conflicts = spawn.Queue()
    with (
        running(workers.save_in_rounds, sqlite_url, "a", rounds, barrier, conflicts) as a,
        running(workers.save_in_rounds, sqlite_url, "b", rounds, barrier, conflicts) as b,
    ):
        lost = dict(conflicts.get(timeout=60) for _ in (a, b))
        for process in (a, b):
            process.join(timeout=30)
            assert process.exitcode == 0

    assert lost["a"] + lost["b"] == rounds  # one loser per round, and it succeeded on retry
    stream = store.read("acc")
    assert [e.version for e in stream] == list(range(1, 2 * rounds + 2))
    by = Counter(e.data["by"] for e in stream[1:])
    assert by == {"a": rounds, "b": rounds}
    assert accounts.get("acc").balance == 2 * rounds
    store.close()


def test_kill_9_during_appends_leaves_no_gap_and_no_half_batch(sqlite_url: str) -> None:
    store = EventStore(sqlite_url)
    for round_number in range(3):
        with (
            running(workers.append_forever, sqlite_url, f"w{round_number}0") as first,
            running(workers.append_forever, sqlite_url, f"w{round_number}1") as second,
        ):
            target = store.last_position() + 30 * workers.BATCH
            while store.last_position() < target:
                assert store.wait(store.last_position(), timeout=30), "the writers stopped writing"
            kill(first)
            kill(second)

        events = store.read_all(1, 1_000_000)
        assert [e.position for e in events] == list(range(1, len(events) + 1))
        for stream in workers.STREAMS:
            assert [e.version for e in store.read(stream)] == list(range(1, store.stream_version(stream) + 1))
        batches = Counter((e.data["writer"], e.data["batch"]) for e in events)
        assert set(batches.values()) == {workers.BATCH}, "a batch was written in part"
        for stream in workers.STREAMS:  # consecutive versions hold whole batches, in order
            indexes = [e.data["i"] for e in store.read(stream)]
            assert indexes == list(range(workers.BATCH)) * (len(indexes) // workers.BATCH)

    # The store still takes appends at the right places.
    version = store.stream_version("s0")
    assert store.append("s0", [NewEvent("Tick", {"writer": "x", "batch": 0, "i": 0})], version) == version + 1
    store.close()


def test_a_projection_killed_with_9_applies_every_event_exactly_once_after_restart(
    sqlite_url: str, directory: Path
) -> None:
    store = EventStore(sqlite_url)
    read_model = directory / "read.db"

    def append(count: int) -> None:
        for batch in range(count):
            stream = workers.STREAMS[batch % 3]
            events = [NewEvent("Tick", {"writer": "p", "batch": batch, "i": i}) for i in range(10)]
            store.append(stream, events, store.stream_version(stream))

    def applied() -> int:
        with sqlite3.connect(read_model) as conn:
            try:
                (count,) = conn.execute("SELECT count(*) FROM applied").fetchone()
            except sqlite3.OperationalError:  # the projector has not created its tables yet
                count = 0
        conn.close()
        return int(count)

    for _ in range(2):
        append(60)
        target = applied() + 300  # counted before it starts: at least 600 events wait, so it is killed part way
        with running(workers.project_forever, sqlite_url, str(read_model)) as projector:
            wait_until(lambda target=target: applied() >= target)  # type: ignore[misc]
            append(30)  # more events while it runs
            kill(projector)

    with Projector(workers.Applied(), store, read_model) as restarted:
        restarted.run_once()
        total = store.last_position()
        assert restarted.lag() == 0
        assert restarted.query(
            "SELECT count(*), count(DISTINCT position), min(position), max(position) FROM applied"
        ) == [(total, total, 1, total)]
        expected = Counter(e.stream_id for e in store.read_all(1, 1_000_000))
        assert dict(restarted.query("SELECT stream, n FROM totals")) == expected
    store.close()


def test_an_outbox_relay_killed_with_9_loses_nothing_and_keeps_stream_order(sqlite_url: str) -> None:
    store = EventStore(sqlite_url)
    log = inmotion.connect(sqlite_url)

    def append(batches: int) -> None:
        for batch in range(batches):
            stream = workers.STREAMS[batch % 3]
            version = store.stream_version(stream)
            store.append(stream, [NewEvent("Tick", {"n": version + i}) for i in range(1, 8)], version)

    def published() -> list[inmotion.Event]:
        if "ticks" not in log.list_topics():
            return []
        return [record.event() for record in log.read("ticks", 0, 0, 1_000_000)]

    for _ in range(2):
        append(60)
        with running(workers.relay_forever, sqlite_url, "ticks") as relay:
            target = len(published()) + 150
            wait_until(lambda target=target: len(published()) >= target)  # type: ignore[misc]
            append(20)
            kill(relay)

    OutboxRelay(store, log, "ticks").relay_once()
    events = published()
    first_seen: dict[str, inmotion.Event] = {}
    for event in events:
        first_seen.setdefault(event.id, event)
    assert set(first_seen) == {e.id for e in store.read_all(1, 1_000_000)}
    for stream in workers.STREAMS:
        versions = [int(str(e.extensions["streamversion"])) for e in first_seen.values() if e.subject == stream]
        assert versions == list(range(1, store.stream_version(stream) + 1))
    log.close()
    store.close()
