"""What the multi-process tests run in their child processes (started with `spawn`)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, ClassVar

from inmotion.errors import ConcurrencyError
from inmotion.sourcing import (
    EventStore,
    NewEvent,
    OutboxRelay,
    Projection,
    Projector,
    Repository,
    Transaction,
    handles,
)

from .bank import Account

BATCH = 40
STREAMS = ("s0", "s1", "s2")


def save_in_rounds(url: str, name: str, rounds: int, barrier: Any, conflicts: Any) -> None:
    """Each round: load, wait for the other process to load too, deposit, save; on a conflict
    reload and retry. Reports how many conflicts this process had."""
    accounts = Repository(EventStore(url), Account)
    lost = 0
    for _ in range(rounds):
        account = accounts.get("acc")
        barrier.wait()
        account.deposit(1, by=name)
        try:
            accounts.save(account)
        except ConcurrencyError:
            lost += 1
            retry = accounts.get("acc")
            retry.deposit(1, by=name)
            accounts.save(retry)
        barrier.wait()
    conflicts.put((name, lost))


def append_forever(url: str, writer: str) -> None:
    """Append batches of BATCH events to shared streams until killed; conflicts are retried."""
    store = EventStore(url)
    batch = 0
    while True:
        stream = STREAMS[batch % len(STREAMS)]
        events = [NewEvent("Tick", {"writer": writer, "batch": batch, "i": i}) for i in range(BATCH)]
        while True:
            try:
                store.append(stream, events, store.stream_version(stream))
                break
            except ConcurrencyError:
                continue
        batch += 1


@dataclasses.dataclass
class Tick:
    writer: str
    batch: int
    i: int


class Applied(Projection):
    """Every application of an event leaves a row, so double application would show."""

    name = "applied"
    tables: ClassVar[dict[str, str]] = {
        "applied": "CREATE TABLE {applied} (position INTEGER NOT NULL, stream TEXT NOT NULL)",
        "totals": "CREATE TABLE {totals} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    }

    @handles(Tick)
    def _tick(self, tx: Transaction, event: Tick) -> None:
        tx.execute("INSERT INTO {applied} VALUES (?, ?)", (tx.stored.position, tx.stored.stream_id))
        tx.execute(
            "INSERT INTO {totals} VALUES (?, 1) ON CONFLICT (stream) DO UPDATE SET n = n + 1",
            (tx.stored.stream_id,),
        )


def project_forever(url: str, read_model: str) -> None:
    with Projector(Applied(), EventStore(url), read_model, batch_size=25) as projector:
        projector.run(threading.Event(), poll=0.01)


def relay_forever(url: str, topic: str) -> None:
    relay = OutboxRelay(EventStore(url), url, topic, batch_size=20)
    relay.run(threading.Event(), poll=0.01)
