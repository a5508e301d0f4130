"""Consumer-group coordination: who is in a group and which partitions each member owns.

A `Coordinator` is the group side of a backend. `join` gives a `Membership`; the consumer
calls `heartbeat()` every `heartbeat_interval` seconds and gets back an `Assignment`: the
partitions it holds and may process, and those it holds but must hand over (finish in-flight
events, commit, then `release`). A member that stops heartbeating for `session_timeout`
seconds is dead: its partitions go to the others. Kafka's own group protocol fits the same
shape (its assign/revoke callbacks fill the `Assignment`).

The embedded backends keep no leader. Every member computes the same assignment from the
list of live members (partitions dealt round-robin over the members sorted by id) and takes
only leases that are free, so a partition has at most one live owner at a time. SQLite keeps
members, leases and dedupe records in `grp_*` tables of the log's own file, so processes
sharing the file share the group; the memory backend keeps them per log object.

The same storage remembers which events a group has handled (`seen`/`remember`), for
idempotent subscriptions, within a bounded window.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from inmotion.errors import InvalidConfig, StorageError
from inmotion.log import Log

DEFAULT_SESSION_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    owned: frozenset[TopicPartition]
    """Partitions this member holds a lease on: it may process them."""
    revoke: frozenset[TopicPartition]
    """Held partitions that belong to another member now: finish, commit, then release them."""


@dataclasses.dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    host: str
    pid: int
    topics: tuple[str, ...]
    joined_ms: int | None
    heartbeat_ms: int | None
    session_ms: int | None
    """The member's own session timeout: silent for longer, it counts as gone. The times are
    None where the group's keeper does not tell them (Kafka lists only live members)."""

    def live(self, now_ms: int) -> bool:
        if self.heartbeat_ms is None or self.session_ms is None:
            return True
        return self.heartbeat_ms >= now_ms - self.session_ms


@dataclasses.dataclass(slots=True)
class _Lease:
    owner: str
    expires_ms: int


@dataclasses.dataclass(slots=True)
class _GroupState:
    """One group's members and leases, as the assignment rules see them."""

    members: dict[str, MemberInfo]
    leases: dict[TopicPartition, _Lease]


def _now_ms() -> int:
    return int(time.time() * 1000)


def deal(partitions: Mapping[str, int], members: Mapping[str, Iterable[str]]) -> dict[str, set[TopicPartition]]:
    """Who should own what: each topic's partitions dealt round-robin over its members by id."""
    wanted: dict[str, set[TopicPartition]] = {member: set() for member in members}
    for topic, count in partitions.items():
        subscribers = sorted(m for m, topics in members.items() if topic in topics)
        if subscribers:
            for partition in range(count):
                wanted[subscribers[partition % len(subscribers)]].add(TopicPartition(topic, partition))
    return wanted


def _heartbeat(state: _GroupState, me: MemberInfo, partitions: Mapping[str, int], now_ms: int) -> Assignment:
    """Renew `me`, drop dead members and expired leases, take free leases that the deal gives
    `me`, and say which held partitions `me` must give up."""
    state.members[me.member_id] = dataclasses.replace(me, heartbeat_ms=now_ms)
    session_ms = me.session_ms
    assert session_ms is not None  # an embedded group's members always have one
    for member in [m for m, info in state.members.items() if not info.live(now_ms)]:
        del state.members[member]
    for tp in [
        tp for tp, lease in state.leases.items() if lease.expires_ms < now_ms or lease.owner not in state.members
    ]:
        del state.leases[tp]
    wanted = deal(partitions, {m: info.topics for m, info in state.members.items()})[me.member_id]
    revoke = set()
    for tp, lease in state.leases.items():
        if lease.owner == me.member_id:
            lease.expires_ms = now_ms + session_ms
            if tp not in wanted:
                revoke.add(tp)
    for tp in wanted:
        if tp not in state.leases:
            state.leases[tp] = _Lease(me.member_id, now_ms + session_ms)
    owned = frozenset(tp for tp, lease in state.leases.items() if lease.owner == me.member_id)
    return Assignment(owned, frozenset(revoke))


