"""Consumer groups on a SQLite log: the lease rules with members, leases and dedupe records in
`grp_*` tables of the log's own file, shared by every process that opens it."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from inmotion.clock import Clock
from inmotion.errors import StorageError
from inmotion.log.base import Log, Message, Position, TopicConfig
from inmotion.log.groups import Key, MemberInfo, TopicPartition, Transaction, placed, unseen
from inmotion.log.leases import GroupState, Lease, LeaseCoordinator
from inmotion.log.sqlite.file import rollback, translate_errors
from inmotion.log.sqlite.log import SqliteLog

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grp_members (
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    topics TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    session_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grp_leases (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grp_handled (
    grp TEXT NOT NULL,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    handled_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, source, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grp_handled_by_time ON grp_handled (grp, handled_ms);
"""
# Files written before positions had one store kept transactional handlers' positions apart, in
# grp_positions: they join the group's committed offsets (the later of the two wins).
_MERGE_OLD_POSITIONS = """
INSERT INTO positions (kind, tracker, source, partition, position, updated_ms)
SELECT 'group', p.grp, p.topic, p.partition, p.offset, 0 FROM grp_positions p JOIN topics t ON t.name = p.topic
WHERE true ON CONFLICT (kind, tracker, source, partition) DO UPDATE SET position = max(position, excluded.position);
DROP TABLE grp_positions
"""


_IDS_A_QUERY = 500


