"""Workflow instances in a SQLite file (WAL), beside the log and the event store: a row per
instance and its history, prefixed `wf_`. A write of many instances is one `BEGIN IMMEDIATE`
transaction that checks each one's version first, so a worker that lost an instance to
another process cannot add to its history."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from inmotion.errors import InvalidConfig
from inmotion.log.sqlite.file import SqliteFile, database_path
from inmotion.log.sqlite.store import connect, create_tables
from inmotion.workflows.store import STATUSES, Change, Entry, Instance, NewEntry, WorkflowRecorder

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wf_instances (
    key TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    id TEXT NOT NULL,
    correlation TEXT NOT NULL,
    shard INTEGER NOT NULL,
    status TEXT NOT NULL,
    input BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    wake_ms INTEGER,
    error TEXT,
    result BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wf_instances_by_status ON wf_instances (status, shard, created_ms);
CREATE INDEX IF NOT EXISTS wf_instances_by_correlation ON wf_instances (correlation);
CREATE TABLE IF NOT EXISTS wf_history (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
"""
_INSTANCE_COLUMNS = (
    "key, workflow, id, correlation, shard, status, input, version, created_ms, updated_ms, wake_ms, error, result"
)
_INSERT_ENTRY = (
    "INSERT INTO wf_history (key, version, kind, seq, name, payload, recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqliteWorkflowRecorder(SqliteFile, WorkflowRecorder):
    what = "the workflow store"

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal", timeout: float = 10.0) -> None:
        if durability not in ("normal", "fsync"):
            raise InvalidConfig(f"durability must be 'normal' or 'fsync', got {durability!r}")
        SqliteFile.__init__(self, path, timeout)
        self.durability = durability
        self._writer = self._connect()
        try:
            create_tables(self._writer, _SCHEMA, "workflow_schema", SCHEMA_VERSION, self.path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: str, path: str, options: Mapping[str, str]) -> SqliteWorkflowRecorder:
        unknown = set(options) - {"durability", "timeout", "poll"}  # poll: the log's, harmless here
        if unknown:
            raise InvalidConfig(f"unknown workflow store URL option(s): {', '.join(sorted(unknown))}")
        try:
            timeout = float(options.get("timeout", 10.0))
        except ValueError as exc:
            raise InvalidConfig(f"workflow store URL option timeout must be a number: {exc}") from exc
        return cls(database_path(url, path), durability=options.get("durability", "normal"), timeout=timeout)

    def _connect(self) -> sqlite3.Connection:
        return self._keep(connect(self.path, self.timeout, durability=self.durability))

    # --- writing --------------------------------------------------------------------------
    def create(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance:
        return self._write(self._creating(instance, entries))

    def create_now(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance | None:
        return self._now(self._creating(instance, entries))

    def write(self, changes: Sequence[Change]) -> set[str]:
        return self._write(self._writing(changes))

    def write_now(self, changes: Sequence[Change]) -> set[str] | None:
        return self._now(self._writing(changes))

    def _now(self, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """`work` in a transaction if the write lock is free and commits need no fsync."""
        done: list[T] = []
        if self.durability != "normal" or not self._write_now(lambda conn: done.append(work(conn))):
            return None
        return done[0]

    def _creating(self, instance: Instance, entries: Sequence[NewEntry]) -> Callable[[sqlite3.Connection], Instance]:
        def create(conn: sqlite3.Connection) -> Instance:
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM wf_instances WHERE key = ?", (instance.key,)
            ).fetchone()
            if row is not None:
                return Instance(*row)
            conn.execute(
                f"INSERT INTO wf_instances ({_INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                [getattr(instance, field) for field in Instance.__struct_fields__],
            )
            _insert_entries(conn, instance.key, 0, entries, instance.created_ms)
            return instance

        return create

    def _writing(self, changes: Sequence[Change]) -> Callable[[sqlite3.Connection], set[str]]:
        def write(conn: sqlite3.Connection) -> set[str]:
            conflicts = set()
            now = int(time.time() * 1000)
            for change in changes:
                done = conn.execute(
                    "UPDATE wf_instances SET version = ?, status = ?, wake_ms = ?, error = ?,"
                    " result = coalesce(?, result), updated_ms = ? WHERE key = ? AND version = ?",
                    (
                        change.expected_version + len(change.entries),
                        change.status,
                        change.wake_ms,
                        change.error,
                        change.result,
                        change.at_ms or now,
                        change.key,
                        change.expected_version,
                    ),
                ).rowcount
                if done:
                    _insert_entries(conn, change.key, change.expected_version, change.entries, change.at_ms or now)
                else:
                    conflicts.add(change.key)
            return conflicts

        return write

    # --- reading --------------------------------------------------------------------------
    def load(self, key: str) -> tuple[Instance, list[Entry]] | None:
        with self._translate("read"):
            conn = self._reader()
            conn.execute("BEGIN")  # one snapshot for the row and its history
            try:
                row = conn.execute(f"SELECT {_INSTANCE_COLUMNS} FROM wf_instances WHERE key = ?", (key,)).fetchone()
                history = conn.execute(
                    "SELECT version, kind, seq, name, payload, recorded_ms FROM wf_history WHERE key = ?"
                    " ORDER BY version",
                    (key,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        return None if row is None else (Instance(*row), [Entry(*entry) for entry in history])

    def instances(
        self,
        *,
        statuses: Sequence[str] = STATUSES,
        shard: int | None = None,
        correlation: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        where = [f"status IN ({', '.join('?' * len(statuses))})"]
        arguments: list[object] = list(statuses)
        if shard is not None:
            where.append("shard = ?")
            arguments.append(shard)
        if correlation is not None:
            where.append("correlation = ?")
            arguments.append(correlation)
        with self._translate("read"):
            rows = (
                self._reader()
                .execute(
                    f"SELECT {_INSTANCE_COLUMNS} FROM wf_instances WHERE {' AND '.join(where)}"
                    " ORDER BY created_ms, key LIMIT ?",
                    (*arguments, limit),
                )
                .fetchall()
            )
        return [Instance(*row) for row in rows]

    def count(self, *, statuses: Sequence[str], shard: int) -> int:
        with self._translate("read"):
            (found,) = (
                self._reader()
                .execute(
                    f"SELECT count(*) FROM wf_instances WHERE status IN ({', '.join('?' * len(statuses))})"
                    " AND shard = ?",
                    (*statuses, shard),
                )
                .fetchone()
            )
        return int(found)

    def close(self) -> None:
        if not self._closed:
            self._close_connections()


def _insert_entries(conn: sqlite3.Connection, key: str, version: int, entries: Sequence[NewEntry], now: int) -> None:
    conn.executemany(
        _INSERT_ENTRY,
        [(key, version + i, e.kind, e.seq, e.name, e.payload, now) for i, e in enumerate(entries, 1)],
    )
