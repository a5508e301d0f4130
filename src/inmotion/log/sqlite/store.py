"""The event store in a SQLite file (WAL), which it may share with the embedded log.

Appends run in one `BEGIN IMMEDIATE` transaction each: the expected-version check, the global
positions (the next after the largest committed one, so gap-free across processes) and the
batch insert all happen under SQLite's write lock, and a killed process leaves either the
whole batch or nothing. Tables are prefixed `es_` and the file carries the log's
`application_id`, so the log and the store live in one file, whichever opens it first.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from inmotion.errors import ConcurrencyError, InvalidConfig, StorageError
from inmotion.log.sqlite import positions
from inmotion.log.sqlite.file import (
    APPLICATION_ID,
    SqliteFile,
    database_path,
    immediate,
    open_connection,
    translate_errors,
    use_wal,
)
from inmotion.log.sqlite.format import SCHEMA_VERSION as LOG_SCHEMA_VERSION
from inmotion.log.sqlite.log import SqliteLog
from inmotion.sourcing.store import ALL_EVENTS, EncodedEvent, Recorder, StoredEvent, StoredSnapshot

T = TypeVar("T")
_logger = logging.getLogger("inmotion.log.sqlite")

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS es_events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    id TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS es_snapshots (
    stream_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload BLOB NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = "stream_id, version, position, type, schema_version, id, recorded_ms, payload"
_ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_events(rows: int) -> str:
    """One INSERT of `rows` rows: a multi-row VALUES costs less than executemany per row."""
    return (
        "INSERT INTO es_events (position, stream_id, version, type, schema_version, id, recorded_ms, payload) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    )


_HEADS = (
    "SELECT (SELECT coalesce(max(version), 0) FROM es_events WHERE stream_id = ?),"
    " (SELECT coalesce(max(position), 0) FROM es_events)"
)
_SAVE_SNAPSHOT = (
    "INSERT OR REPLACE INTO es_snapshots (stream_id, version, type, schema_version, payload) VALUES (?, ?, ?, ?, ?)"
)


def connect(path: Path, timeout: float, *, durability: str = "normal") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) to an inmotion file in WAL mode.

    A fresh file gets the log's schema and `application_id` first, so that the log accepts it
    later, and a file of an older log schema is upgraded (the positions table that the store's
    tables use is the log's); a SQLite file of some other application is refused.
    """
    conn = open_connection(path, timeout)
    with translate_errors(path, "open", timeout):
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (log_version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id != APPLICATION_ID or log_version != LOG_SCHEMA_VERSION:
                SqliteLog(path, timeout=timeout).close()
            use_wal(conn, path, timeout)
            conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'fsync' else 'NORMAL'}")
        except BaseException:
            conn.close()
            raise
    return conn


class Upgrade(NamedTuple):
    """How tables of the schema version before are brought up to date."""

    what: str  # for the warning: what the new version changes
    run: Callable[[sqlite3.Connection], None]


