"""Event sourcing next to pyeventsourcing (the `eventsourcing` package on SQLite), in one run.

    .venv/bin/python bench/sourcing.py            # 10,000 saves; 10,000-event replay; 100,000-event snapshot load
    .venv/bin/python bench/sourcing.py --quick    # a smoke run at a tenth of the size

Both sides run the same bank account: one aggregate, commands that each emit one `Deposited`
event, a save after every 10 commands.

- Append: saves per second over 10,000 saves of 10 events. Both stores in WAL mode; the
  headline compares them at the same durability (synchronous=NORMAL: survives a killed process,
  which is inmotion's default; pyeventsourcing's connections are given the same pragma), and a
  second, shorter round compares them at synchronous=FULL (an fsync per commit, pyeventsourcing's
  default), where both wait for the disk.
- Replay: loading a 10,000-event aggregate without snapshots (events per second).
- Snapshot load: `Repository.get` of a 100,000-event aggregate with a snapshot every 100 events,
  at the worst point (99 events after the newest snapshot).

Targets: append >= 3x and replay >= 3x pyeventsourcing; snapshot load under 5 ms. The machine is
shared, so each figure is the best of a few runs (the least disturbed one).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing import domain as es_domain
from eventsourcing import sqlite as es_sqlite
from eventsourcing.application import Application

from inmotion.sourcing import Aggregate, EventStore, Repository, applies

EVENTS_PER_SAVE = 10


# --- inmotion's account -------------------------------------------------------------------------------
@dataclasses.dataclass
class Deposited:
    amount: int


class Account(Aggregate):
    balance: int = 0

    def deposit(self, amount: int) -> None:
        self.emit(Deposited(amount))

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


# --- pyeventsourcing's account ----------------------------------------------------------------------
class EsAccount(es_domain.Aggregate):
    def __init__(self) -> None:
        self.balance = 0

    @es_domain.event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


@contextmanager
def es_synchronous(level: str) -> Iterator[None]:
    """pyeventsourcing's SQLite connections with `PRAGMA synchronous = level` (it sets none itself)."""
    original = es_sqlite.SQLiteConnectionPool._create_connection

    def create(pool: es_sqlite.SQLiteConnectionPool) -> es_sqlite.SQLiteConnection:
        connection = original(pool)
        connection._sqlite_conn.execute(f"PRAGMA synchronous = {level}")
        return connection

    es_sqlite.SQLiteConnectionPool._create_connection = create  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        es_sqlite.SQLiteConnectionPool._create_connection = original  # type: ignore[method-assign]


def es_app(path: Path) -> Application[Any]:
    return Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


# --- measurements -----------------------------------------------------------------------------------
def best_of(repeat: int, work: Callable[[int], Any]) -> float:
    """The shortest of `repeat` timed runs of `work(round)`, in seconds."""
    times = []
    for round_number in range(repeat):
        start = time.perf_counter()
        work(round_number)
        times.append(time.perf_counter() - start)
    return min(times)


def deposit_and_save(account: Account | EsAccount, save: Callable[[Any], object], saves: int) -> None:
    """The workload of both sides: `saves` times, EVENTS_PER_SAVE commands then a save."""
    for _ in range(saves):
        for amount in range(EVENTS_PER_SAVE):
            account.deposit(amount)
        save(account)


def inmotion_saves(directory: Path, saves: int, durability: str) -> Callable[[int], None]:
    def run(round_number: int) -> None:
        path = directory / f"inmotion-append-{durability}-{round_number}.db"
        with EventStore(f"sqlite:///{path}?durability={durability}") as store:
            deposit_and_save(Account("account"), Repository(store, Account).save, saves)

    return run


def es_saves(directory: Path, saves: int, synchronous: str) -> Callable[[int], None]:
    def run(round_number: int) -> None:
        with es_synchronous(synchronous):
            app = es_app(directory / f"es-append-{synchronous}-{round_number}.db")
            deposit_and_save(EsAccount(), app.save, saves)
            app.close()

    return run


def append_round(directory: Path, saves: int, repeat: int, *, inmotion: str, es: str) -> tuple[float, float]:
    mine = saves / best_of(repeat, inmotion_saves(directory, saves, inmotion))
    print(f"  inmotion          {mine:>10,.0f} saves/s  ({mine * EVENTS_PER_SAVE:,.0f} events/s)", flush=True)
    theirs = saves / best_of(repeat, es_saves(directory, saves, es))
    print(f"  pyeventsourcing   {theirs:>10,.0f} saves/s  ({theirs * EVENTS_PER_SAVE:,.0f} events/s)", flush=True)
    print(f"  ratio             {mine / theirs:>10.1f}x", flush=True)
    return mine, theirs


