"""Schema versions and upcasting: events stored by old code are read by new code."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest

from inmotion.errors import InvalidConfig
from inmotion.sourcing import (
    Aggregate,
    EventStore,
    EventTypes,
    NewEvent,
    Repository,
    UnreadableEvent,
    applies,
)


# --- version 1 of the code ------------------------------------------------------------------------
@dataclasses.dataclass
class RenamedV1:
    __event_type__ = "Renamed"
    name: str


class PersonV1(Aggregate):
    __aggregate_type__ = "Person"
    name: str = ""

    @applies(RenamedV1)
    def _renamed(self, event: RenamedV1) -> None:
        self.name = event.name


# --- version 3 of the code: the name was split (v2), then who changed it was added (v3) -----------
class Renamed(pydantic.BaseModel):
    __event_type__: ClassVar[str] = "Renamed"
    __schema_version__: ClassVar[int] = 3
    first: str
    last: str
    changed_by: str

    @staticmethod
    def upcast_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first": first, "last": last}

    @staticmethod
    def upcast_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "changed_by": "unknown"}


class Person(Aggregate):
    __aggregate_type__ = "Person"
    __snapshot_version__ = 2
    first: str = ""
    last: str = ""
    history: list[str]

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.history = []

    def rename(self, first: str, last: str, by: str) -> None:
        self.emit(Renamed(first=first, last=last, changed_by=by))

    @applies(Renamed)
    def _renamed(self, event: Renamed) -> None:
        self.first, self.last = event.first, event.last
        self.history.append(event.changed_by)

    @staticmethod
    def upcast_snapshot_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first": first, "last": last, "history": ["snapshot"]}


def test_v1_events_are_read_as_v3(store: EventStore) -> None:
    old = PersonV1("p")
    old.emit(RenamedV1("Ada Lovelace"))
    old.emit(RenamedV1("Ada King"))
    Repository(store, PersonV1).save(old)
    assert [(e.type, e.schema_version) for e in store.read("p")] == [("Renamed", 1), ("Renamed", 1)]

    person = Repository(store, Person).get("p")
    assert (person.first, person.last, person.history) == ("Ada", "King", ["unknown", "unknown"])
    person.rename("Augusta", "King", by="ada")
    Repository(store, Person).save(person)
    assert [e.schema_version for e in store.read("p")] == [1, 1, 3]
    assert Repository(store, Person).get("p").history == ["unknown", "unknown", "ada"]


def test_v1_snapshots_are_upcast_too(store: EventStore) -> None:
    old = PersonV1("p")
    old.emit(RenamedV1("Ada Lovelace"))
    Repository(store, PersonV1, snapshot_every=1).save(old)
    snapshot = store.load_snapshot("p")
    assert snapshot is not None
    assert (snapshot.type, snapshot.schema_version, snapshot.data) == ("Person", 1, {"name": "Ada Lovelace"})
    store.append("p", [NewEvent("Renamed", {"name": "Ada King"})], 1)

    person = Repository(store, Person, snapshot_every=1).get("p")
    assert (person.first, person.last, person.history) == ("Ada", "King", ["snapshot", "unknown"])


def test_a_snapshot_that_cannot_be_upcast_falls_back_to_the_events(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Person2(Aggregate):  # snapshot version 2 but no upcaster from 1
        __aggregate_type__ = "Person"
        __snapshot_version__ = 2
        name: str = ""

        @applies(RenamedV1)
        def _renamed(self, event: RenamedV1) -> None:
            self.name = event.name

    old = PersonV1("p")
    old.emit(RenamedV1("Ada Lovelace"))
    old.emit(RenamedV1("Ada King"))
    Repository(store, PersonV1, snapshot_every=2).save(old)
    assert Repository(store, Person2, snapshot_every=2).get("p").name == "Ada King"
    assert "ignoring the snapshot of 'p' at version 2" in caplog.text


def test_a_missing_upcaster_names_stream_and_version(store: EventStore) -> None:
    class Renamed4(pydantic.BaseModel):
        __event_type__: ClassVar[str] = "Renamed"
        __schema_version__: ClassVar[int] = 2
        first: str

    class Person4(Aggregate):
        @applies(Renamed4)
        def _renamed(self, event: Renamed4) -> None:
            pass

    store.append("p", [NewEvent("Renamed", {"name": "Ada"})], 0)
    with pytest.raises(
        UnreadableEvent,
        match=r"event 1 of stream 'p': 'Renamed': no upcaster from schema version 1 to 2: define upcast_v1_v2",
    ):
        Repository(store, Person4).get("p")


def test_an_event_newer_than_the_code_is_refused(store: EventStore) -> None:
    store.append("p", [NewEvent("Renamed", {"name": "Ada"}, schema_version=5)], 0)
    with pytest.raises(UnreadableEvent, match=r"event 1 of stream 'p'.*schema version 5, newer than"):
        Repository(store, PersonV1).get("p")


def test_an_unknown_event_type_names_stream_and_version(store: EventStore) -> None:
    store.append("p", [NewEvent("Renamed", {"name": "Ada"}), NewEvent("Married", {"to": "William"})], 0)
    with pytest.raises(UnreadableEvent, match=r"event 2 of stream 'p': unknown event type 'Married'"):
        Repository(store, PersonV1).get("p")


def test_a_payload_that_does_not_fit_names_stream_and_version(store: EventStore) -> None:
    store.append("p", [NewEvent("Renamed", {"name": 42})], 0)
    with pytest.raises(UnreadableEvent, match=r"event 1 of stream 'p': 'Renamed'.*Expected `str`"):
        Repository(store, PersonV1).get("p")
    store.append("q", [NewEvent("Renamed", {"first": "A"}, schema_version=3)], 0)
    with pytest.raises(UnreadableEvent, match=r"(?s)event 1 of stream 'q': 'Renamed'.*last"):
        Repository(store, Person).get("q")


def test_an_upcaster_that_fails_names_stream_and_version(store: EventStore) -> None:
    store.append("p", [NewEvent("Renamed", {"nom": "Ada"})], 0)
    with pytest.raises(UnreadableEvent, match=r"event 1 of stream 'p'.*upcast_v1_v2 failed: KeyError\('name'\)"):
        Repository(store, Person).get("p")


@pytest.mark.parametrize("cls", [PersonV1, Person])
def test_a_corrupt_payload_names_stream_and_version(sqlite_url: str, directory: Path, cls: type[Aggregate]) -> None:
    with EventStore(sqlite_url) as store:
        store.append("p", [NewEvent("Renamed", {"name": "Ada"}, schema_version=1)], 0)
        with sqlite3.connect(directory / "store.db") as conn:
            conn.execute("UPDATE es_events SET payload = x'00ff'")
        conn.close()
        with pytest.raises(UnreadableEvent, match=r"event 1 of stream 'p'"):
            Repository(store, cls).get("p")


def test_event_types_refuse_bad_classes() -> None:
    class NotAnEvent:
        pass

    @dataclasses.dataclass
    class AlsoRenamed:
        __event_type__ = "Renamed"

    with pytest.raises(InvalidConfig, match="not an event class"):
        EventTypes([NotAnEvent])
    with pytest.raises(InvalidConfig, match="two event classes are stored as 'Renamed'"):
        EventTypes([RenamedV1, AlsoRenamed])
    with pytest.raises(InvalidConfig, match="not a known event class"):
        EventTypes([RenamedV1]).encode([Renamed(first="a", last="b", changed_by="c")])
