from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

import inmotion
from inmotion.errors import ConcurrencyError, InvalidConfig, InvalidEvent, StorageError
from inmotion.sourcing import EventStore, NewEvent, NewSnapshot, UnreadableEvent


def events(*numbers: int) -> list[NewEvent]:
    return [NewEvent("Counted", {"n": n}) for n in numbers]


def test_the_store_writes_and_reads_through_its_recorder(store: EventStore) -> None:
    """The recorder's own rules are RecorderContract's (test_recorder_contract.py); here, what
    EventStore adds: encoding, defaults, and versions and positions below 1 read as 1."""
    assert store.append("s", events(1, 2), 0, snapshot=NewSnapshot("Counter", {"total": 3}, schema_version=2)) == 2
    store.append("t", events(3), 0)
    with pytest.raises(ConcurrencyError):
        store.append("s", events(4), 0)
    assert [e.data["n"] for e in store.read("s", from_version=0)] == [1, 2]
    assert [e.data["n"] for e in store.read("s", 2)] == [2]
    assert [e.position for e in store.read_all(from_position=-5)] == [1, 2, 3]
    assert [e.position for e in store.read_all(2, limit=1)] == [2]
    assert (store.stream_version("s"), store.last_position()) == (2, 3)
    snapshot = store.load_snapshot("s")
    assert snapshot is not None
    assert (snapshot.version, snapshot.type, snapshot.schema_version, snapshot.data) == (2, "Counter", 2, {"total": 3})
    assert store.wait(2, timeout=0.01)


def test_stored_events_keep_type_schema_version_and_id(store: EventStore) -> None:
    store.append("s", [NewEvent("Renamed", {"to": "x"}, schema_version=2, id="event-1")], 0)
    (event,) = store.read("s")
    assert (event.type, event.schema_version, event.id, event.data) == ("Renamed", 2, "event-1", {"to": "x"})
    cloud = event.to_cloudevent()
    assert (cloud.type, cloud.id, cloud.key, cloud.subject) == ("Renamed", "event-1", "s", "s")
    assert cloud.extensions["streamversion"] == 1
    assert cloud.data == {"to": "x"}


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_typed_data_is_stored_as_json(store: EventStore) -> None:
    store.append("s", [NewEvent("Moved", Point(1, 2))], 0)
    assert store.read("s")[0].data == {"x": 1, "y": 2}


def test_bad_input_is_refused_before_anything_is_written(store: EventStore) -> None:
    with pytest.raises(InvalidConfig, match="stream id"):
        store.append("", events(1), 0)
    with pytest.raises(InvalidConfig, match="expected_version"):
        store.append("s", events(1), -1)
    with pytest.raises(InvalidConfig, match="NewEvent"):
        store.append("s", [{"type": "x"}], 0)  # type: ignore[list-item]
    with pytest.raises(InvalidConfig, match="event type"):
        store.append("s", [NewEvent("", {})], 0)
    with pytest.raises(InvalidConfig, match="schema version"):
        store.append("s", [NewEvent("X", {}, schema_version=0)], 0)
    with pytest.raises(InvalidEvent, match="cannot encode"):
        store.append("s", [*events(1), NewEvent("X", object())], 0)
    assert store.last_position() == 0
    with pytest.raises(InvalidConfig, match="unknown broker URL"):
        EventStore("postgres://x")
    with pytest.raises(InvalidConfig, match="the event store cannot live on kafka://"):
        EventStore("kafka://127.0.0.1:9")


def test_async_twins(store: EventStore) -> None:
    async def main() -> list[int]:
        assert await store.aappend("s", events(1, 2), 0) == 2
        return [e.version for e in await store.aread("s")]

    assert asyncio.run(main()) == [1, 2]


# --- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_store_is_durable_across_reopen(sqlite_url: str) -> None:
    with EventStore(sqlite_url) as store:
        store.append("s", events(1, 2), 0)
    with EventStore(sqlite_url) as store:
        assert [e.data["n"] for e in store.read("s")] == [1, 2]
        assert store.append("s", events(3), 2) == 3


@pytest.mark.parametrize("log_first", [True, False])
def test_sqlite_store_shares_the_file_with_the_log(directory: Path, log_first: bool) -> None:
    url = f"sqlite:///{directory / 'inmotion.db'}"
    if log_first:
        inmotion.connect(url).close()
    with EventStore(url) as store:
        store.append("s", events(1), 0)
        event = store.read("s")[0].to_cloudevent()
    with inmotion.connect(url) as log:
        log.create_topic("orders")
        log.append_events("orders", [event])
        assert log.latest_offset("orders", 0) == 1
    with EventStore(url) as store:
        assert store.stream_version("s") == 1


def test_sqlite_store_refuses_a_foreign_database(directory: Path) -> None:
    path = directory / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (x)")
    conn.close()
    with pytest.raises(StorageError, match="not an inmotion log"):
        EventStore(f"sqlite:///{path}")
    with pytest.raises(StorageError, match="does not exist"):
        EventStore(f"sqlite:///{directory / 'missing' / 'x.db'}")
    with pytest.raises(InvalidConfig, match="unknown event store URL option"):
        EventStore(f"sqlite:///{path}?colour=blue")
    with pytest.raises(InvalidConfig, match="durability must be"):
        EventStore(f"sqlite:///{directory / 'a.db'}?durability=sometimes")
    with pytest.raises(InvalidConfig, match="must be numbers"):
        EventStore(f"sqlite:///{directory / 'a.db'}?timeout=soon")
    with pytest.raises(InvalidConfig, match="names no file"):
        EventStore("sqlite://")


def test_sqlite_refuses_a_file_from_a_newer_store(sqlite_url: str, directory: Path) -> None:
    EventStore(sqlite_url).close()
    with sqlite3.connect(directory / "store.db") as conn:
        conn.execute("UPDATE es_meta SET value = 99 WHERE key = 'event_store_schema'")
    conn.close()
    with pytest.raises(StorageError, match="newer inmotion"):
        EventStore(sqlite_url)


def test_corrupt_payload_names_stream_and_version(sqlite_url: str, directory: Path) -> None:
    with EventStore(sqlite_url) as store:
        store.append("s", events(1, 2), 0)
        with sqlite3.connect(directory / "store.db") as conn:
            conn.execute("UPDATE es_events SET payload = x'7b6e3a' WHERE version = 2")
        conn.close()
        first, second = store.read("s")
        assert first.data == {"n": 1}
        with pytest.raises(UnreadableEvent, match=r"event 2 of stream 's': corrupt payload of 'Counted'"):
            _ = second.data