def create_tables(
    conn: sqlite3.Connection, schema: str, schema_key: str, version: int, path: Path, upgrade: Upgrade | None = None
) -> None:
    """Create `schema` (idempotent DDL) in one transaction and refuse a file from a newer
    inmotion; tables of the version before are upgraded in the same transaction."""

    def create(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS es_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
        row = conn.execute("SELECT value FROM es_meta WHERE key = ?", (schema_key,)).fetchone()
        if row is not None and row[0] > version:
            raise StorageError(f"{path} was written by a newer inmotion ({schema_key} {row[0]}); upgrade inmotion")
        if row is not None and row[0] < version and upgrade is not None:
            _logger.warning("upgrading %s to %s %d: %s", path, schema_key, version, upgrade.what)
            upgrade.run(conn)
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
        if row is None or row[0] < version:
            conn.execute("INSERT OR REPLACE INTO es_meta (key, value) VALUES (?, ?)", (schema_key, version))

    immediate(conn, create)


def _cursors_to_positions(conn: sqlite3.Connection) -> None:
    """Event store schema 1 kept cursors in a table of their own."""
    for name, position in conn.execute("SELECT name, position FROM es_cursors").fetchall():
        positions.save(conn, "cursor", name, ALL_EVENTS, {0: position})
    conn.execute("DROP TABLE es_cursors")


class SqliteRecorder(SqliteFile, Recorder):
    what = "the event store"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        timeout: float = 10.0,
        poll: float = 0.002,
    ) -> None:
        if durability not in ("normal", "fsync"):
            raise InvalidConfig(f"durability must be 'normal' or 'fsync', got {durability!r}")
        SqliteFile.__init__(self, path, timeout)
        self.durability = durability
        self.poll = poll
        self._writer = self._connect()
        try:
            create_tables(
                self._writer,
                _SCHEMA,
                "event_store_schema",
                SCHEMA_VERSION,
                self.path,
                Upgrade("relays' cursors in the positions table", _cursors_to_positions),
            )
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, path: str, options: Mapping[str, str]) -> SqliteRecorder:
        unknown = set(options) - {"durability", "timeout", "poll"}
        if unknown:
            raise InvalidConfig(f"unknown event store URL option(s): {', '.join(sorted(unknown))}")
        try:
            numbers = {k: float(options[k]) for k in ("timeout", "poll") if k in options}
        except ValueError as exc:
            raise InvalidConfig(f"event store URL options must be numbers: {exc}") from exc
        return cls(database_path(url, path), durability=options.get("durability", "normal"), **numbers)

    # --- connections ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        return self._keep(connect(self.path, self.timeout, durability=self.durability))

    # --- writing --------------------------------------------------------------------------
    def append(
        self,
        stream_id: str,
        events: Sequence[EncodedEvent],
        expected_version: int,
        snapshot: tuple[str, int, bytes] | None,
    ) -> int:
        def append(conn: sqlite3.Connection) -> int:
            current, last = conn.execute(_HEADS, (stream_id,)).fetchone()
            if current != expected_version:
                raise ConcurrencyError(
                    f"stream {stream_id!r} is at version {current}, not the expected {expected_version}"
                )
            if not events:
                return int(current)
            now = int(time.time() * 1000)
            values = [
                value
                for i, e in enumerate(events, 1)
                for value in (last + i, stream_id, current + i, e.type, e.schema_version, e.id, now, e.payload)
            ]
            for start in range(0, len(events), _ROWS_PER_INSERT):
                rows = min(len(events) - start, _ROWS_PER_INSERT)
                conn.execute(_insert_events(rows), values[start * 8 : (start + rows) * 8])
            version: int = current + len(events)
            if snapshot is not None:
                conn.execute(_SAVE_SNAPSHOT, (stream_id, version, *snapshot))
            return version

        return self._write(append)

    def save_cursor(self, name: str, position: int) -> None:
        self._write(lambda conn: positions.save(conn, "cursor", name, ALL_EVENTS, {0: position}))

    # --- reading --------------------------------------------------------------------------
    def read_stream(self, stream_id: str, from_version: int, to_version: int | None) -> list[StoredEvent]:
        with self._translate("read"):
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM es_events WHERE stream_id = ? AND version >= ? AND version <= ?"
                    " ORDER BY version",
                    (stream_id, from_version, (1 << 62) if to_version is None else to_version),
                )
                .fetchall()
            )
        return [StoredEvent(*row) for row in rows]

    def read_all(self, from_position: int, limit: int) -> list[StoredEvent]:
        with self._translate("read"):
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_COLUMNS} FROM es_events WHERE position >= ? ORDER BY position LIMIT ?",
                    (from_position, limit),
                )
                .fetchall()
            )
        return [StoredEvent(*row) for row in rows]

    def stream_version(self, stream_id: str) -> int:
        with self._translate("read"):
            (version,) = (
                self._reader()
                .execute("SELECT coalesce(max(version), 0) FROM es_events WHERE stream_id = ?", (stream_id,))
                .fetchone()
            )
        return int(version)

    def last_position(self) -> int:
        with self._translate("read"):
            (position,) = self._reader().execute("SELECT coalesce(max(position), 0) FROM es_events").fetchone()
        return int(position)

    def load_snapshot(self, stream_id: str) -> StoredSnapshot | None:
        with self._translate("read"):
            row = (
                self._reader()
                .execute(
                    "SELECT stream_id, version, type, schema_version, payload FROM es_snapshots WHERE stream_id = ?",
                    (stream_id,),
                )
                .fetchone()
            )
        return None if row is None else StoredSnapshot(*row)

    def cursor(self, name: str) -> int:
        with self._translate("read"):
            return positions.load(self._reader(), "cursor", name, ALL_EVENTS).get(0, 0)

    def wait(self, after_position: int, timeout: float) -> bool:
        # `PRAGMA data_version` changes when another connection commits: a cheap check without
        # I/O. Appends through this object wake the waiter at once through `_appended`.
        deadline = time.monotonic() + timeout
        with self._translate("read"):
            conn = self._reader()
            seen = None
            while True:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    if self.last_position() > after_position:
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                with self._appended:
                    if self._appended.wait(min(remaining, self.poll)):
                        seen = None

    def close(self) -> None:
        if not self._closed:
            self._close_connections()