class Coordinator(abc.ABC):
    """The group side of a backend: membership, partition ownership, dedupe records."""

    @abc.abstractmethod
    def join(
        self,
        group: str,
        partitions: Mapping[str, int],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        member_id: str | None = None,
    ) -> Membership:
        """Join `group` to consume `partitions` (topic -> partition count)."""

    @abc.abstractmethod
    def groups(self) -> list[str]:
        """Groups with at least one member, live or not yet timed out."""

    @abc.abstractmethod
    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        """The group's members that are live (or also those not yet removed, silent ones)."""

    @abc.abstractmethod
    def owners(self, group: str) -> dict[TopicPartition, str]:
        """Which member holds each leased partition."""

    @abc.abstractmethod
    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (source, id) pairs that the group has already handled. Must not wait
        for locks or the network: the consumer asks on its event loop."""

    @abc.abstractmethod
    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        """Record (source, id) pairs as handled by the group."""

    @abc.abstractmethod
    def forget_before(self, group: str, cutoff_ms: int) -> int:
        """Drop the group's dedupe records older than `cutoff_ms` (the window's far end); returns how many."""

    def flush(self, group: str) -> None:  # noqa: B027 - most coordinators remember synchronously
        """Make the group's remembered dedupe records durable (before offsets past them are committed)."""

    def close(self) -> None:  # noqa: B027 - most coordinators hold nothing to release
        """Release the coordinator's resources."""


class Membership(abc.ABC):
    """One member's seat in a group."""

    def __init__(self, group: str, member_id: str, session_timeout: float) -> None:
        if not 0.1 <= session_timeout <= 3600:
            raise InvalidConfig(f"session_timeout must be between 0.1 and 3600 seconds, got {session_timeout!r}")
        self.group = group
        self.member_id = member_id
        self.session_timeout = session_timeout
        self.heartbeat_interval = min(1.0, session_timeout / 5)
        self.revoke_now: Callable[[frozenset[TopicPartition]], Mapping[TopicPartition, int]] | None = None
        """Set by the consumer for backends whose group protocol takes partitions away at once
        (Kafka's rebalance callbacks, run inside `heartbeat`): called with the partitions being
        taken, it returns once their in-flight events are finished, with the offsets to commit
        for them (which the membership commits before it lets the partitions go)."""

    @abc.abstractmethod
    def heartbeat(self) -> Assignment: ...

    @abc.abstractmethod
    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Give up leases on `partitions` (after their progress is committed)."""

    @abc.abstractmethod
    def leave(self) -> None:
        """Leave the group, releasing every lease."""


def new_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _member(member_id: str, partitions: Mapping[str, int], now_ms: int, session_timeout: float) -> MemberInfo:
    topics = tuple(sorted(partitions))
    return MemberInfo(member_id, socket.gethostname(), os.getpid(), topics, now_ms, now_ms, int(session_timeout * 1000))


class _LeaseCoordinator(Coordinator):
    """The embedded backends' shared rules; a subclass only says how to change a group's state."""

    @abc.abstractmethod
    def _change(self, group: str) -> contextlib.AbstractContextManager[_GroupState]:
        """The group's state, to read and change; the changes are kept when the block ends."""

    def join(
        self,
        group: str,
        partitions: Mapping[str, int],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        member_id: str | None = None,
    ) -> Membership:
        return _LeaseMembership(self, group, member_id or new_member_id(), dict(partitions), session_timeout)


class _LeaseMembership(Membership):
    def __init__(
        self, owner: _LeaseCoordinator, group: str, member_id: str, partitions: dict[str, int], timeout: float
    ) -> None:
        super().__init__(group, member_id, timeout)
        self._owner = owner
        self._partitions = partitions
        self._info = _member(member_id, partitions, _now_ms(), timeout)

    def heartbeat(self) -> Assignment:
        with self._owner._change(self.group) as state:
            return _heartbeat(state, self._info, self._partitions, _now_ms())

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        mine = set(partitions)
        with self._owner._change(self.group) as state:
            for tp in [tp for tp, lease in state.leases.items() if tp in mine and lease.owner == self.member_id]:
                del state.leases[tp]

    def leave(self) -> None:
        with self._owner._change(self.group) as state:
            state.members.pop(self.member_id, None)
            for tp in [tp for tp, lease in state.leases.items() if lease.owner == self.member_id]:
                del state.leases[tp]


