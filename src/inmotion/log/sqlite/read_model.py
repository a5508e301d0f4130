"""A projection's read model in a SQLite file: its tables in generations behind views, and the
projector's positions (in the file's positions table, kind 'projection', one tracker per
generation) and stream versions beside them, written in the same transaction as the handlers'
writes (so each event's effects happen once)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from inmotion.errors import InvalidConfig
from inmotion.log.sqlite import positions as tracking
from inmotion.log.sqlite.file import immediate, translate_errors
from inmotion.log.sqlite.store import connect, create_tables
from inmotion.sourcing.projection import Batch, ReadModel, Transaction
from inmotion.sourcing.store import StoredEvent

_logger = logging.getLogger("inmotion.log.sqlite")

SCHEMA_VERSION = 2
# Schema 1 kept positions in es_projection_positions by cursor name ('store', or a partition
# number as text) without the topic: a projection's rows move to the positions table when it is
# next opened, knowing its source, and the table goes with the last of them. Schema 2 stops an
# older inmotion, which would find no positions, from opening the file.
_OLD_POSITIONS = "es_projection_positions"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS es_projections (
    name TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    building INTEGER,
    ddl_hash TEXT NOT NULL,
    tables TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS es_projection_streams (
    name TEXT NOT NULL,
    generation INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, generation, stream_id)
) WITHOUT ROWID;
"""


class SqliteReadModel(ReadModel):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        tables: Mapping[str, str],
        ddl_hash: str,
        source: str,
        start: Mapping[int, int],
        timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.tables = dict(tables)
        self._name = name
        self._ddl_hash = ddl_hash
        self._source = source
        self._lock = threading.RLock()
        self._conn = connect(self.path, timeout)
        try:
            create_tables(self._conn, _SCHEMA, "projection_schema", SCHEMA_VERSION, self.path)
            self._transaction(functools.partial(self._open, start=start))
        except BaseException:
            self._conn.close()
            raise

    def positions(self, *, building: bool) -> tuple[int, dict[int, int]]:
        with self._lock, translate_errors(self.path, "read", self.timeout):
            generation = self._generation(self._conn, building=building)
            return generation, self._positions(self._conn, generation)

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
        return bool(
            self._transaction(
                functools.partial(
                    self._apply,
                    building=building,
                    generation=generation,
                    positions=positions,
                    batch=batch,
                    dedupe=dedupe,
                    apply=apply,
                )
            )
        )

    def start_building(self, start: Mapping[int, int]) -> None:
        self._transaction(functools.partial(self._start_building, start=start))

    def switch(self) -> None:
        self._transaction(self._switch)

    def query(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._lock, translate_errors(self.path, "read", self.timeout):
            return self._conn.execute(statement, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- internals --------------------------------------------------------------------------------
    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock, translate_errors(self.path, "write to", self.timeout):
            return immediate(self._conn, work)

    def _apply(
        self,
        conn: sqlite3.Connection,
        *,
        building: bool,
        generation: int,
        positions: dict[int, int],
        batch: Batch,
        dedupe: bool,
        apply: Callable[[Transaction, StoredEvent], None],
    ) -> bool:
        """Apply a batch read from `positions` of `generation`, unless another projector moved
        either on meanwhile (then the caller reads again); save the new positions."""
        if self._generation(conn, building=building) != generation or self._positions(conn, generation) != positions:
            return False
        tx = Transaction(conn, self._physical_tables(generation))
        last_versions: dict[str, int] = {}
        for partition, next_position, stored in batch:
            positions[partition] = next_position
            if dedupe and stored.version > 0:
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
            apply(tx, stored)
        conn.executemany(
            "INSERT OR REPLACE INTO es_projection_streams (name, generation, stream_id, version) VALUES (?, ?, ?, ?)",
            [(self._name, generation, stream, version) for stream, version in last_versions.items()],
        )
        tracking.save(conn, "projection", self._tracker(generation), self._source, positions)
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

    def _positions(self, conn: sqlite3.Connection, generation: int) -> dict[int, int]:
        return tracking.load(conn, "projection", self._tracker(generation), self._source)

    def _tracker(self, generation: int) -> str:
        """A generation's tracker in the positions table: named as its tables are."""
        return f"{self._name}__g{generation}"

    def _move_old_positions(self, conn: sqlite3.Connection) -> None:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_OLD_POSITIONS,)).fetchone():
            return
        rows = conn.execute(
            f"SELECT generation, cursor, position FROM {_OLD_POSITIONS} WHERE name = ?", (self._name,)
        ).fetchall()
        if rows:
            _logger.warning("moving the positions of projection %r in %s to the positions table", self._name, self.path)
        for generation, cursor, position in rows:
            partition = 0 if cursor == "store" else int(cursor)
            tracking.save(conn, "projection", self._tracker(generation), self._source, {partition: position})
        conn.execute(f"DELETE FROM {_OLD_POSITIONS} WHERE name = ?", (self._name,))
        if conn.execute(f"SELECT 1 FROM {_OLD_POSITIONS} LIMIT 1").fetchone() is None:
            conn.execute(f"DROP TABLE {_OLD_POSITIONS}")

    def _physical_tables(self, generation: int) -> dict[str, str]:
        return {table: f"{table}__g{generation}" for table in self.tables}

    def _create_generation(self, conn: sqlite3.Connection, generation: int, start: Mapping[int, int]) -> None:
        tx = Transaction(conn, self._physical_tables(generation))
        for ddl in self.tables.values():
            for statement in ddl.split(";"):
                if statement.strip():
                    tx.execute(statement)
        tracking.save(conn, "projection", self._tracker(generation), self._source, start)

    def _drop_generation(self, conn: sqlite3.Connection, generation: int) -> None:
        for physical in self._physical_tables(generation).values():
            conn.execute(f"DROP TABLE IF EXISTS {physical}")
        tracking.clear_tracker(conn, "projection", self._tracker(generation))
        conn.execute("DELETE FROM es_projection_streams WHERE name = ? AND generation = ?", (self._name, generation))

    def _point_views(self, conn: sqlite3.Connection, generation: int) -> None:
        for table, physical in self._physical_tables(generation).items():
            conn.execute(f"DROP VIEW IF EXISTS {table}")
            conn.execute(f"CREATE VIEW {table} AS SELECT * FROM {physical}")

    def _open(self, conn: sqlite3.Connection, start: Mapping[int, int]) -> None:
        self._move_old_positions(conn)
        self._first_generation(conn, start)

    def _first_generation(self, conn: sqlite3.Connection, start: Mapping[int, int]) -> None:
        if conn.execute("SELECT 1 FROM es_projections WHERE name = ?", (self._name,)).fetchone():
            return
        self._create_generation(conn, 1, start)
        self._point_views(conn, 1)
        conn.execute(
            "INSERT INTO es_projections (name, active, building, ddl_hash, tables) VALUES (?, 1, NULL, ?, ?)",
            (self._name, self._ddl_hash, json.dumps(list(self.tables))),
        )

    def _start_building(self, conn: sqlite3.Connection, start: Mapping[int, int]) -> None:
        active, building = conn.execute(
            "SELECT active, building FROM es_projections WHERE name = ?", (self._name,)
        ).fetchone()
        if building is not None:  # an abandoned rebuild: its tables may hold anything
            self._drop_generation(conn, building)
        new = max(active, building or 0) + 1
        self._create_generation(conn, new, start)
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
            (new, self._ddl_hash, json.dumps(list(self.tables)), self._name),
        )
        self._drop_generation(conn, active)
