"""Consumer groups in the runtime: apps that share a group, idempotent and transactional
subscriptions, and what the consumer does when the group's storage fails. The coordinators
themselves pass `inmotion.testing.GroupContract` (tests/test_group_contract.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig, StorageError
from inmotion.log import Assignment, TopicConfig, TopicPartition, connect
from inmotion.log.groups import deal
from inmotion.log.sqlite.groups import SqliteCoordinator
from inmotion.runtime import App, Context, Retry
from inmotion.runtime.consumer import Consumer
from inmotion.runtime.pipeline import begin
from inmotion.runtime.worker import Worker
from inmotion.testing import eventually


def tps(topic: str, *partitions: int) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, p) for p in partitions)


def test_deal_spreads_each_topics_partitions_round_robin_over_its_members() -> None:
    wanted = deal({"a": 4, "b": 1}, {"m2": ["a"], "m1": ["a", "b"], "m3": []})
    assert wanted == {"m1": set(tps("a", 0, 2) | tps("b", 0)), "m2": set(tps("a", 1, 3)), "m3": set()}


def test_an_apps_session_timeout_is_checked() -> None:
    with pytest.raises(InvalidConfig, match="session_timeout"):
        App("x", "memory://", session_timeout=-1)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_two_apps_in_one_group_split_partitions_and_hand_over_without_loss(backend: str, tmp_path: Path) -> None:
    shared = connect("memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'log.db'}")
    handled: dict[str, list[int]] = {"one": [], "two": []}

    def make(name: str) -> App:
        app = App(name, shared, session_timeout=1.0)

        @app.subscribe("orders", group="billing")
        async def charge(order: dict[str, int], ctx: Context) -> None:
            handled[name].append(order["n"])

        return app

    async def scenario() -> None:
        with make("one") as one, make("two") as two:
            one.log.create_topic("orders", TopicConfig(partitions=4))
            await one.start()
            for n in range(100):
                await one.publish("orders", {"n": n}, key=str(n))
            await eventually(lambda: len(handled["one"]) == 100)
            await two.start()
            await eventually(lambda: len(set(one.coordinator.owners("billing").values())) == 2, what="a split")
            for n in range(100, 400):
                await one.publish("orders", {"n": n}, key=str(n))
            await eventually(lambda: len(set(handled["one"]) | set(handled["two"])) == 400)
            assert handled["two"], "the second member got no partitions"
            await one.stop()
            await eventually(lambda: len(one.coordinator.owners("billing")) == 4, what="the survivor to take all")
            assert set(one.coordinator.owners("billing").values()) == {two.coordinator.members("billing")[0].member_id}
            for n in range(400, 500):
                await two.publish("orders", {"n": n}, key=str(n))
            await eventually(lambda: len(set(handled["one"]) | set(handled["two"])) == 500)
            await two.stop()

    with shared:
        asyncio.run(scenario())


def test_idempotent_subscriptions_skip_events_they_already_handled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    handled: list[str] = []

    async def scenario() -> None:
        with App("billing", url) as app:

            @app.subscribe("orders", group="billing", idempotent=True)
            async def charge(order: dict[str, str]) -> None:
                handled.append(order["id"])

            await app.start()
            event = await app.publish("orders", {"id": "a"}, key="a")
            await app.publish("orders", event)  # a producer's retry: same source and id
            await app.publish("orders", {"id": "b"}, key="a")
            await eventually(lambda: app.metrics.value("inmotion_skipped_total") == 1)
            await eventually(lambda: len(handled) == 2)
            await app.stop()

    asyncio.run(scenario())
    assert handled == ["a", "b"]


def test_a_transactional_handler_commits_its_writes_with_the_dedupe_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    path = tmp_path / "log.db"
    calls: list[int] = []

    async def scenario() -> None:
        with App("ledger", url) as app:
            with sqlite3.connect(path) as setup:
                setup.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER)")

            @app.subscribe("payments", group="ledger", idempotent=True, transaction=True)
            def book(payment: dict[str, Any], ctx: Context) -> None:
                assert ctx.db is not None
                calls.append(payment["amount"])
                ctx.db.execute(
                    "INSERT INTO balances VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET amount = amount + ?",
                    (payment["account"], payment["amount"], payment["amount"]),
                )
                ctx.publish_sync("booked", {"account": payment["account"]})
                if payment["amount"] == 13 and calls.count(13) == 1:
                    raise RuntimeError("unlucky: the write above must roll back")

            await app.start()
            first = await app.publish("payments", {"account": "x", "amount": 5}, key="x")
            await app.publish("payments", first)  # a duplicate delivery
            await app.publish("payments", {"account": "x", "amount": 13}, key="x")
            await eventually(lambda: app.metrics.value("inmotion_consumed_total") == 2)
            await eventually(lambda: sum(p.latest for p in app.log.describe_topic("booked").partitions) == 2)
            await app.stop()
            # the duplicate counts as skipped only, not also as consumed
            assert app.metrics.value("inmotion_consumed_total") == 2
            assert app.metrics.value("inmotion_skipped_total") == 1
            with sqlite3.connect(path) as check:
                assert check.execute("SELECT amount FROM balances").fetchall() == [(18,)]
            # the position went into the group's committed offsets, the one store of positions
            assert sum(app.log.committed("ledger", "payments").values()) == 3

    asyncio.run(scenario())
    assert calls == [5, 13, 13]


def ledger(path: Path) -> App:
    """An app on the SQLite file `path`, with a topic `payments` of one partition and a table
    `booked (amount INTEGER)` for transactional handlers to write to."""
    app = App("ledger", f"sqlite:///{path}")
    app.log.create_topic("payments", TopicConfig(partitions=1))
    with contextlib.closing(sqlite3.connect(path)) as setup, setup:
        setup.execute("CREATE TABLE booked (amount INTEGER)")
    return app


def test_a_transactional_handler_is_exactly_once_without_dedupe_records(tmp_path: Path) -> None:
    """The position commits with the handler's writes: a failed try leaves neither, and no
    dedupe record is needed (nor written) for the effects to happen once."""
    path = tmp_path / "log.db"
    calls: list[int] = []

    async def scenario() -> None:
        with ledger(path) as app:

            @app.subscribe("payments", group="ledger", transaction=True, retry=Retry(attempts=3, backoff=0))
            def book(payment: dict[str, int], ctx: Context) -> None:
                assert ctx.db is not None
                calls.append(payment["amount"])
                ctx.db.execute("INSERT INTO booked VALUES (?)", (payment["amount"],))
                if payment["amount"] == 13 and calls.count(13) == 1:
                    raise RuntimeError("unlucky: the write above must roll back")

            await app.start()
            for amount in (5, 13, 8):
                await app.publish("payments", {"amount": amount})
            await eventually(lambda: app.log.committed("ledger", "payments") == {0: 3})
            await app.stop()

    asyncio.run(scenario())
    assert calls == [5, 13, 13, 8]
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT amount FROM booked").fetchall() == [(5,), (13,), (8,)]
        assert check.execute("SELECT count(*) FROM grp_handled").fetchone() == (0,)


def test_dedupe_storage_failures_neither_stall_nor_drop_events() -> None:
    """Unreadable dedupe records: the event waits (with backoff) until they can be read, since
    handling it blind could repeat its effects. Unwritable ones: logged; the event counts as
    handled and the partition goes on."""
    clock = FakeClock()
    handled: list[str] = []

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="billing", idempotent=True, retry=Retry(backoff=0.5, jitter=False))
            async def charge(order: dict[str, str]) -> None:
                handled.append(order["id"])

            coordinator = app.coordinator
            seen, remember = coordinator.seen, coordinator.remember
            failures = {"seen": 2, "remember": 1}

            def flaky_seen(group: str, keys: Any) -> Any:
                if failures["seen"]:
                    failures["seen"] -= 1
                    raise StorageError("dedupe records unreadable")
                return seen(group, keys)

            def flaky_remember(group: str, keys: Any) -> None:
                if failures["remember"]:
                    failures["remember"] -= 1
                    raise StorageError("dedupe records unwritable")
                remember(group, keys)

            coordinator.seen = flaky_seen  # type: ignore[method-assign]
            coordinator.remember = flaky_remember  # type: ignore[method-assign]
            await app.start()
            first = await app.publish("orders", {"id": "a"}, key="k")
            await app.publish("orders", {"id": "b"}, key="k")
            await eventually(lambda: handled == ["a", "b"] and not failures["remember"])
            await app.publish("orders", first)  # "a" was not recorded: handled again, not lost
            await app.publish("orders", {"id": "c"}, key="k")
            await app.publish("orders", await app.publish("orders", {"id": "d"}, key="k"))
            await eventually(lambda: handled[-1:] == ["d"] and app.metrics.value("inmotion_skipped_total") == 1)
            await app.stop()
            assert app.log.committed("billing", "orders") == {0: 6}

    asyncio.run(scenario())
    assert handled == ["a", "b", "a", "c", "d"]
    assert clock.sleeps[:2] == [0.5, 1.0]  # the unreadable records were asked for again after a backoff


def test_handlers_do_not_wait_for_dedupe_writes_but_commits_do() -> None:
    """While a dedupe write is slow, the partition goes on, a copy right behind its original
    is still skipped, and no offset past the handled events is committed until it is done."""
    handled: list[str] = []
    release = threading.Event()

    async def scenario() -> None:
        with App("billing", "memory://", commit_interval=0.05) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="billing", idempotent=True)
            async def charge(order: dict[str, str]) -> None:
                handled.append(order["id"])

            remember = app.coordinator.remember

            def slow_remember(group: str, keys: Any) -> None:
                release.wait(30)
                remember(group, keys)

            app.coordinator.remember = slow_remember  # type: ignore[method-assign]
            await app.start()
            first = await app.publish("orders", {"id": "a"}, key="k")
            await app.publish("orders", first)  # a copy, while the record of "a" is being written
            await app.publish("orders", {"id": "b"}, key="k")
            await eventually(lambda: handled == ["a", "b"] and app.metrics.value("inmotion_skipped_total") == 1)
            await asyncio.sleep(0.3)  # several commit intervals
            assert app.log.committed("billing", "orders") == {}
            release.set()
            await eventually(lambda: app.log.committed("billing", "orders") == {0: 3})
            assert app.coordinator.seen("billing", [(first.source, first.id)]) == {(first.source, first.id)}
            await app.stop()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert handled == ["a", "b"]


def test_a_partition_whose_offsets_cannot_be_read_yet_is_taken_up_at_a_later_heartbeat() -> None:
    """Reading a newly assigned partition's committed offset fails (a broker restarting, a
    locked file): the consumer says so and tries again at the next heartbeat instead of dying."""
    handled: list[int] = []

    async def scenario() -> None:
        with App("billing", "memory://", session_timeout=0.5) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="billing")
            async def charge(order: dict[str, int]) -> None:
                handled.append(order["n"])

            committed = app.log.committed
            failures = [StorageError("offsets unreadable")]

            def flaky_committed(group: str, topic: str) -> dict[int, int]:
                if failures:
                    raise failures.pop()
                return committed(group, topic)

            app.log.committed = flaky_committed  # type: ignore[method-assign]
            await app.publish("orders", {"n": 1})
            await app.start()
            await eventually(lambda: handled == [1])
            assert not failures
            await app.stop()

    asyncio.run(scenario())


def test_a_transaction_abandoned_while_waiting_for_the_lock_gives_it_back(tmp_path: Path) -> None:
    """A worker stopped (its partition lost) while its transaction waits for another process's
    write lock: when the lock comes, it is rolled back at once, not held until the process dies."""
    path = tmp_path / "log.db"
    with connect(f"sqlite:///{path}") as log:
        coordinator = log.group_coordinator()
        transaction = coordinator.transaction("ledger")
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        pool = concurrent.futures.ThreadPoolExecutor(1)

        async def abandon() -> None:
            waiting = asyncio.ensure_future(begin(transaction, pool))
            await asyncio.sleep(0)  # the BEGIN is now waiting in the pool's thread
            waiting.cancel()
            other.execute("COMMIT")  # the lock is free: the abandoned BEGIN takes it
            with pytest.raises(asyncio.CancelledError):
                await waiting

        asyncio.run(abandon())
        pool.shutdown(wait=True)
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if the abandoned one kept it
        other.execute("COMMIT")
        other.close()
        transaction.close()
        coordinator.close()


def test_a_hand_over_that_cannot_commit_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    app = App("one", "memory://")

    @app.subscribe("orders", group="billing")
    async def charge(order: dict[str, int], ctx: Context) -> None: ...

    consumer = Consumer(app, app.subscriptions[0], app.log.group_coordinator())

    class Drained:
        async def drain(self) -> None: ...

    async def locked(workers: Any) -> None:
        raise StorageError("log.db is locked by another process (waited 10s)")

    consumer.committer.commit = locked  # type: ignore[method-assign]
    tp = TopicPartition("orders", 0)
    consumer._revoking.add(tp)
    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        asyncio.run(consumer._revoke(tp, Drained()))  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "could not hand over orders/0: log.db is locked by another process (waited 10s)"
    ]
    assert tp not in consumer._revoking
    app.close()


def test_a_partition_lost_while_a_plain_transactional_handler_runs_leaves_none_of_its_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain (non-async) handler runs in a thread that cancelling cannot stop: when its
    partition is lost meanwhile, its transaction is rolled back after its last write, never
    before (a write after the rollback would land on its own, and the event, handled again,
    would have its effect twice)."""
    path = tmp_path / "log.db"
    consumers: list[Consumer] = []

    class Recorded(Consumer):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            consumers.append(self)

    monkeypatch.setattr("inmotion.runtime.app.Consumer", Recorded)
    started, release = threading.Event(), threading.Event()

    async def scenario() -> None:
        with ledger(path) as app:

            @app.subscribe("payments", group="ledger", transaction=True)
            def book(payment: dict[str, int], ctx: Context) -> None:
                assert ctx.db is not None
                if not started.is_set():  # the first try: still running when the partition is lost
                    started.set()
                    release.wait(30)
                ctx.db.execute("INSERT INTO booked VALUES (?)", (payment["amount"],))

            await app.start()
            await app.publish("payments", {"amount": 5})
            await eventually(started.is_set)
            (consumer,) = consumers
            await consumer._apply(Assignment(frozenset(), frozenset()))  # its leases lapsed
            for _ in range(3):  # the cancelled worker's task runs its clean-up now
                await asyncio.sleep(0)
            release.set()
            # the next heartbeat takes the partition up again and the event is handled anew
            await eventually(lambda: app.log.committed("ledger", "payments") == {0: 1})
            await app.stop()

    asyncio.run(scenario())
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT amount FROM booked").fetchall() == [(5,)]


