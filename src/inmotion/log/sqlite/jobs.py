"""SQL jobs' checkpoints in the log's SQLite file: a row per job (`sql_jobs`), its state entries
(`sql_state`) and its sources' offsets in the positions table (kind 'sql'). A checkpoint is one
write transaction on the log's writer, with the results it appends (`SqliteLog.append_in`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence

from inmotion.errors import InvalidConfig
from inmotion.log import Message, TopicConfig
from inmotion.log.sqlite import positions as tracking
from inmotion.log.sqlite.log import SqliteLog
from inmotion.log.sqlite.store import create_tables
from inmotion.streams.checkpoints import KIND, Checkpoint, Checkpoints, JobInfo, JobTakenOver, Source

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sql_jobs (
    name TEXT PRIMARY KEY,
    script TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    progress BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    error TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sql_state (
    job TEXT NOT NULL,
    operator INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (job, operator, key)
) WITHOUT ROWID;
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class SqliteCheckpoints(Checkpoints):
    def __init__(self, log: SqliteLog) -> None:
        self.log = log
        with log._write_lock:
            create_tables(log._writer, _SCHEMA, "sql_schema", SCHEMA_VERSION, log.path)

    def claim(self, job: str, script: str, owner: str) -> Checkpoint:
        def claim(conn: sqlite3.Connection) -> Checkpoint:
            row = conn.execute(
                "SELECT script, epoch, sequence, progress FROM sql_jobs WHERE name = ?", (job,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO sql_jobs (name, script, epoch, owner, status, sequence, progress, updated_ms)"
                    " VALUES (?, ?, 1, ?, 'running', 0, x'', ?)",
                    (job, script, owner, _now_ms()),
                )
                return Checkpoint(1, 0, {}, b"", {})
            known, epoch, sequence, progress = row
            if known != script:
                raise InvalidConfig(
                    f"job {job} ran other SQL before: its state does not fit this SQL"
                    " (reset the job to start it anew, or give this SQL another job name)"
                )
            conn.execute(
                "UPDATE sql_jobs SET epoch = ?, owner = ?, status = 'running', error = NULL, updated_ms = ?"
                " WHERE name = ?",
                (epoch + 1, owner, _now_ms(), job),
            )
            positions = {t[len(job) + 1 :]: tracking.load(conn, KIND, t, s) for t, s in _trackers(conn, job)}
            state = {
                (int(op), bytes(key)): bytes(value)
                for op, key, value in conn.execute("SELECT operator, key, value FROM sql_state WHERE job = ?", (job,))
            }
            return Checkpoint(epoch + 1, sequence, positions, bytes(progress), state)

        return self.log._write(claim)

    def save(
        self,
        job: str,
        epoch: int,
        sequence: int,
        sources: Sequence[Source],
        state: Mapping[tuple[int, bytes], bytes | None],
        progress: bytes,
        results: Sequence[tuple[str, Sequence[Message], TopicConfig]],
    ) -> None:
        def save(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT epoch FROM sql_jobs WHERE name = ?", (job,)).fetchone()
            if row is None or row[0] != epoch:
                raise JobTakenOver(f"job {job} was started again by another process: this run stops")
            for topic, messages, config in results:
                if messages:
                    self.log.append_in(conn, topic, messages, create=config)
            conn.executemany(
                "INSERT OR REPLACE INTO sql_state (job, operator, key, value) VALUES (?, ?, ?, ?)",
                [(job, op, key, value) for (op, key), value in state.items() if value is not None],
            )
            conn.executemany(
                "DELETE FROM sql_state WHERE job = ? AND operator = ? AND key = ?",
                [(job, op, key) for (op, key), value in state.items() if value is None],
            )
            for source in sources:
                tracking.save(conn, KIND, f"{job}/{source.tracker}", source.topic, source.offsets)
            conn.execute(
                "UPDATE sql_jobs SET sequence = ?, progress = ?, updated_ms = ? WHERE name = ?",
                (sequence, progress, _now_ms(), job),
            )

        self.log._write(save)
        if any(messages for _, messages, _ in results):
            self.log.appended()

    def finish(self, job: str, epoch: int, status: str, error: str | None = None) -> None:
        self.log._write(
            lambda conn: conn.execute(
                "UPDATE sql_jobs SET status = ?, error = ?, updated_ms = ? WHERE name = ? AND epoch = ?",
                (status, error, _now_ms(), job, epoch),
            )
        )

    def jobs(self) -> list[JobInfo]:
        conn = self.log._reader()
        with self.log._translate("read"):
            rows = conn.execute(
                "SELECT name, status, owner, epoch, sequence, updated_ms, progress, error FROM sql_jobs ORDER BY name"
            ).fetchall()
            return [
                JobInfo(
                    name,
                    status,
                    owner,
                    epoch,
                    sequence,
                    updated_ms,
                    bytes(progress),
                    {t[len(name) + 1 :]: (s, tracking.load(conn, KIND, t, s)) for t, s in _trackers(conn, name)},
                    error,
                )
                for name, status, owner, epoch, sequence, updated_ms, progress, error in rows
            ]

    def reset(self, job: str) -> bool:
        def reset(conn: sqlite3.Connection) -> bool:
            found = conn.execute("DELETE FROM sql_jobs WHERE name = ?", (job,)).rowcount > 0
            conn.execute("DELETE FROM sql_state WHERE job = ?", (job,))
            for tracker, _ in _trackers(conn, job):
                tracking.clear_tracker(conn, KIND, tracker)
            return found

        return self.log._write(reset)


def _trackers(conn: sqlite3.Connection, job: str) -> list[tuple[str, str]]:
    """The job's (tracker, topic) pairs: its trackers are `job/...`."""
    return [
        (tracker, source)
        for tracker in tracking.trackers(conn, KIND)
        if tracker.startswith(f"{job}/")
        for source in tracking.sources(conn, KIND, tracker)
    ]
