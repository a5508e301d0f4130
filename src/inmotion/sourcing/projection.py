"""Projections: CQRS read models in SQLite, built from events with exactly-once effects.

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
partitions of a log topic), applies a batch in one SQLite transaction and saves its position
in that same transaction: after a crash it resumes exactly where its last committed batch
ended, so each event's effects happen once. `{name}` in SQL names a projection table.

Tables live in generations: the data of `balances` sits in `balances__g1`, and a view
`balances` points at the active generation. `rebuild()` fills a fresh generation from the first
event while the old one keeps serving readers, then switches the views over in one transaction
(blue/green). `lag()` tells how many events the read model is behind its source.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.log import Log, Record
from inmotion.log.sqlite.file import database_path, immediate, translate_errors
from inmotion.log.sqlite.store import connect, create_tables
from inmotion.sourcing.aggregate import marked_methods, marker
from inmotion.sourcing.store import EventStore, StoredEvent, encode_json
from inmotion.sourcing.versioning import EventTypes, event_type_name

F = TypeVar("F", bound=Callable[..., Any])

_HANDLES = "__inmotion_handles__"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS es_projections (
    name TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    building INTEGER,
    ddl_hash TEXT NOT NULL,
    tables TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS es_projection_positions (
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    cursor TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (name, generation, cursor)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS es_projection_streams (
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, generation, stream_id)
) WITHOUT ROWID;
"""


def handles(*event_classes: type) -> Callable[[F], F]:
    """Mark a projection method `(self, tx, event)` as the handler of these event classes."""
    return marker(_HANDLES, "@handles", event_classes)