class SqliteCoordinator(LeaseCoordinator):
    """Groups kept in `grp_*` tables of a SQLite log's file, shared by every process using it."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        timeout: float = 10.0,
        *,
        clock: Clock | None = None,
        log: SqliteLog | None = None,
    ) -> None:
        super().__init__(clock)
        self.log = log or SqliteLog(path, timeout=timeout)
        self._own_log = log is None
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        """Serialises the writer connection `_conn`; held while BEGIN IMMEDIATE waits for the
        file's write lock, so nothing that must not wait (an event loop, a reader) takes it."""
        self._readers = threading.local()
        self._readers_lock = threading.Lock()
        self._reader_connections: list[sqlite3.Connection] = []
        try:
            self._conn = self.connect()
            with self._writing() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'grp_positions'").fetchone():
                    for statement in _MERGE_OLD_POSITIONS.split(";"):
                        conn.execute(statement)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot set up consumer groups in {self.path}: {exc}") from exc

    def connect(self) -> sqlite3.Connection:
        """A new connection to the file, in autocommit mode, waiting up to `timeout` for locks."""
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    rollback(self._conn)
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc

    def load(self, conn: sqlite3.Connection, group: str) -> GroupState:
        members = {
            member: MemberInfo(member, host, pid, tuple(json.loads(topics)), joined, beat, session)
            for member, host, pid, topics, joined, beat, session in conn.execute(
                "SELECT member, host, pid, topics, joined_ms, heartbeat_ms, session_ms FROM grp_members WHERE grp = ?",
                (group,),
            )
        }
        leases = {
            TopicPartition(topic, partition): Lease(owner, expires)
            for topic, partition, owner, expires in conn.execute(
                "SELECT topic, partition, owner, expires_ms FROM grp_leases WHERE grp = ?", (group,)
            )
        }
        return GroupState(members, leases)

    def store(self, conn: sqlite3.Connection, group: str, before: GroupState, after: GroupState) -> None:
        """Write the difference between two states of a group."""
        conn.executemany(
            "DELETE FROM grp_members WHERE grp = ? AND member = ?",
            [(group, m) for m in before.members.keys() - after.members.keys()],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO grp_members (grp, member, host, pid, topics, joined_ms, heartbeat_ms, session_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (group, m.member_id, m.host, m.pid, json.dumps(m.topics), m.joined_ms, m.heartbeat_ms, m.session_ms)
                for key, m in after.members.items()
                if before.members.get(key) != m
            ],
        )
        conn.executemany(
            "DELETE FROM grp_leases WHERE grp = ? AND topic = ? AND partition = ?",
            [(group, tp.topic, tp.partition) for tp in before.leases.keys() - after.leases.keys()],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO grp_leases (grp, topic, partition, owner, expires_ms) VALUES (?, ?, ?, ?, ?)",
            [
                (group, tp.topic, tp.partition, lease.owner, lease.expires_ms)
                for tp, lease in after.leases.items()
                if before.leases.get(tp) != lease
            ],
        )

    @contextlib.contextmanager
    def _change(self, group: str) -> Iterator[GroupState]:
        with self._writing() as conn:
            before = self.load(conn, group)
            after = copy.deepcopy(before)
            yield after
            self.store(conn, group, before, after)

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """A WAL read on the calling thread's own connection: it waits for no writer."""
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc

    def groups(self) -> list[str]:
        return [str(g) for (g,) in self._read("SELECT DISTINCT grp FROM grp_members ORDER BY grp", ())]

    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        conn = self._reader()
        try:
            with conn:  # one read transaction: members and leases of the same moment
                conn.execute("BEGIN")
                state = self.load(conn, group)
        except sqlite3.Error as exc:
            raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc
        now = self.now_ms()
        return sorted((m for m in state.members.values() if m.live(now) or not live_only), key=lambda m: m.member_id)

    def owners(self, group: str) -> dict[TopicPartition, str]:
        rows = self._read(
            "SELECT topic, partition, owner FROM grp_leases WHERE grp = ? AND expires_ms >= ?", (group, self.now_ms())
        )
        return {TopicPartition(str(t), int(p)): str(o) for t, p, o in rows}  # type: ignore[call-overload]

    def holds(self, conn: sqlite3.Connection, group: str, member_id: str, tp: TopicPartition) -> bool:
        """Inside a transaction on `conn`: does `member_id` still hold the lease on `tp`?"""
        row = conn.execute(
            "SELECT 1 FROM grp_leases WHERE grp = ? AND topic = ? AND partition = ? AND owner = ? AND expires_ms >= ?",
            (group, tp.topic, tp.partition, member_id, self.now_ms()),
        ).fetchone()
        return row is not None

    def seen(self, group: str, keys: Sequence[Key]) -> set[Key]:
        """A WAL read on the calling thread's own connection: it waits for no lock, so an event
        loop may call it."""
        conn = self._reader()
        try:
            return self._seen_on(conn, group, keys)
        except sqlite3.Error as exc:
            raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc

    @staticmethod
    def _seen_on(conn: sqlite3.Connection, group: str, keys: Sequence[Key]) -> set[Key]:
        by_source: dict[str, list[str]] = {}
        for source, event_id in keys:
            by_source.setdefault(source, []).append(event_id)
        found: set[Key] = set()
        for source, ids in by_source.items():  # one indexed query for up to _IDS_A_QUERY ids of a source
            for start in range(0, len(ids), _IDS_A_QUERY):
                chunk = ids[start : start + _IDS_A_QUERY]
                rows = conn.execute(
                    "SELECT id FROM grp_handled WHERE grp = ? AND source = ? AND id IN"
                    f" ({', '.join('?' * len(chunk))})",
                    (group, source, *chunk),
                )
                found.update((source, event_id) for (event_id,) in rows)
        return found

    def append_unseen(
        self, log: Log, group: str, topic: str, messages: Sequence[Message], keys: Sequence[Key]
    ) -> list[Position | None]:
        if log is not self.log:
            return super().append_unseen(log, group, topic, messages, keys)
        positions = self.log._write(lambda conn: self._append_unseen_in(conn, group, topic, messages, keys))
        self.log.appended()
        return positions

    def append_unseen_now(
        self, log: Log, group: str, topic: str, messages: Sequence[Message], keys: Sequence[Key]
    ) -> list[Position | None] | None:
        if log is not self.log or not self.log.appends_now:
            return None
        done: list[list[Position | None]] = []

        def work(conn: sqlite3.Connection) -> None:
            done.append(self._append_unseen_in(conn, group, topic, messages, keys))

        if not self.log._write_now(work):
            return None
        self.log.appended()
        return done[0]

    def _append_unseen_in(
        self, conn: sqlite3.Connection, group: str, topic: str, messages: Sequence[Message], keys: Sequence[Key]
    ) -> list[Position | None]:
        """In the write transaction: the check, the append and the records hold the file's
        write lock together, so no other process appends a copy in between."""
        fresh = unseen(keys, self._seen_on(conn, group, list(dict.fromkeys(keys))))
        appended = self.log.append_in(conn, topic, [messages[i] for i in fresh]) if fresh else []
        self.remember_in(conn, group, [keys[i] for i in fresh])
        return placed(len(keys), fresh, appended)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            try:
                conn = self._readers.conn = self.connect()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open consumer group storage in {self.path}: {exc}") from exc
            with self._readers_lock:  # not `_lock`: a writer waiting for the file holds that one
                self._reader_connections.append(conn)
        return conn

    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        # through the log's writer: a process's appends and dedupe records then wait for each
        # other on one lock, not on SQLite's busy handler (which sleeps milliseconds at a time)
        self.log._write(lambda conn: self.remember_in(conn, group, keys))

    def remember_now(self, group: str, keys: Sequence[tuple[str, str]]) -> bool:
        return self.log.appends_now and self.log._write_now(lambda conn: self.remember_in(conn, group, keys))

    def remember_in(self, conn: sqlite3.Connection, group: str, keys: Sequence[tuple[str, str]]) -> None:
        now = self.now_ms()
        conn.executemany(
            "INSERT OR REPLACE INTO grp_handled (grp, source, id, handled_ms) VALUES (?, ?, ?, ?)",
            [(group, source, event_id, now) for source, event_id in keys],
        )

    @staticmethod
    def seen_in(conn: sqlite3.Connection, group: str, key: tuple[str, str]) -> bool:
        row = conn.execute(
            "SELECT 1 FROM grp_handled WHERE grp = ? AND source = ? AND id = ?", (group, *key)
        ).fetchone()
        return row is not None

    def forget(self, group: str, keys: Sequence[tuple[str, str]]) -> int:
        with self._writing() as conn:
            return conn.executemany(
                "DELETE FROM grp_handled WHERE grp = ? AND source = ? AND id = ?",
                [(group, source, event_id) for source, event_id in set(keys)],
            ).rowcount

    def forget_before(self, group: str, cutoff_ms: int) -> int:
        with self._writing() as conn:
            return conn.execute("DELETE FROM grp_handled WHERE grp = ? AND handled_ms < ?", (group, cutoff_ms)).rowcount

    def close(self) -> None:
        with self._lock, self._readers_lock:
            for conn in [self._conn, *self._reader_connections]:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._reader_connections.clear()
        if self._own_log:
            self.log.close()

    def transaction(self, group: str) -> SqliteTransaction:
        return SqliteTransaction(self, group)