def replay(directory: Path, events: int, repeat: int) -> tuple[float, float]:
    saves = events // EVENTS_PER_SAVE
    with EventStore(f"sqlite:///{directory / 'inmotion-replay.db'}") as store:
        accounts = Repository(store, Account)
        account = Account("account")
        deposit_and_save(account, accounts.save, saves)
        expected = account.balance

        def load(_: int) -> None:
            assert accounts.get("account").balance == expected

        mine = events / best_of(repeat, load)
    print(f"  inmotion          {mine:>10,.0f} events/s  ({events / mine * 1000:.1f} ms)", flush=True)

    with es_synchronous("NORMAL"):
        app = es_app(directory / "es-replay.db")
        es_account = EsAccount()
        deposit_and_save(es_account, app.save, saves)

        def es_load(_: int) -> None:
            assert app.repository.get(es_account.id).balance == expected

        theirs = events / best_of(repeat, es_load)
        app.close()
    print(f"  pyeventsourcing   {theirs:>10,.0f} events/s  ({events / theirs * 1000:.1f} ms)", flush=True)
    print(f"  ratio             {mine / theirs:>10.1f}x", flush=True)
    return mine, theirs


def snapshot_load(directory: Path, events: int, repeat: int) -> float:
    every = 100
    with EventStore(f"sqlite:///{directory / 'inmotion-snapshots.db'}") as store:
        accounts = Repository(store, Account, snapshot_every=every)
        account = Account("account")
        chunk = 1000
        for done in range(0, events, chunk):
            for amount in range(chunk):
                account.deposit(amount)
            accounts.save(account)
            if done % (events // 10) == 0:
                print(f"  building: {account.version:,} events", flush=True)
        for amount in range(every - 1):  # the worst point: the most events after a snapshot
            account.deposit(amount)
        accounts.save(account)
        expected = (account.version, account.balance)
        snapshot = store.load_snapshot("account")
        assert snapshot is not None
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            loaded = accounts.get("account")
            times.append(time.perf_counter() - start)
            assert (loaded.version, loaded.balance) == expected
    best, median = min(times) * 1000, statistics.median(times) * 1000
    print(
        f"  {expected[0]:,} events, snapshot at {snapshot.version:,}: best {best:.2f} ms, median {median:.2f} ms",
        flush=True,
    )
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run at a tenth of the size")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    saves, replay_events, snapshot_events = 10_000 // scale, 10_000 // scale, 100_000 // scale
    repeat = 1 if args.quick else 2
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cores", flush=True)

    with tempfile.TemporaryDirectory(prefix="inmotion-bench-sourcing-") as name:
        directory = Path(name)
        print(f"\nappend: {saves:,} saves of {EVENTS_PER_SAVE} events, synchronous=NORMAL on both", flush=True)
        mine, theirs = append_round(directory, saves, repeat, inmotion="normal", es="NORMAL")
        append_ratio = mine / theirs
        fsync_saves = max(saves // 10, 100)
        print(f"\nappend: {fsync_saves:,} saves of {EVENTS_PER_SAVE} events, synchronous=FULL on both", flush=True)
        append_round(directory, fsync_saves, repeat, inmotion="fsync", es="FULL")

        print(f"\nreplay: one {replay_events:,}-event aggregate, no snapshots", flush=True)
        mine, theirs = replay(directory, replay_events, 5)
        replay_ratio = mine / theirs

        print(f"\nsnapshot load: a {snapshot_events:,}-event aggregate, a snapshot every 100 events", flush=True)
        snapshot_ms = snapshot_load(directory, snapshot_events, 50)

    checks = [
        (f"append {append_ratio:.1f}x pyeventsourcing", append_ratio >= 3),
        (f"replay {replay_ratio:.1f}x pyeventsourcing", replay_ratio >= 3),
        (f"snapshot load {snapshot_ms:.2f} ms (median)", snapshot_ms < 5),
    ]
    print("\ntargets: append >= 3x, replay >= 3x, snapshot load < 5 ms")
    for label, met in checks:
        print(f"  {'met ' if met else 'MISSED'}  {label}")
    return 0 if all(met for _, met in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