class Transaction:
    """What a handler writes through: the read model's open transaction, with `{table}` names
    resolved to the generation being written, and `stored`, the event being applied."""

    def __init__(self, conn: sqlite3.Connection, tables: Mapping[str, str]) -> None:
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

    def execute(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        return self.connection.execute(self.sql(statement), parameters)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> sqlite3.Cursor:
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
Batch = list[tuple[str, int, StoredEvent]]
"""(cursor, the cursor's next position after the event, the event)"""


class Source(abc.ABC):
    """Where a projector reads events: named cursors, each with a next position to read."""

    dedupe = False
    """Whether the same event may come twice (at-least-once delivery), so that events with a
    stream version at or below the last applied one are skipped."""

    @abc.abstractmethod
    def start(self) -> dict[str, int]:
        """The cursors' positions before the first event."""

    @abc.abstractmethod
    def read(self, positions: Mapping[str, int], limit: int) -> Batch: ...

    @abc.abstractmethod
    def wait(self, positions: Mapping[str, int], timeout: float) -> bool: ...

    @abc.abstractmethod
    def heads(self) -> dict[str, int]:
        """Each cursor's position after the newest event."""


class StoreSource(Source):
    """The event store in global order: one cursor, the next position."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def start(self) -> dict[str, int]:
        return {"store": 1}

    def read(self, positions: Mapping[str, int], limit: int) -> Batch:
        return [("store", event.position + 1, event) for event in self.store.read_all(positions["store"], limit)]

    def wait(self, positions: Mapping[str, int], timeout: float) -> bool:
        return self.store.wait(positions["store"] - 1, timeout)

    def heads(self) -> dict[str, int]:
        return {"store": self.store.last_position() + 1}


class TopicSource(Source):
    """A log topic (any `Log` backend): one cursor per partition, the next offset. Events that the
    outbox relay published twice are applied once (see `dedupe`)."""

    dedupe = True

    def __init__(self, log: Log, topic: str) -> None:
        self.log = log
        self.topic = topic

    def start(self) -> dict[str, int]:
        partitions = self.log.partition_count(self.topic)
        return {str(p): self.log.earliest_offset(self.topic, p) for p in range(partitions)}

    def read(self, positions: Mapping[str, int], limit: int) -> Batch:
        batch: Batch = []
        for cursor, offset in positions.items():
            for record in self.log.read(self.topic, int(cursor), offset, limit - len(batch)):
                batch.append((cursor, record.offset + 1, self._stored(record)))
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
                event.type,
                int(str(schema_version)),
                event.id,
                record.timestamp,
                encode_json(event.data),
            )
        except (InvalidEvent, ValueError, TypeError) as exc:
            raise InvalidEvent("data", f"{where} is not a readable CloudEvent: {exc}") from exc

    def wait(self, positions: Mapping[str, int], timeout: float) -> bool:
        return self.log.wait(self.topic, {int(c): offset for c, offset in positions.items()}, timeout)

    def heads(self) -> dict[str, int]:
        partitions = self.log.partition_count(self.topic)
        return {str(p): self.log.latest_offset(self.topic, p) for p in range(partitions)}


# --- the projector -----------------------------------------------------------------------------------
class Projector:
    """Keeps one projection's read model (a SQLite file) up to date with a source."""

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
        path = str(read_model)
        self.path = database_path(path, path[len("sqlite://") :]) if path.startswith("sqlite://") else Path(path)
        self.batch_size = batch_size
        self.timeout = timeout
        self._name = projection.name
        self._ddl_hash = hashlib.sha256(repr(sorted(projection.tables.items())).encode()).hexdigest()[:16]
        self._lock = threading.RLock()
        self._conn = connect(self.path, timeout)
        try:
            create_tables(self._conn, _SCHEMA, "projection_schema", SCHEMA_VERSION, self.path)
            self._transaction(self._first_generation)
        except BaseException:
            self._conn.close()
            raise

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
        self._transaction(self._start_building)
        self._catch_up(building=True)
        self._transaction(self._switch)

    # --- observing --------------------------------------------------------------------------------
    def positions(self) -> dict[str, int]:
        """The active read model's next position to read, per source cursor."""
        with self._lock, translate_errors(self.path, "read", self.timeout):
            active = self._generation(self._conn, building=False)
            return self._positions(self._conn, active)

    def lag(self) -> int:
        """How many events the active read model is behind its source."""
        heads = self.source.heads()
        positions = self.positions()
        return sum(max(head - positions.get(cursor, 0), 0) for cursor, head in heads.items())

    def query(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Rows of a query on the read model (its views name the active tables)."""
        with self._lock, translate_errors(self.path, "read", self.timeout):
            return self._conn.execute(statement, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------------
    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock, translate_errors(self.path, "write to", self.timeout):
            return immediate(self._conn, work)

    def _catch_up(self, *, building: bool) -> int:
        total = 0
        while True:
            with self._lock, translate_errors(self.path, "read", self.timeout):
                generation = self._generation(self._conn, building=building)
                positions = self._positions(self._conn, generation)
            batch = self.source.read(positions, self.batch_size)
            if not batch:
                return total
            if self._transaction(
                functools.partial(
                    self._apply, building=building, generation=generation, positions=positions, batch=batch
                )
            ):
                total += len(batch)

    def _apply(
        self,
        conn: sqlite3.Connection,
        *,
        building: bool,
        generation: int,
        positions: dict[str, int],
        batch: Batch,
    ) -> bool:
        """Apply a batch read from `positions` of `generation`, unless another projector moved
        either on meanwhile (then the caller reads again); save the new positions."""
        if self._generation(conn, building=building) != generation or self._positions(conn, generation) != positions:
            return False
        tx = Transaction(conn, self._physical_tables(generation))
        last_versions: dict[str, int] = {}
        for cursor, next_position, stored in batch:
            positions[cursor] = next_position
            if self.source.dedupe and stored.version > 0:
                last = last_versions.get(stored.stream_id)
                if last is None:
                    row = conn.execute(
                        "SELECT version FROM es_projection_streams WHERE name = ? AND generation = ? AND stream_id = ?",
                        (self._name, generation, stored.stream_id),
                    ).fetchone()
                    last = 0 if row is None else row[0]
                if stored.version <= last:
                    continue
                last_versions[stored.stream_id] = stored.version
            self.projection.apply(tx, stored)
        conn.executemany(
            "INSERT OR REPLACE INTO es_projection_streams (name, generation, stream_id, version) VALUES (?, ?, ?, ?)",
            [(self._name, generation, stream, version) for stream, version in last_versions.items()],
        )
        conn.executemany(
            "UPDATE es_projection_positions SET position = ? WHERE name = ? AND generation = ? AND cursor = ?",
            [(position, self._name, generation, cursor) for cursor, position in positions.items()],
        )
        return True

    def _generation(self, conn: sqlite3.Connection, *, building: bool) -> int:
        row = conn.execute("SELECT active, building, ddl_hash FROM es_projections WHERE name = ?", (self._name,))
        active, rebuilding, ddl_hash = row.fetchone()
        if building:
            if rebuilding is None:
                raise InvalidConfig(f"the rebuild of projection {self._name!r} was taken over by another rebuild")
            return int(rebuilding)
        if ddl_hash != self._ddl_hash:
            raise InvalidConfig(
                f"the tables of projection {self._name!r} changed since its read model was built: call rebuild()"
            )
        return int(active)

    def _positions(self, conn: sqlite3.Connection, generation: int) -> dict[str, int]:
        rows = conn.execute(
            "SELECT cursor, position FROM es_projection_positions WHERE name = ? AND generation = ?",
            (self._name, generation),
        ).fetchall()
        return dict(rows)

    def _physical_tables(self, generation: int) -> dict[str, str]:
        return {table: f"{table}__g{generation}" for table in self.projection.tables}

    def _create_generation(self, conn: sqlite3.Connection, generation: int) -> None:
        tx = Transaction(conn, self._physical_tables(generation))
        for ddl in self.projection.tables.values():
            for statement in ddl.split(";"):
                if statement.strip():
                    tx.execute(statement)
        conn.executemany(
            "INSERT INTO es_projection_positions (name, generation, cursor, position) VALUES (?, ?, ?, ?)",
            [(self._name, generation, cursor, position) for cursor, position in self.source.start().items()],
        )

    def _drop_generation(self, conn: sqlite3.Connection, generation: int) -> None:
        for physical in self._physical_tables(generation).values():
            conn.execute(f"DROP TABLE IF EXISTS {physical}")
        for table in ("es_projection_positions", "es_projection_streams"):
            conn.execute(f"DELETE FROM {table} WHERE name = ? AND generation = ?", (self._name, generation))

    def _point_views(self, conn: sqlite3.Connection, generation: int) -> None:
        for table, physical in self._physical_tables(generation).items():
            conn.execute(f"DROP VIEW IF EXISTS {table}")
            conn.execute(f"CREATE VIEW {table} AS SELECT * FROM {physical}")

    def _first_generation(self, conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT 1 FROM es_projections WHERE name = ?", (self._name,)).fetchone():
            return
        self._create_generation(conn, 1)
        self._point_views(conn, 1)
        conn.execute(
            "INSERT INTO es_projections (name, active, building, ddl_hash, tables) VALUES (?, 1, NULL, ?, ?)",
            (self._name, self._ddl_hash, json.dumps(list(self.projection.tables))),
        )

    def _start_building(self, conn: sqlite3.Connection) -> None:
        active, building = conn.execute(
            "SELECT active, building FROM es_projections WHERE name = ?", (self._name,)
        ).fetchone()
        if building is not None:  # an abandoned rebuild: its tables may hold anything
            self._drop_generation(conn, building)
        new = max(active, building or 0) + 1
        self._create_generation(conn, new)
        conn.execute("UPDATE es_projections SET building = ? WHERE name = ?", (new, self._name))

    def _switch(self, conn: sqlite3.Connection) -> None:
        new = self._generation(conn, building=True)
        active, tables = conn.execute(
            "SELECT active, tables FROM es_projections WHERE name = ?", (self._name,)
        ).fetchone()
        old_tables = json.loads(tables)
        for table in old_tables:
            conn.execute(f"DROP VIEW IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {table}__g{active}")
        self._point_views(conn, new)
        conn.execute(
            "UPDATE es_projections SET active = ?, building = NULL, ddl_hash = ?, tables = ? WHERE name = ?",
            (new, self._ddl_hash, json.dumps(list(self.projection.tables)), self._name),
        )
        self._drop_generation(conn, active)
