from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from inmotion.errors import ConcurrencyError, InvalidConfig
from inmotion.sourcing import (
    Aggregate,
    AggregateNotFound,
    EventStore,
    Repository,
    StoredEvent,
    applies,
)

from .bank import Account, Deposited, Entry, Opened, Withdrawn


def test_commands_emit_events_that_appliers_apply(store: EventStore) -> None:
    accounts = Repository(store, Account)
    account = Account("acc-1")
    account.open("ann")
    account.deposit(50)
    account.withdraw(20)
    assert (account.balance, account.version) == (30, 3)
    assert [type(e) for e in account.pending_events] == [Opened, Deposited, Withdrawn]
    assert accounts.save(account) == 3
    assert account.pending_events == ()

    loaded = accounts.get("acc-1")
    assert (loaded.owner, loaded.balance, loaded.version) == ("ann", 30, 3)
    assert loaded.entries == [Entry("deposit", 50), Entry("withdrawal", 20)]
    assert [(e.type, e.data) for e in store.read("acc-1")] == [
        ("Opened", {"owner": "ann"}),
        ("Deposited", {"amount": 50, "by": ""}),
        ("Withdrawn", {"amount": 20}),
    ]


def test_a_failed_command_emits_nothing(store: EventStore) -> None:
    account = Account("acc-1")
    with pytest.raises(ValueError, match="insufficient"):
        account.withdraw(5)
    assert account.pending_events == ()
    assert Repository(store, Account).save(account) == 0
    assert store.last_position() == 0


def test_saving_without_changes_and_loading_a_missing_aggregate(store: EventStore) -> None:
    accounts = Repository(store, Account)
    with pytest.raises(AggregateNotFound, match="acc-9"):
        accounts.get("acc-9")
    account = Account("acc-1")
    account.open("ann")
    accounts.save(account)
    assert accounts.save(account) == 1
    assert store.last_position() == 1


def test_emitting_an_event_without_an_applier_is_refused() -> None:
    account = Account("acc-1")
    with pytest.raises(InvalidConfig, match="no applier for Entry"):
        account.emit(Entry("x", 1))
    with pytest.raises(InvalidConfig, match="non-empty string"):
        Account("")


def test_save_refuses_another_aggregate_class(store: EventStore) -> None:
    class Other(Aggregate):
        pass

    with pytest.raises(InvalidConfig, match="saves Account"):
        Repository(store, Account).save(Other("x"))  # type: ignore[arg-type]


def test_a_stale_aggregate_conflicts_and_succeeds_after_reload(store: EventStore) -> None:
    accounts = Repository(store, Account)
    account = Account("acc-1")
    account.open("ann")
    accounts.save(account)
    first, second = accounts.get("acc-1"), accounts.get("acc-1")
    first.deposit(10)
    accounts.save(first)
    second.deposit(5)
    with pytest.raises(ConcurrencyError):
        accounts.save(second)
    assert store.stream_version("acc-1") == 2
    retry = accounts.get("acc-1")
    retry.deposit(5)
    assert accounts.save(retry) == 3
    assert accounts.get("acc-1").balance == 15


def test_concurrent_writers_on_threads_exactly_one_wins_each_version(store: EventStore) -> None:
    accounts = Repository(store, Account)
    account = Account("acc-1")
    account.open("ann")
    accounts.save(account)
    rounds = 25
    both_loaded = threading.Barrier(2)
    conflicts: list[str] = []

    def writer(name: str) -> None:
        for _ in range(rounds):
            mine = accounts.get("acc-1")
            both_loaded.wait()  # both hold the same version before either saves
            mine.deposit(1, by=name)
            try:
                accounts.save(mine)
            except ConcurrencyError:
                conflicts.append(name)
                retry = accounts.get("acc-1")
                retry.deposit(1, by=name)
                accounts.save(retry)
            both_loaded.wait()  # the round is over for both before either loads again

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(conflicts) == rounds  # one loser per round
    stream = store.read("acc-1")
    assert [e.version for e in stream] == list(range(1, 2 * rounds + 2))
    by = [e.data["by"] for e in stream[1:]]
    assert by.count("a") == by.count("b") == rounds
    assert accounts.get("acc-1").balance == 2 * rounds


class CountingStore:
    """Records the `from_version` of each stream read, to see where `get` starts replaying."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads: list[int] = []

    def read(self, stream_id: str, from_version: int = 1, to_version: int | None = None) -> list[StoredEvent]:
        self.reads.append(from_version)
        return self.store.read(stream_id, from_version, to_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_snapshots_every_n_events_are_used_by_get(store: EventStore) -> None:
    counting = CountingStore(store)
    accounts = Repository(counting, Account, snapshot_every=4)  # type: ignore[arg-type]
    account = Account("acc-1")
    account.open("ann")
    accounts.save(account)  # version 1: no snapshot yet
    assert store.load_snapshot("acc-1") is None
    for amount in range(1, 6):
        account.deposit(amount)
        accounts.save(account)  # versions 2..6: a snapshot when passing 4
    snapshot = store.load_snapshot("acc-1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.type) == (4, "Account")
    assert snapshot.data["balance"] == 1 + 2 + 3

    loaded = accounts.get("acc-1")
    assert counting.reads == [5]
    assert (loaded.balance, loaded.version, loaded.owner) == (15, 6, "ann")
    assert loaded.entries == [Entry("deposit", n) for n in range(1, 6)]  # typed from the snapshot
    loaded.deposit(100)
    loaded.deposit(100)
    accounts.save(loaded)  # versions 7..8: passes 8
    snapshot = store.load_snapshot("acc-1")
    assert snapshot is not None
    assert snapshot.version == 8
    assert accounts.get("acc-1").balance == 215


def test_a_batch_that_jumps_past_several_multiples_snapshots_once(store: EventStore) -> None:
    accounts = Repository(store, Account, snapshot_every=2)
    account = Account("acc-1")
    account.open("ann")
    for _ in range(6):
        account.deposit(1)
    accounts.save(account)
    snapshot = store.load_snapshot("acc-1")
    assert snapshot is not None
    assert snapshot.version == 7
    assert accounts.get("acc-1").balance == 6


def test_a_repository_without_snapshots_ignores_them(store: EventStore) -> None:
    account = Account("acc-1")
    account.open("ann")
    account.deposit(3)
    Repository(store, Account, snapshot_every=1).save(account)
    counting = CountingStore(store)
    assert Repository(counting, Account).get("acc-1").balance == 3  # type: ignore[arg-type]
    assert counting.reads == [1]
    with pytest.raises(InvalidConfig, match="snapshot_every"):
        Repository(store, Account, snapshot_every=0)


def test_async_get_and_save(store: EventStore) -> None:
    accounts = Repository(store, Account, snapshot_every=2)

    async def main() -> int:
        account = Account("acc-1")
        account.open("ann")
        account.deposit(7)
        await accounts.asave(account)
        loaded = await accounts.aget("acc-1")
        return loaded.balance

    assert asyncio.run(main()) == 7


class Tally(Aggregate):
    """An aggregate whose applier is inherited and whose events come from two classes."""

    count: int = 0

    @applies(Opened, Deposited)
    def _counted(self, event: Opened | Deposited) -> None:
        self.count += 1


class LoudTally(Tally):
    pass


def test_appliers_may_cover_several_classes_and_are_inherited(store: EventStore) -> None:
    tallies = Repository(store, LoudTally)
    tally = LoudTally("t")
    tally.emit(Opened("x"))
    tally.emit(Deposited(1))
    tallies.save(tally)
    assert tallies.get("t").count == 2
