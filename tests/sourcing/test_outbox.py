from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import inmotion
from inmotion.errors import InvalidConfig, StorageError
from inmotion.log import Log, Position
from inmotion.log.memory import MemoryLog
from inmotion.sourcing import EventStore, NewEvent, OutboxRelay
from inmotion.testing import wait_until


def append_round(store: EventStore, streams: Sequence[str], per_stream: int) -> None:
    for stream in streams:
        version = store.stream_version(stream)
        store.append(stream, [NewEvent("Step", {"n": version + i}) for i in range(1, per_stream + 1)], version)


def published(log: Log, topic: str) -> list[inmotion.Event]:
    events: list[inmotion.Event] = []
    for partition in range(log.partition_count(topic)):
        events.extend(record.event() for record in log.read(topic, partition, 0, 100_000))
    return events


def check_complete_and_in_order(store: EventStore, events: list[inmotion.Event]) -> None:
    """Every stored event was published; after dropping duplicates by id, each stream's
    events come in version order."""
    first_seen: dict[str, inmotion.Event] = {}
    for event in events:
        first_seen.setdefault(event.id, event)
    stored = store.read_all(1, 100_000)
    assert set(first_seen) == {e.id for e in stored}
    by_stream: dict[str, list[int]] = {}
    for event in first_seen.values():
        by_stream.setdefault(str(event.subject), []).append(int(str(event.extensions["streamversion"])))
    for stream, versions in by_stream.items():
        assert versions == list(range(1, store.stream_version(stream) + 1)), stream


def test_the_relay_publishes_every_event_once_in_order(store: EventStore) -> None:
    log = MemoryLog("memory://")
    append_round(store, ["a", "b", "c"], 4)
    relay = OutboxRelay(store, log, "events", batch_size=5, topic_config=inmotion.TopicConfig(partitions=2))
    assert relay.pending() == 12
    assert relay.relay_once() == 12
    assert relay.pending() == 0
    assert relay.relay_once() == 0
    events = published(log, "events")
    assert len(events) == 12
    check_complete_and_in_order(store, events)
    first = next(e for e in events if e.subject == "a" and int(str(e.extensions["streamversion"])) == 1)
    assert (first.type, first.key, first.data, first.source) == ("Step", "a", {"n": 1}, "inmotion.sourcing")


class CrashingLog(MemoryLog):
    """A log whose appends fail after `budget` successful ones, before or after writing."""

    def __init__(self, budget: int, *, after_write: bool) -> None:
        super().__init__("memory://")
        self.budget = budget
        self.after_write = after_write

    def append(self, topic: str, messages: Sequence[inmotion.Message]) -> list[Position]:
        if self.budget == 0:
            if self.after_write:
                super().append(topic, messages)
            raise StorageError("crash")
        self.budget -= 1
        return super().append(topic, messages)


@pytest.mark.parametrize("after_write", [False, True])
def test_a_crash_loses_nothing_and_keeps_per_stream_order(store: EventStore, after_write: bool) -> None:
    log = CrashingLog(2, after_write=after_write)
    append_round(store, ["a", "b", "c"], 5)
    relay = OutboxRelay(store, log, "events", batch_size=4)
    with pytest.raises(StorageError, match="crash"):
        relay.relay_once()
    assert relay.pending() == 15 - 8
    log.budget = -1  # the log is back
    append_round(store, ["c", "d"], 2)
    OutboxRelay(store, log, "events", batch_size=4).relay_once()
    events = published(log, "events")
    assert len(events) == 19 + (4 if after_write else 0)
    check_complete_and_in_order(store, events)


def test_the_relay_follows_appends_into_a_sqlite_log(directory: Path) -> None:
    url = f"sqlite:///{directory / 'inmotion.db'}"
    store = EventStore(url)
    relay = OutboxRelay(store, url, "events")
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        append_round(store, ["a", "b"], 3)
        wait_until(lambda: relay.pending() == 0)
        append_round(store, ["a"], 2)
        wait_until(lambda: relay.pending() == 0)
    finally:
        stop.set()
        thread.join()
    relay.close()
    with inmotion.connect(url) as log:
        events = published(log, "events")
    assert len(events) == 8
    check_complete_and_in_order(store, events)
    store.close()


def test_the_relay_s_cursor_is_kept_with_the_file_s_other_positions(directory: Path) -> None:
    path = directory / "inmotion.db"
    with EventStore(f"sqlite:///{path}") as store, inmotion.connect(f"sqlite:///{path}") as log:
        append_round(store, ["a", "b"], 3)
        relay = OutboxRelay(store, log, "events")
        assert relay.relay_once() == 6
        log.commit("billing", "events", {0: 6})
        log.delete_topic("events")  # clears the group's positions in the topic, not the relay's in the store
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT kind, tracker, source, partition, position FROM positions").fetchall()
        conn.close()
        assert rows == [("cursor", "outbox:events", "store:all", 0, 6)]
        assert relay.pending() == 0


def test_a_type_prefix_namespaces_the_published_types(store: EventStore) -> None:
    log = MemoryLog("memory://")
    append_round(store, ["a"], 2)
    relay = OutboxRelay(store, log, "events", type_prefix="bank.")
    assert relay.relay_once() == 2
    assert [event.type for event in published(log, "events")] == ["bank.Step", "bank.Step"]
    for bad in ["bank account.", None]:
        with pytest.raises(InvalidConfig, match="type_prefix must be text without whitespace"):
            OutboxRelay(store, log, "events", type_prefix=bad)  # type: ignore[arg-type]
