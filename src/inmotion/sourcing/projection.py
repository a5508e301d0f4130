"""Projections: CQRS read models in SQL tables, built from events with exactly-once effects.

    class Balances(Projection):
        name = "balances"
        tables = {"balances": "CREATE TABLE {balances} (account TEXT PRIMARY KEY, balance INTEGER)"}

        @handles(Deposited)
        def _deposited(self, tx: Transaction, event: Deposited) -> None:
            tx.execute(
                "INSERT INTO {balances} VALUES (?, ?) ON CONFLICT (account)"
                " DO UPDATE SET balance = balance + excluded.balance",
                (tx.stored.stream_id, event.amount),
            )

    projector = Projector(Balances(), store, "read.db")
    projector.run(stop)         # catch up, then follow new events until `stop` is set

A projector reads events in order from a source (the event store's global order, or the
partitions of a log topic), applies a batch in one transaction of the read model's database
(a `ReadModel` that a backend supplies: SQLite, `sqlite:///read.db` or a plain path) and saves
its position in that same transaction: after a crash it resumes exactly where its last committed batch
ended, so each event's effects happen once. `{name}` in SQL names a projection table.

Tables live in generations: the data of `balances` sits in `balances__g1`, and a view
`balances` points at the active generation. `rebuild()` fills a fresh generation from the first
event while the old one keeps serving readers, then switches the views over in one transaction
(blue/green). `lag()` tells how many events the read model is behind its source.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.log import Log, Record
from inmotion.log.registry import backend_for
from inmotion.sourcing.aggregate import marked_methods, marker
from inmotion.sourcing.store import ALL_EVENTS, EventStore, StoredEvent, check_type_prefix, encode_json
from inmotion.sourcing.versioning import EventTypes, event_type_name

F = TypeVar("F", bound=Callable[..., Any])

_HANDLES = "__inmotion_handles__"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def handles(*event_classes: type) -> Callable[[F], F]:
    """Mark a projection method `(self, tx, event)` as the handler of these event classes."""
    return marker(_HANDLES, "@handles", event_classes)


class Transaction:
    """What a handler writes through: the read model's open transaction, with `{table}` names
    resolved to the generation being written, and `stored`, the event being applied."""

    def __init__(self, conn: Any, tables: Mapping[str, str]) -> None:
        self.connection = conn
        self._tables = tables
        self._sql: dict[str, str] = {}
        self.stored: StoredEvent

    def sql(self, statement: str) -> str:
        """`statement` with each `{table}` replaced by its physical name (`{{` for a literal brace)."""
        resolved = self._sql.get(statement)
        if resolved is None:
            try:
                resolved = self._sql[statement] = statement.format_map(self._tables)
            except KeyError as exc:
                raise InvalidConfig(f"unknown projection table {exc} in {statement!r}") from exc
        return resolved

    def execute(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        return self.connection.execute(self.sql(statement), parameters)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Any:
        return self.connection.executemany(self.sql(statement), rows)


class Projection:
    """A read model: `name`, the DDL of its `tables` (with `{table}` placeholders) and handlers."""

    name: ClassVar[str]
    tables: ClassVar[Mapping[str, str]] = {}
    _handlers: ClassVar[dict[str, Callable[[Any, Transaction, Any], None]]] = {}
    _event_types: ClassVar[EventTypes] = EventTypes()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = marked_methods(cls, _HANDLES)
        cls._event_types = EventTypes(handlers)
        cls._handlers = {event_type_name(event_class): method for event_class, method in handlers.items()}
        for table in cls.tables:
            if not _IDENTIFIER.fullmatch(table) or table.startswith("es_"):
                raise InvalidConfig(f"{cls.__qualname__}: invalid table name {table!r}")

    def apply(self, tx: Transaction, stored: StoredEvent) -> None:
        """Apply one event: decode it (upcasting old versions) and call its handler, if any."""
        handler = self._handlers.get(stored.type)
        if handler is not None:
            tx.stored = stored
            handler(self, tx, self._event_types.decode(stored))


# --- sources ---------------------------------------------------------------------------------------
Batch = list[tuple[int, int, StoredEvent]]
"""(partition, the partition's next position after the event, the event)"""


class Source(abc.ABC):
    """Where a projector reads events: partitions, each with a next position to read."""

    name: str
    """What the read model keeps positions in this source against: a topic's name, or the
    store's `ALL_EVENTS` (so that deleting a topic clears the positions of projections of it)."""
    dedupe = False
    """Whether the same event may come twice (at-least-once delivery), so that events with a
    stream version at or below the last applied one are skipped."""

    @abc.abstractmethod
    def start(self) -> dict[int, int]:
        """The partitions' positions before the first event."""

    @abc.abstractmethod
    def read(self, positions: Mapping[int, int], limit: int) -> Batch: ...

    @abc.abstractmethod
    def wait(self, positions: Mapping[int, int], timeout: float) -> bool: ...

    @abc.abstractmethod
    def heads(self) -> dict[int, int]:
        """Each partition's position after the newest event."""


class StoreSource(Source):
    """The event store in global order: one partition (0), the next position."""

    name = ALL_EVENTS

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def start(self) -> dict[int, int]:
        return {0: 1}

    def read(self, positions: Mapping[int, int], limit: int) -> Batch:
        return [(0, event.position + 1, event) for event in self.store.read_all(positions[0], limit)]

    def wait(self, positions: Mapping[int, int], timeout: float) -> bool:
        return self.store.wait(positions[0] - 1, timeout)

    def heads(self) -> dict[int, int]:
        return {0: self.store.last_position() + 1}


class TopicSource(Source):
    """A log topic (any `Log` backend): its partitions, each at the next offset. Events that the
    outbox relay published twice are applied once (see `dedupe`). `type_prefix`: the relay's, taken
    off the events' types so that they meet the projection's handlers by class name."""

    dedupe = True

    def __init__(self, log: Log, topic: str, *, type_prefix: str = "") -> None:
        check_type_prefix(type_prefix)
        self.log = log
        self.topic = self.name = topic
        self.type_prefix = type_prefix

    def start(self) -> dict[int, int]:
        partitions = self.log.partition_count(self.topic)
        return {p: self.log.earliest_offset(self.topic, p) for p in range(partitions)}

    def read(self, positions: Mapping[int, int], limit: int) -> Batch:
        batch: Batch = []
        for partition, offset in self._every_partition(positions).items():
            for record in self.log.read(self.topic, partition, offset, limit - len(batch)):
                batch.append((partition, record.offset + 1, self._stored(record)))
            if len(batch) >= limit:
                break
        return batch

    def _stored(self, record: Record) -> StoredEvent:
        where = f"topic {self.topic!r} partition {record.partition} offset {record.offset}"
        try:
            event = record.event()
            version = event.extensions.get("streamversion", 0)
            schema_version = event.extensions.get("schemaversion", 1)
            return StoredEvent(
                event.subject or event.key or "",
                int(str(version)),
                record.offset,
                event.type.removeprefix(self.type_prefix),
                int(str(schema_version)),
                event.id,
                record.timestamp,
                encode_json(event.data),
            )
        except (InvalidEvent, ValueError, TypeError) as exc:
            raise InvalidEvent("data", f"{where} is not a readable CloudEvent: {exc}") from exc

    def wait(self, positions: Mapping[int, int], timeout: float) -> bool:
        return self.log.wait(self.topic, self._every_partition(positions), timeout)

    def _every_partition(self, positions: Mapping[int, int]) -> dict[int, int]:
        """`positions`, and the earliest offset of a partition without one: deleting a topic
        clears every position in it, and a projection of it starts again when it is created again."""
        return {
            p: positions[p] if p in positions else self.log.earliest_offset(self.topic, p)
            for p in range(self.log.partition_count(self.topic))
        }

    def heads(self) -> dict[int, int]:
        partitions = self.log.partition_count(self.topic)
        return {p: self.log.latest_offset(self.topic, p) for p in range(partitions)}


# --- the read model ----------------------------------------------------------------------------------
class ReadModel(abc.ABC):
    """Where a projection's tables live, with the projector's positions beside them: the
    storage side of a `Projector`, supplied by a backend (`open_read_model`).

    Tables live in generations, one active (behind views named as the projection's tables) and
    at most one being rebuilt; each generation has its own positions per source partition
    (kept against the source's `name`, with the backend's other positions) and, for sources
    that may repeat events, the last applied version of each stream.
    """

    @abc.abstractmethod
    def positions(self, *, building: bool) -> tuple[int, dict[int, int]]:
        """The active (or the rebuilding) generation and its next position per partition.
        InvalidConfig when the active tables' DDL changed since they were built (rebuild them),
        or when another rebuild took this one over."""

    @abc.abstractmethod
    def apply(
        self,
        *,
        building: bool,
        generation: int,
        positions: dict[int, int],
        batch: Batch,
        dedupe: bool,
        apply: Callable[[Transaction, StoredEvent], None],
    ) -> bool:
        """In one transaction: apply a batch read from `positions` of `generation` (skipping,
        with `dedupe`, events whose stream version is at or below the last applied one) and
        save the new positions; False, with nothing written, when another projector moved the
        generation or its positions meanwhile (read again)."""

    @abc.abstractmethod
    def start_building(self, start: Mapping[int, int]) -> None:
        """Create a fresh generation to rebuild into, positioned at `start` (dropping an
        abandoned rebuild's tables)."""

    @abc.abstractmethod
    def switch(self) -> None:
        """Make the rebuilt generation the active one and drop the old one, in one transaction."""

    @abc.abstractmethod
    def query(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


def open_read_model(
    location: str | os.PathLike[str], name: str, tables: Mapping[str, str], source: Source, timeout: float
) -> ReadModel:
    """The read model at `location`: a backend URL (`sqlite:///read.db`) or a file path (SQLite),
    of the projection `name` of `source`."""
    text = os.fspath(location)
    url = text if "://" in text else f"sqlite:///{text}"
    backend, parts, options = backend_for(url)
    opener = getattr(backend, "open_read_model", None)
    if opener is None:
        raise InvalidConfig(f"read models cannot live on {parts.scheme}://: use sqlite:///path/to/read.db")
    ddl_hash = hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()[:16]
    read_model: ReadModel = opener(
        url,
        parts,
        options,
        name=name,
        tables=tables,
        ddl_hash=ddl_hash,
        source=source.name,
        start=source.start(),
        timeout=timeout,
    )
    return read_model


# --- the projector -----------------------------------------------------------------------------------
class Projector:
    """Keeps one projection's read model up to date with a source."""

    def __init__(
        self,
        projection: Projection,
        source: Source | EventStore,
        read_model: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(getattr(projection, "name", None), str) or not _IDENTIFIER.fullmatch(projection.name):
            raise InvalidConfig(f"{type(projection).__qualname__}.name must be an identifier")
        if batch_size < 1:
            raise InvalidConfig(f"batch_size must be positive, got {batch_size}")
        self.projection = projection
        self.source = StoreSource(source) if isinstance(source, EventStore) else source
        if not isinstance(getattr(self.source, "name", None), str):
            raise InvalidConfig(
                f"{type(self.source).__qualname__}.name must say what its positions are kept against (a topic's name)"
            )
        self.batch_size = batch_size
        self._lock = threading.RLock()
        self.read_model = open_read_model(read_model, projection.name, projection.tables, self.source, timeout)

    # --- running ------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Apply every event the source has now (catch-up); how many events were read."""
        return self._catch_up(building=False)

    def run(self, stop: threading.Event, *, poll: float = 0.1) -> None:
        """Catch up, then follow new events until `stop` is set (checked every `poll` seconds)."""
        while not stop.is_set():
            if self.run_once() == 0:
                self.source.wait(self.positions(), poll)

    def rebuild(self) -> None:
        """Rebuild the read model from the first event into fresh tables, then switch readers to
        them in one transaction (blue/green); the old tables serve readers until then."""
        with self._lock:
            self.read_model.start_building(self.source.start())
        self._catch_up(building=True)
        with self._lock:
            self.read_model.switch()

    # --- observing --------------------------------------------------------------------------------
    def positions(self) -> dict[int, int]:
        """The active read model's next position to read, per source partition (the event
        store's global order is partition 0)."""
        with self._lock:
            return self.read_model.positions(building=False)[1]

    def lag(self) -> int:
        """How many events the active read model is behind its source."""
        heads = self.source.heads()
        positions = self.positions()
        return sum(max(head - positions.get(partition, 0), 0) for partition, head in heads.items())

    def query(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Rows of a query on the read model (its views name the active tables)."""
        with self._lock:
            return self.read_model.query(statement, parameters)

    def close(self) -> None:
        with self._lock:
            self.read_model.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    def _catch_up(self, *, building: bool) -> int:
        total = 0
        while True:
            with self._lock:
                generation, positions = self.read_model.positions(building=building)
            batch = self.source.read(positions, self.batch_size)
            if not batch:
                return total
            with self._lock:
                applied = self.read_model.apply(
                    building=building,
                    generation=generation,
                    positions=positions,
                    batch=batch,
                    dedupe=self.source.dedupe,
                    apply=self.projection.apply,
                )
            if applied:
                total += len(batch)