class SqliteTransaction(Transaction):
    """A transactional handler's own connection to the log's file: its writes, the dedupe
    record, follow-up events (`SqliteLog.append_in`) and the group's offset in one `BEGIN
    IMMEDIATE` transaction."""

    def __init__(self, coordinator: SqliteCoordinator, group: str) -> None:
        self.coordinator = coordinator
        self.group = group
        self.connection: sqlite3.Connection = coordinator.connect()

    def begin(self) -> None:
        with self._translate():
            self.connection.execute("BEGIN IMMEDIATE")

    def seen(self, key: tuple[str, str]) -> bool:
        with self._translate():
            return SqliteCoordinator.seen_in(self.connection, self.group, key)

    def append(self, topic: str, messages: Sequence[Message], create: TopicConfig | None) -> None:
        self.coordinator.log.append_in(self.connection, topic, messages, create)

    def commit(self, key: tuple[str, str] | None, tp: TopicPartition, next_offset: int, member_id: str) -> bool:
        conn = self.connection
        with self._translate():
            if not self.coordinator.holds(conn, self.group, member_id, tp):
                conn.execute("ROLLBACK")
                return False
            if key is not None:
                self.coordinator.remember_in(conn, self.group, [key])
            self.coordinator.log.commit_in(conn, self.group, tp.topic, {tp.partition: next_offset})
            conn.execute("COMMIT")
        return True

    def rollback(self) -> None:
        if self.connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.connection.execute("ROLLBACK")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()

    def _translate(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.coordinator.path, "write to", self.coordinator.timeout)