# --- memory ---------------------------------------------------------------------------------


class MemoryCoordinator(_LeaseCoordinator):
    """The groups of one in-process log (`memory://`, or any log shared inside one process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, _GroupState] = {}
        self._seen: dict[str, dict[tuple[str, str], int]] = {}

    @contextlib.contextmanager
    def _change(self, group: str) -> Iterator[_GroupState]:
        with self._lock:
            yield self._groups.setdefault(group, _GroupState({}, {}))

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(g for g, state in self._groups.items() if state.members)

    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        now = _now_ms()
        with self._change(group) as state:
            found = [m for m in state.members.values() if m.live(now) or not live_only]
        return sorted(found, key=lambda m: m.member_id)

    def owners(self, group: str) -> dict[TopicPartition, str]:
        now = _now_ms()
        with self._change(group) as state:
            return {tp: lease.owner for tp, lease in state.leases.items() if lease.expires_ms >= now}

    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        with self._lock:
            known = self._seen.get(group, {})
            return {key for key in keys if key in known}

    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        now = _now_ms()
        with self._lock:
            self._seen.setdefault(group, {}).update(dict.fromkeys(keys, now))

    def forget_before(self, group: str, cutoff_ms: int) -> int:
        with self._lock:
            known = self._seen.get(group, {})
            old = [key for key, seen_ms in known.items() if seen_ms < cutoff_ms]
            for key in old:
                del known[key]
        return len(old)


# --- sqlite ---------------------------------------------------------------------------------

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
CREATE TABLE IF NOT EXISTS grp_positions (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
"""