def test_a_transaction_that_finds_its_lease_lapsed_starts_its_partition_over(tmp_path: Path) -> None:
    """A transactional handler's commit that finds the partition's lease lapsed (the process
    was paused past its session) rolls back. When the group gives the partition back to the
    same member, its events are handled from the committed offset: the partition never stalls."""
    path = tmp_path / "log.db"
    handled: list[int] = []

    async def scenario() -> None:
        with ledger(path) as app:
            coordinator = app.coordinator
            assert isinstance(coordinator, SqliteCoordinator)
            holds = coordinator.holds
            lapses = [True]

            def lapsed_once(conn: sqlite3.Connection, group: str, member_id: str, tp: TopicPartition) -> bool:
                return not lapses.pop() if lapses else holds(conn, group, member_id, tp)

            coordinator.holds = lapsed_once  # type: ignore[method-assign]

            @app.subscribe("payments", group="ledger", transaction=True)
            def book(payment: dict[str, int], ctx: Context) -> None:
                assert ctx.db is not None
                handled.append(payment["amount"])
                ctx.db.execute("INSERT INTO booked VALUES (?)", (payment["amount"],))

            await app.start()
            for amount in (5, 8):
                await app.publish("payments", {"amount": amount})
            await eventually(lambda: app.log.committed("ledger", "payments") == {0: 2}, limit=20)
            await app.stop()

    asyncio.run(scenario())
    assert handled == [5, 5, 8]
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT amount FROM booked").fetchall() == [(5,), (8,)]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_commit_made_late_never_takes_the_group_back(tmp_path: Path, backend: str) -> None:
    """A consumer paused past its session (SIGSTOP) commits, when it wakes, what it had finished
    before the pause; another member has gone further meanwhile. The group's offset stays where
    the other member left it: taken back, the events in between would be handled twice."""
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'log.db'}"
    with App("one", url) as app:
        app.log.create_topic("orders", TopicConfig(partitions=1))

        @app.subscribe("orders", group="billing")
        async def charge(order: dict[str, int]) -> None: ...

        consumer = Consumer(app, app.subscriptions[0], app.coordinator)
        tp = TopicPartition("orders", 0)
        paused = Worker(consumer.pipeline, tp, 3, 1, consumer.counter("consumed", "orders"), lambda: None)
        paused.committed = 2  # finished up to 3 before the pause, committed up to 2
        app.log.commit("billing", "orders", {0: 10})  # the member that took the partition over
        asyncio.run(consumer.committer.commit([paused]))
        assert app.log.committed("billing", "orders") == {0: 10}
        consumer.committer.close()
        app.log.commit("billing", "orders", {0: 4})  # a reset (inmotion replay) still moves it back
        assert app.log.committed("billing", "orders") == {0: 4}


