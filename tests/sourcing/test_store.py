from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmotion
from inmotion.errors import ConcurrencyError, InvalidConfig, InvalidEvent, StorageError
from inmotion.sourcing import EventStore, NewEvent, NewSnapshot, StoredEvent, UnreadableEvent


def events(*numbers: int) -> list[NewEvent]:
    return [NewEvent("Counted", {"n": n}) for n in numbers]


def test_versions_start_at_1_and_positions_run_over_all_streams(store: EventStore) -> None:
    assert store.append("a", events(1, 2), expected_version=0) == 2
    assert store.append("b", events(3), expected_version=0) == 1
    assert store.append("a", events(4), expected_version=2) == 3

    a = store.read("a")
    assert [(e.version, e.position, e.data["n"]) for e in a] == [(1, 1, 1), (2, 2, 2), (3, 4, 4)]
    assert [(e.stream_id, e.position) for e in store.read_all()] == [("a", 1), ("a", 2), ("b", 3), ("a", 4)]
    assert store.last_position() == 4
    assert store.stream_version("a") == 3
    assert store.stream_version("nobody") == 0
    assert store.read("nobody") == []


def test_stored_events_keep_type_schema_version_and_id(store: EventStore) -> None:
    store.append("s", [NewEvent("Renamed", {"to": "x"}, schema_version=2, id="event-1")], 0)
    (event,) = store.read("s")
    assert (event.type, event.schema_version, event.id, event.data) == ("Renamed", 2, "event-1", {"to": "x"})
    cloud = event.to_cloudevent()
    assert (cloud.type, cloud.id, cloud.key, cloud.subject) == ("Renamed", "event-1", "s", "s")
    assert cloud.extensions["streamversion"] == 1
    assert cloud.data == {"to": "x"}


def test_read_from_and_to_version(store: EventStore) -> None:
    store.append("s", events(*range(1, 11)), 0)
    assert [e.version for e in store.read("s", from_version=8)] == [8, 9, 10]
    assert [e.version for e in store.read("s", 3, 5)] == [3, 4, 5]
    assert store.read("s", from_version=11) == []


def test_read_all_pages_in_order(store: EventStore) -> None:
    for i in range(5):
        store.append(f"s{i}", events(i, i), 0)
    pages = [
        store.read_all(1, 3),
        store.read_all(4, 3),
        store.read_all(7, 3),
        store.read_all(10, 3),
        store.read_all(11, 3),
    ]
    assert [[e.position for e in page] for page in pages] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10], []]


def test_conflict_raises_and_writes_nothing(store: EventStore) -> None:
    store.append("s", events(1), 0)
    with pytest.raises(ConcurrencyError, match="at version 1, not the expected 0"):
        store.append("s", events(2, 3), expected_version=0)
    with pytest.raises(ConcurrencyError):
        store.append("s", events(2, 3), expected_version=2)
    with pytest.raises(ConcurrencyError):
        store.append("new", events(2), expected_version=1)
    assert [e.data["n"] for e in store.read("s")] == [1]
    assert store.last_position() == 1
    assert store.stream_version("new") == 0


def test_empty_append_only_checks_the_version(store: EventStore) -> None:
    assert store.append("s", [], 0) == 0
    store.append("s", events(1), 0)
    assert store.append("s", [], 1) == 1
    with pytest.raises(ConcurrencyError):
        store.append("s", [], 0)
    assert store.last_position() == 1


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


def test_wait_wakes_on_an_append_and_times_out_otherwise(store: EventStore) -> None:
    assert store.wait(0, timeout=0.01) is False
    started = threading.Event()

    def append_later() -> None:
        started.wait()
        store.append("s", events(1), 0)

    thread = threading.Thread(target=append_later)
    thread.start()
    started.set()
    assert store.wait(0, timeout=10) is True
    thread.join()
    assert store.wait(1, timeout=0.01) is False


def test_cursors_are_kept(store: EventStore) -> None:
    assert store.recorder.cursor("relay") == 0
    store.recorder.save_cursor("relay", 7)
    assert store.recorder.cursor("relay") == 7


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


# --- invariants, against a model ------------------------------------------------------------------

appends = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), st.integers(-1, 1)),
    max_size=25,
)


def check_against_model(store: EventStore, operations: list[tuple[str, int, int]]) -> None:
    model: dict[str, list[int]] = {}
    log: list[tuple[str, int]] = []
    for stream, count, skew in operations:
        current = len(model.get(stream, []))
        expected = max(current + skew, 0)
        numbers = list(range(len(log), len(log) + count))
        if expected != current:
            with pytest.raises(ConcurrencyError):
                store.append(stream, events(*numbers), expected)
            continue
        assert store.append(stream, events(*numbers), expected) == current + count
        model.setdefault(stream, []).extend(numbers)
        log.extend((stream, n) for n in numbers)

    everything = store.read_all(1, 10_000)
    assert [e.position for e in everything] == list(range(1, len(log) + 1))
    assert [(e.stream_id, e.data["n"]) for e in everything] == log
    for stream, numbers in model.items():
        stored: list[StoredEvent] = store.read(stream)
        assert [e.version for e in stored] == list(range(1, len(numbers) + 1))
        assert [e.data["n"] for e in stored] == numbers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=appends)
def test_versions_and_positions_follow_the_model_in_memory(operations: list[tuple[str, int, int]]) -> None:
    with EventStore("memory://") as store:
        check_against_model(store, operations)


@settings(max_examples=25, deadline=None)
@given(operations=appends)
def test_versions_and_positions_follow_the_model_in_sqlite(operations: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as directory, EventStore(f"sqlite:///{directory}/s.db") as store:
        check_against_model(store, operations)


def test_a_snapshot_is_written_with_the_append(store: EventStore) -> None:
    store.append("s", events(1, 2), 0, snapshot=NewSnapshot("Counter", {"total": 3}, schema_version=2))
    snapshot = store.load_snapshot("s")
    assert snapshot is not None
    assert (snapshot.version, snapshot.type, snapshot.schema_version, snapshot.data) == (2, "Counter", 2, {"total": 3})
    with pytest.raises(ConcurrencyError):
        store.append("s", events(3), 0, snapshot=NewSnapshot("Counter", {"total": 6}))
    assert store.load_snapshot("s") == snapshot
    assert store.load_snapshot("t") is None


def test_big_batches_are_written_whole(store: EventStore) -> None:
    assert store.append("s", events(*range(250)), 0) == 250
    assert [e.data["n"] for e in store.read("s")] == list(range(250))
    assert [e.position for e in store.read_all(1, 1000)] == list(range(1, 251))