class SqliteCoordinator(_LeaseCoordinator):
    """Groups kept in `grp_*` tables of a SQLite log's file, shared by every process using it."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        try:
            self._conn = self.connect()
            with self.transaction() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc

    def load(self, conn: sqlite3.Connection, group: str) -> _GroupState:
        members = {
            member: MemberInfo(member, host, pid, tuple(json.loads(topics)), joined, beat, session)
            for member, host, pid, topics, joined, beat, session in conn.execute(
                "SELECT member, host, pid, topics, joined_ms, heartbeat_ms, session_ms FROM grp_members WHERE grp = ?",
                (group,),
            )
        }
        leases = {
            TopicPartition(topic, partition): _Lease(owner, expires)
            for topic, partition, owner, expires in conn.execute(
                "SELECT topic, partition, owner, expires_ms FROM grp_leases WHERE grp = ?", (group,)
            )
        }
        return _GroupState(members, leases)

    def store(self, conn: sqlite3.Connection, group: str, before: _GroupState, after: _GroupState) -> None:
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
    def _change(self, group: str) -> Iterator[_GroupState]:
        with self.transaction() as conn:
            before = self.load(conn, group)
            after = copy.deepcopy(before)
            yield after
            self.store(conn, group, before, after)

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc

    def groups(self) -> list[str]:
        return [str(g) for (g,) in self._read("SELECT DISTINCT grp FROM grp_members ORDER BY grp", ())]

    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        with self._lock:
            try:
                state = self.load(self._conn, group)
            except sqlite3.Error as exc:
                raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc
        now = _now_ms()
        return sorted((m for m in state.members.values() if m.live(now) or not live_only), key=lambda m: m.member_id)

    def owners(self, group: str) -> dict[TopicPartition, str]:
        rows = self._read(
            "SELECT topic, partition, owner FROM grp_leases WHERE grp = ? AND expires_ms >= ?", (group, _now_ms())
        )
        return {TopicPartition(str(t), int(p)): str(o) for t, p, o in rows}  # type: ignore[call-overload]

    def holds(self, conn: sqlite3.Connection, group: str, member_id: str, tp: TopicPartition) -> bool:
        """Inside a transaction on `conn`: does `member_id` still hold the lease on `tp`?"""
        row = conn.execute(
            "SELECT 1 FROM grp_leases WHERE grp = ? AND topic = ? AND partition = ? AND owner = ? AND expires_ms >= ?",
            (group, tp.topic, tp.partition, member_id, _now_ms()),
        ).fetchone()
        return row is not None

    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """A WAL read on the calling thread's own connection: it waits for no lock, so an event
        loop may call it."""
        conn = self._reader()
        found: set[tuple[str, str]] = set()
        try:
            for source, event_id in keys:
                if conn.execute(
                    "SELECT 1 FROM grp_handled WHERE grp = ? AND source = ? AND id = ?", (group, source, event_id)
                ).fetchone():
                    found.add((source, event_id))
        except sqlite3.Error as exc:
            raise StorageError(f"consumer group storage in {self.path} failed: {exc}") from exc
        return found

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            try:
                conn = self._readers.conn = self.connect()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open consumer group storage in {self.path}: {exc}") from exc
            with self._lock:
                self._reader_connections.append(conn)
        return conn

    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        with self.transaction() as conn:
            self.remember_in(conn, group, keys)

    @staticmethod
    def remember_in(conn: sqlite3.Connection, group: str, keys: Sequence[tuple[str, str]]) -> None:
        now = _now_ms()
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

    def forget_before(self, group: str, cutoff_ms: int) -> int:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM grp_handled WHERE grp = ? AND handled_ms < ?", (group, cutoff_ms)).rowcount

    @staticmethod
    def save_position(conn: sqlite3.Connection, group: str, tp: TopicPartition, next_offset: int) -> None:
        conn.execute(
            "INSERT INTO grp_positions (grp, topic, partition, offset) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (grp, topic, partition) DO UPDATE SET offset = max(offset, excluded.offset)",
            (group, tp.topic, tp.partition, next_offset),
        )

    def position(self, group: str, tp: TopicPartition) -> int | None:
        """The next offset recorded by transactional handlers, if any."""
        rows = self._read(
            "SELECT offset FROM grp_positions WHERE grp = ? AND topic = ? AND partition = ?",
            (group, tp.topic, tp.partition),
        )
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def clear_positions(self, group: str, topic: str) -> None:
        """Forget transactional positions (when a replay moves the group's offsets)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM grp_positions WHERE grp = ? AND topic = ?", (group, topic))

    def close(self) -> None:
        with self._lock:
            for conn in [self._conn, *self._reader_connections]:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._reader_connections.clear()


_memory_coordinators: weakref.WeakKeyDictionary[Log, MemoryCoordinator] = weakref.WeakKeyDictionary()
_memory_lock = threading.Lock()


def coordinator_for(log: Log) -> Coordinator:
    """The group coordinator that goes with `log`'s backend: the lease tables above for the
    embedded backends, Kafka's own group protocol for Kafka (`kafka_groups.KafkaCoordinator`).

    Another backend with a group protocol of its own plugs in by giving its log a
    `group_coordinator()` method that returns a `Coordinator`.
    """
    from inmotion.log.memory import MemoryLog
    from inmotion.log.sqlite import SqliteLog

    own = getattr(log, "group_coordinator", None)
    if callable(own):
        coordinator = own()
        if not isinstance(coordinator, Coordinator):
            raise InvalidConfig(f"{type(log).__name__}.group_coordinator() returned {coordinator!r}, not a Coordinator")
        return coordinator
    if isinstance(log, SqliteLog):
        return SqliteCoordinator(log.path, timeout=log.timeout)
    if isinstance(log, MemoryLog):
        with _memory_lock:
            if log not in _memory_coordinators:
                _memory_coordinators[log] = MemoryCoordinator()
            return _memory_coordinators[log]
    if type(log).__module__ == "inmotion.log.kafka":  # imported only when in use: confluent-kafka is optional
        from inmotion.log.kafka import KafkaLog
        from inmotion.runtime.kafka_groups import KafkaCoordinator

        assert isinstance(log, KafkaLog)
        return KafkaCoordinator(log)
    raise InvalidConfig(f"consumer groups are not supported on {log.url} yet")