def test_a_transactional_subscription_with_concurrency_handles_each_event_once_across_restarts(tmp_path: Path) -> None:
    """With `concurrency` > 1, an event can finish while an earlier one of another key has not:
    its transaction commits its effects with a position before it. Handled again after a
    restart from that position, its effects must not happen twice."""
    path = tmp_path / "log.db"
    tries: list[str] = []

    def app_with(fail_first_key: bool) -> App:
        app = App("ledger", f"sqlite:///{path}")

        @app.subscribe("payments", group="ledger", transaction=True, concurrency=2, retry=Retry(backoff=30))
        async def book(payment: dict[str, str], ctx: Context) -> None:
            assert ctx.db is not None
            tries.append(payment["key"])
            if fail_first_key and payment["key"] == "a":
                raise RuntimeError("the first key fails: its retry waits")
            ctx.db.execute("INSERT INTO booked VALUES (?)", (payment["key"],))

        return app

    async def scenario() -> None:
        with app_with(fail_first_key=True) as app:
            app.log.create_topic("payments", TopicConfig(partitions=1))
            with sqlite3.connect(path) as setup:
                setup.execute("CREATE TABLE booked (key TEXT)")
            for key in ("a", "b"):
                await app.publish("payments", {"key": key}, key=key)
            await app.start()
            await eventually(lambda: "b" in tries)
            await app.stop()  # "a" waits for its retry: not finished, the position stays before it
            assert app.log.committed("ledger", "payments") == {0: 0}
        with app_with(fail_first_key=False) as app:
            await app.start()
            await eventually(lambda: app.log.committed("ledger", "payments") == {0: 2})
            await app.stop()

    asyncio.run(scenario())
    with sqlite3.connect(path) as check:
        assert sorted(check.execute("SELECT key FROM booked").fetchall()) == [("a",), ("b",)]
