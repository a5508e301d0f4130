"""`sqlite:///path/to/file.db`: the embedded log, one SQLite file in WAL mode.

Several processes may open the same file. Offsets are assigned inside `BEGIN IMMEDIATE`
transactions, so appends from any number of processes never lose, duplicate or reorder
offsets. Concurrent appends from the threads of one process are combined into one
transaction (group commit): whoever takes the write lock writes everything queued so far.
Readers in other processes notice new records through `PRAGMA data_version`, a cheap check
that needs no I/O. WAL checkpoints and retention run on a background thread, off the append
path, and delete in small chunks so that they never hold the write lock for long.

URL options: `durability=normal|fsync` (default normal: survives a killed process; fsync also
survives a power cut), `timeout=SECONDS` (how long to wait for another process's write lock,
default 10), `poll=SECONDS` (how often waiting readers look for other processes' writes,
default 0.002), `retention_interval=SECONDS` (default 30).
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from inmotion.errors import (
    Closed,
    CorruptRecord,
    InmotionError,
    InvalidConfig,
    StorageError,
    TopicExists,
    UnknownPartition,
    UnknownTopic,
)
from inmotion.log.base import (
    Headers,
    Log,
    Message,
    PartitionInfo,
    Position,
    Record,
    TopicConfig,
    TopicInfo,
    check_blobs,
    check_group_name,
    check_topic_name,
)
from inmotion.log.groups import Coordinator
from inmotion.log.retention import RetentionRow, needs_scan, plan_removals
from inmotion.log.sqlite import positions
from inmotion.log.sqlite.file import (
    APPLICATION_ID,
    SqliteFile,
    database_path,
    refuse_foreign,
    rollback,
    use_wal,
)
from inmotion.log.sqlite.format import (
    BATCH,
    OFFSET_BITS,
    OFFSET_MASK,
    SCHEMA_VERSION,
    batches_from_rows,
    checksum_column,
    consecutive_body,
    create_tables,
    decode_body,
    encode_body,
    offsets_of,
    positions_from_group_offsets,
    record_size,
    records_of,
)

T = TypeVar("T")
_logger = logging.getLogger("inmotion.log.sqlite")

_DELETE_CHUNK = 5000
_DELETE_BATCHES = _DELETE_CHUNK // BATCH + 1
_LOG_ID = "(SELECT log_id FROM partitions WHERE topic_id = (SELECT id FROM topics WHERE name = ?) AND partition = ?)"
_FIRST = (  # the first offset a partition `p` still stores, or NULL
    f"(SELECT b.first FROM batches b WHERE b.id >= p.log_id << {OFFSET_BITS}"
    f" AND b.id < (p.log_id + 1) << {OFFSET_BITS} ORDER BY b.id LIMIT 1)"
)
_MMAP_BYTES = 1 << 30
_WAL_PAGES = 4096
"""WAL frames (pages) past which a checkpoint makes the WAL start over; it is kept to about
that size (16 MiB of 4 KiB pages) on disk."""
_RESTART_WAIT_MS = 50


def _now_ms() -> int:
    return int(time.time() * 1000)


class _PendingAppend:
    __slots__ = ("done", "error", "messages", "positions", "records", "topic")

    def __init__(self, topic: str, messages: Sequence[Message], records: bool) -> None:
        self.topic = topic
        self.messages = messages
        self.positions: list[Position] = []
        self.records: list[Record] | None = [] if records else None
        self.error: BaseException | None = None
        self.done = False


class SqliteLog(SqliteFile, Log):
    what = "the log"
    poll: float

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        timeout: float = 10.0,
        poll: float = 0.002,
        retention_interval: float = 30.0,
        url: str | None = None,
    ) -> None:
        Log.__init__(self)
        SqliteFile.__init__(self, path, timeout)
        if durability not in ("normal", "fsync"):
            raise InvalidConfig(f"durability must be 'normal' or 'fsync', got {durability!r}")
        if not 0 <= timeout < math.inf:
            raise InvalidConfig(f"timeout must be 0 or more seconds, got {timeout}")
        # poll=0 would have every idle waiter (an idle `tail -f`) spin a core
        for name, seconds in (("poll", poll), ("retention_interval", retention_interval)):
            if not 0 < seconds < math.inf:
                raise InvalidConfig(f"{name} must be a positive number of seconds, got {seconds}")
        self.url = url or f"sqlite:///{self.path}"
        self.durability = durability
        self.appends_now = durability == "normal"
        self.poll = poll
        self.retention_interval = retention_interval
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingAppend] = []
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._appends = 0  # how many append transactions; the checkpointer watches it
        self._writer = self._open_writer()

    @classmethod
    def from_url(cls, url: str, path: str, options: Mapping[str, str]) -> SqliteLog:
        file = database_path(url, path)
        unknown = set(options) - {"durability", "timeout", "poll", "retention_interval"}
        if unknown:
            raise InvalidConfig(f"unknown sqlite URL option(s): {', '.join(sorted(unknown))}")
        try:
            numbers = {k: float(options[k]) for k in ("timeout", "poll", "retention_interval") if k in options}
        except ValueError as exc:
            raise InvalidConfig(f"sqlite URL options must be numbers: {exc}") from exc
        return cls(file, durability=options.get("durability", "normal"), url=url, **numbers)

    # --- connections ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        with self._translate("open"):
            conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")  # reads without copying pages
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            with self._translate("open"):
                refuse_foreign(conn, self.path)
                use_wal(conn, self.path, self.timeout)
                conn.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'fsync' else 'NORMAL'}")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                conn.execute(f"PRAGMA journal_size_limit = {_WAL_PAGES * page_size}")
                self._ensure_schema(conn)
        except BaseException:
            self.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        if app_id == APPLICATION_ID:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StorageError(f"{self.path} was written by a newer inmotion (schema {version}); upgrade inmotion")
            if version == SCHEMA_VERSION:
                return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if app_id == APPLICATION_ID and version in (1, 2, 3):
                if version == 1:
                    _logger.warning("upgrading %s to schema 2: records stored in batches", self.path)
                    batches_from_rows(conn)
                if version <= 2:
                    _logger.warning("upgrading %s to schema 3: one positions table", self.path)
                    positions_from_group_offsets(conn)
                _logger.warning("upgrading %s to schema 4: a checksum of each batch written from now on", self.path)
                checksum_column(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app_id != APPLICATION_ID:
                refuse_foreign(conn, self.path)  # again, under the lock: another process may have been first
                create_tables(conn)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    # --- topics ---------------------------------------------------------------------------
    def create_topic(self, name: str, config: TopicConfig = TopicConfig()) -> None:
        check_topic_name(name)
        self._write(lambda conn: self._create(conn, name, config))

    @staticmethod
    def _create(conn: sqlite3.Connection, name: str, config: TopicConfig) -> None:
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (name,)).fetchone():
            raise TopicExists(name)
        cursor = conn.execute(
            "INSERT INTO topics (name, partitions, retention_ms, retention_bytes, compact, created_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, config.partitions, config.retention_ms, config.retention_bytes, int(config.compact), _now_ms()),
        )
        conn.executemany(
            "INSERT INTO partitions (topic_id, partition) VALUES (?, ?)",
            [(cursor.lastrowid, p) for p in range(config.partitions)],
        )

    def append_in(
        self, conn: sqlite3.Connection, topic: str, messages: Sequence[Message], create: TopicConfig | None = None
    ) -> list[Position]:
        """Append inside a transaction that the caller holds on `conn`, its own connection to this
        log's file (a transactional handler's): the records are stored, and seen, only if the
        caller commits. A missing topic is created with `create`, when given, in the same
        transaction."""
        pending = _PendingAppend(topic, messages, records=False)
        with self._translate("append to"):
            try:
                self._insert(conn, pending)
            except UnknownTopic:
                if create is None:
                    raise
                check_topic_name(topic)
                self._create(conn, topic, create)
                self._insert(conn, pending)
        return pending.positions

    def delete_topic(self, name: str) -> None:
        def delete(conn: sqlite3.Connection) -> list[int]:
            topic_id, _ = self._topic_row(conn, name)
            log_ids = [i for (i,) in conn.execute("SELECT log_id FROM partitions WHERE topic_id = ?", (topic_id,))]
            conn.execute("DELETE FROM topics WHERE id = ?", (topic_id,))
            conn.execute("DELETE FROM partitions WHERE topic_id = ?", (topic_id,))
            positions.clear_source(conn, name)  # every tracker's: a topic created again starts from nothing
            return log_ids

        # log_ids are never reused, so the records can go in small chunks afterwards.
        for log_id in self._write(delete):
            self._delete_range(log_id << OFFSET_BITS, (log_id + 1) << OFFSET_BITS)

    def list_topics(self) -> list[str]:
        with self._translate("read"):
            rows = self._reader().execute("SELECT name FROM topics ORDER BY name").fetchall()
        return [name for (name,) in rows]

    def describe_topic(self, name: str) -> TopicInfo:
        with self._translate("read"):
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                topic_id, config = self._topic_row(conn, name)
                rows = conn.execute(
                    f"SELECT p.partition, p.next_offset, {_FIRST} FROM partitions p WHERE p.topic_id = ?"
                    " ORDER BY p.partition",
                    (topic_id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        partitions = tuple(
            PartitionInfo(p, next_offset if first is None else first, next_offset) for p, next_offset, first in rows
        )
        return TopicInfo(name, config, partitions)

    def topic_id(self, name: str) -> str:
        with self._translate("read"):
            topic_id, _ = self._topic_row(self._reader(), name)
        return str(topic_id)  # AUTOINCREMENT: never reused

    def partition_count(self, topic: str) -> int:
        with self._translate("read"):
            return self._topic_row(self._reader(), topic)[1].partitions

    def _topic_row(self, conn: sqlite3.Connection, name: str) -> tuple[int, TopicConfig]:
        row = conn.execute(
            "SELECT id, partitions, retention_ms, retention_bytes, compact FROM topics WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise UnknownTopic(name)
        topic_id, partitions, retention_ms, retention_bytes, compact = row
        return topic_id, TopicConfig(partitions, retention_ms, retention_bytes, bool(compact))

    # --- append (group commit) ------------------------------------------------------------
    def append(self, topic: str, messages: Sequence[Message]) -> list[Position]:
        return self._append(_PendingAppend(topic, messages, records=False))

    def append_records(self, topic: str, messages: Sequence[Message]) -> tuple[list[Position], list[Record] | None]:
        pending = _PendingAppend(topic, messages, records=True)
        return self._append(pending), pending.records

    def append_now(
        self, topic: str, messages: Sequence[Message], *, records: bool = True
    ) -> tuple[list[Position], list[Record] | None] | None:
        pending = _PendingAppend(topic, messages, records=records)
        if not self.appends_now or not self._write_now(lambda conn: self._insert(conn, pending)):
            return None  # fsync'd commits wait for the disk; or the write lock is taken
        self.appended()
        return pending.positions, pending.records

    def appended(self) -> None:
        """An append transaction committed (here, or through `append_in` on the writer): the
        checkpointer copies the WAL back into the file soon."""
        self._appends += 1
        self._start_maintenance()

    def _append(self, pending: _PendingAppend) -> list[Position]:
        with self._queue_lock:
            self._queue.append(pending)
        with self._write_lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._write_batch(batch)
                self._appends += 1
        self._start_maintenance()
        if pending.error is not None:
            raise pending.error
        return pending.positions

    def _write_batch(self, batch: list[_PendingAppend]) -> None:
        """Write every queued append in one transaction; each fails or succeeds alone."""
        try:
            with self._translate("append to"):
                if self._closed:
                    raise Closed("the log is closed")
                conn = self._writer
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for pending in batch:
                        conn.execute("SAVEPOINT one")
                        try:
                            self._insert(conn, pending)
                            conn.execute("RELEASE one")
                        except InmotionError as exc:
                            conn.execute("ROLLBACK TO one")
                            conn.execute("RELEASE one")
                            pending.error = exc
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
        except BaseException as exc:
            for pending in batch:
                pending.positions = []
                pending.records = None
                pending.error = exc
        finally:
            for pending in batch:
                pending.done = True
        self._notify()

    def _insert(self, conn: sqlite3.Connection, pending: _PendingAppend) -> None:
        topic, messages = pending.topic, pending.messages
        topic_id, config = self._topic_row(conn, topic)
        targets = self.partitions_of(messages, config.partitions)
        by_partition: dict[int, list[Message]] = {}
        for message, target in zip(messages, targets, strict=True):
            mine = by_partition.get(target)
            if mine is None:
                by_partition[target] = [message]
            else:
                mine.append(message)
        now = _now_ms()
        rows = []
        updates = []
        starts = {}
        stamps = {}
        crc32 = zlib.crc32
        for target, mine in by_partition.items():
            if not 0 <= target < config.partitions:
                raise UnknownPartition(topic, target)
            log_id, next_offset, last_ts = conn.execute(
                "SELECT log_id, next_offset, last_timestamp FROM partitions WHERE topic_id = ? AND partition = ?",
                (topic_id, target),
            ).fetchone()
            starts[target] = next_offset
            stamps[target] = stamp = max(last_ts, now)
            base = log_id << OFFSET_BITS
            for at in range(0, len(mine), BATCH):
                batch = mine[at : at + BATCH]
                first = next_offset + at
                keys, values = [m.key for m in batch], [m.value for m in batch]
                check_blobs(keys, values)
                blob = consecutive_body(keys, values, [m.headers for m in batch])
                rows.append((base + first + len(batch) - 1, first, stamp, blob, crc32(blob)))
            size = 0
            if config.retention_bytes is not None:  # only size-bounded topics pay for counting bytes
                size = sum(record_size(m.key, m.value, m.headers) for m in mine)
            updates.append((next_offset + len(mine), stamp, size, log_id))
        conn.executemany("INSERT INTO batches (id, first, timestamp, body, crc) VALUES (?, ?, ?, ?, ?)", rows)
        conn.executemany(
            "UPDATE partitions SET next_offset = ?, last_timestamp = ?, bytes = bytes + ? WHERE log_id = ?", updates
        )
        offsets = []
        for target in targets:
            offsets.append(starts[target])
            starts[target] += 1
        pending.positions = list(map(Position, targets, offsets))
        if pending.records is not None:
            pending.records = [
                Record(topic, target, offset, stamps[target], m.key, m.value, tuple(m.headers))
                for m, target, offset in zip(messages, targets, offsets, strict=True)
            ]

    # --- read -----------------------------------------------------------------------------
    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        offset = max(offset, 0)
        records: list[Record] = []
        with self._translate("read"):
            if limit > 0:
                cursor = self._reader().execute(
                    "SELECT id, first, timestamp, body, crc FROM batches"
                    f" WHERE id >= ({_LOG_ID} << {OFFSET_BITS}) + ? AND id < ({_LOG_ID} + 1) << {OFFSET_BITS}"
                    " ORDER BY id",
                    (topic, partition, offset, topic, partition),
                )
                try:
                    for rowid, first, timestamp, body, crc in cursor:
                        try:
                            wanted = limit - len(records)
                            more = records_of(topic, partition, rowid, first, timestamp, body, crc, offset, wanted)
                        except CorruptRecord:
                            if records:  # the records before the damaged batch; the next read raises
                                break
                            raise
                        records += more
                        if len(records) >= limit:
                            break
                finally:
                    cursor.close()
            if not records:
                self._check_partition(topic, partition)
        return records

    def _check_partition(self, topic: str, partition: int) -> None:
        count = self._topic_row(self._reader(), topic)[1].partitions
        if not 0 <= partition < count:
            raise UnknownPartition(topic, partition)

    def _next_offsets(self, topic: str) -> dict[int, int]:
        rows = (
            self._reader()
            .execute(
                "SELECT partition, next_offset FROM partitions WHERE topic_id = (SELECT id FROM topics WHERE name = ?)",
                (topic,),
            )
            .fetchall()
        )
        if not rows:
            raise UnknownTopic(topic)
        return dict(rows)

    def wait(self, topic: str, positions: Mapping[int, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._start_maintenance()
        with self._translate("read"):
            conn = self._reader()
            version = None
            while True:
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    latest = self._next_offsets(topic)
                    if any(latest.get(p, 0) > offset for p, offset in positions.items()):
                        return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                with self._appended:
                    if self._appended.wait(min(remaining, self.poll)):
                        version = None  # a write from this process: data_version will not show it

    def data_version(self) -> int:
        # Changes whenever another connection, of this process (the writer) or another, commits.
        with self._translate("read"):
            version: int = self._reader().execute("PRAGMA data_version").fetchone()[0]
        return version

    def earliest_offset(self, topic: str, partition: int) -> int:
        # One partition's first batch (a b-tree seek), or its next offset when it holds nothing.
        with self._translate("read"):
            row = (
                self._reader()
                .execute(
                    f"SELECT p.next_offset, {_FIRST} FROM partitions p"
                    " WHERE p.topic_id = (SELECT id FROM topics WHERE name = ?) AND p.partition = ?",
                    (topic, partition),
                )
                .fetchone()
            )
            if row is None:
                self._check_partition(topic, partition)
                raise UnknownPartition(topic, partition)
        next_offset, first = row
        return int(next_offset if first is None else first)

    def latest_offset(self, topic: str, partition: int) -> int:
        with self._translate("read"):
            latest = self._next_offsets(topic)
        if partition not in latest:
            raise UnknownPartition(topic, partition)
        return latest[partition]

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        # Timestamps never decrease within a partition and a batch's records share one: binary
        # search over offsets for the first batch at or after the time, using only primary-key
        # lookups.
        with self._translate("read"):
            conn = self._reader()
            latest = self.latest_offset(topic, partition)

            def batch_from(x: int) -> tuple[int, int, int] | None:
                """(first offset, last offset written, timestamp) of the batch holding offset x
                or, if none does, of the next one."""
                row = conn.execute(
                    f"SELECT first, id, timestamp FROM batches WHERE id >= ({_LOG_ID} << {OFFSET_BITS}) + ?"
                    f" AND id < ({_LOG_ID} + 1) << {OFFSET_BITS} ORDER BY id LIMIT 1",
                    (topic, partition, x, topic, partition),
                ).fetchone()
                return None if row is None else (row[0], row[1] & OFFSET_MASK, row[2])

            lo, hi = 0, latest
            while lo < hi:
                mid = (lo + hi) // 2
                found = batch_from(mid)
                if found is None or found[2] >= timestamp_ms:
                    hi = mid
                else:
                    lo = found[1] + 1
            found = batch_from(lo)
        return latest if found is None else max(found[0], lo)

    # --- group offsets --------------------------------------------------------------------
    def commit(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> None:
        self._write(self._committing(group, topic, offsets, forward_only))

    def commit_now(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> bool:
        return self.appends_now and self._write_now(self._committing(group, topic, offsets, forward_only))

    def _committing(
        self, group: str, topic: str, offsets: Mapping[int, int], forward_only: bool
    ) -> Callable[[sqlite3.Connection], None]:
        check_group_name(group)

        def commit(conn: sqlite3.Connection) -> None:
            _, config = self._topic_row(conn, topic)
            for partition in offsets:
                if not 0 <= partition < config.partitions:
                    raise UnknownPartition(topic, partition)
            positions.save(conn, "group", group, topic, offsets, forward_only=forward_only)

        return commit

    def commit_in(self, conn: sqlite3.Connection, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Inside a transaction that the caller holds on `conn` (a transactional handler's):
        move the group's offsets forward, never back."""
        self._topic_row(conn, topic)
        positions.save(conn, "group", group, topic, offsets, forward_only=True)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._translate("read"):
            conn = self._reader()
            self._topic_row(conn, topic)
            return positions.load(conn, "group", group, topic)

    def group_topics(self, group: str) -> list[str]:
        with self._translate("read"):
            return positions.sources(self._reader(), "group", group)

    def list_groups(self) -> list[str]:
        with self._translate("read"):
            return positions.trackers(self._reader(), "group")

    # --- maintenance ----------------------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> int:
        now_ms = _now_ms() if now_ms is None else now_ms
        with self._translate("read"):
            partitions = (
                self._reader()
                .execute(
                    "SELECT t.name, p.partition, t.partitions, t.retention_ms, t.retention_bytes, t.compact,"
                    " p.log_id, p.bytes FROM topics t JOIN partitions p ON p.topic_id = t.id"
                )
                .fetchall()
            )
        removed = 0
        for topic, partition, count, retention_ms, retention_bytes, compact, log_id, size in partitions:
            config = TopicConfig(count, retention_ms, retention_bytes, bool(compact))
            if needs_scan(config):
                try:
                    removed += self._apply_retention(topic, partition, log_id, config, size, now_ms)
                except CorruptRecord as exc:  # the other partitions' retention goes on
                    _logger.error("retention of %s/%d cannot go past a damaged batch: %s", topic, partition, exc)
        return removed

    def _apply_retention(
        self, topic: str, partition: int, log_id: int, config: TopicConfig, size: int, now_ms: int
    ) -> int:
        base = log_id << OFFSET_BITS
        sized = config.retention_bytes is not None
        batches: list[int] = []  # the rowids of the batches scanned, ascending

        def rows(cursor: sqlite3.Cursor) -> Iterator[RetentionRow]:
            for rowid, first, timestamp, blob, crc in cursor:
                batches.append(rowid)
                body = decode_body(topic, partition, rowid, first, blob, crc)
                for offset, key, value, headers in zip(offsets_of(first, body), *body[:3], strict=True):
                    yield offset, timestamp, key, value is None, record_size(key, value, headers) if sized else 0

        with self._translate("read"):
            cursor = self._reader().execute(
                "SELECT id, first, timestamp, body, crc FROM batches WHERE id >= ? AND id < ? ORDER BY id",
                (base, base + OFFSET_MASK + 1),
            )
            try:
                doomed = plan_removals(config, rows(cursor), size, now_ms)
            finally:
                cursor.close()
        by_batch: dict[int, set[int]] = {}
        for offset in doomed:
            by_batch.setdefault(batches[bisect.bisect_left(batches, base + offset)], set()).add(offset)
        affected = list(by_batch.items())
        at = 0
        while at < len(affected):  # about _DELETE_CHUNK records a transaction
            chunk, count = [], 0
            while at < len(affected) and count < _DELETE_CHUNK:
                chunk.append(affected[at])
                count += len(affected[at][1])
                at += 1
            self._write(functools.partial(self._remove, topic, partition, log_id, chunk, sized))
        return len(doomed)

    @staticmethod
    def _remove(
        topic: str,
        partition: int,
        log_id: int,
        chunk: list[tuple[int, set[int]]],
        sized: bool,
        conn: sqlite3.Connection,
    ) -> None:
        """Remove records from their batches: rewrite each batch without them, or delete it when
        none of its records stays. Reads each batch again inside the write transaction, so a
        removal that raced another (a second process's retention) removes nothing twice."""
        freed = 0
        for rowid, gone in chunk:
            row = conn.execute("SELECT first, body, crc FROM batches WHERE id = ?", (rowid,)).fetchone()
            if row is None:
                continue
            body = decode_body(topic, partition, rowid, *row)
            kept: list[tuple[int, Any, Any, Headers]] = []
            for record in zip(offsets_of(row[0], body), *body[:3], strict=True):
                if record[0] not in gone:
                    kept.append(record)
                elif sized:
                    freed += record_size(*record[1:])
            if not kept:
                conn.execute("DELETE FROM batches WHERE id = ?", (rowid,))
                continue
            blob = encode_body(kept)
            update = "UPDATE batches SET first = ?, body = ?, crc = ? WHERE id = ?"
            conn.execute(update, (kept[0][0], blob, zlib.crc32(blob), rowid))
        if sized:
            conn.execute("UPDATE partitions SET bytes = max(bytes - ?, 0) WHERE log_id = ?", (freed, log_id))

    def _delete_range(self, start: int, end: int) -> None:
        """Delete batches with start <= rowid < end, a chunk per transaction."""
        while True:
            deleted = self._write(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE id >= ? AND id < ? LIMIT ?)",
                        (start, end, _DELETE_BATCHES),
                    ).rowcount
                )
            )
            if deleted < _DELETE_BATCHES:
                return

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file.

        PASSIVE, on this thread's own connection: it never waits for readers or writers, and
        appends go on while it runs. But the WAL starts over only when a write begins after a
        checkpoint that copied all of it: under appends that never pause, a PASSIVE checkpoint
        never catches up, and the WAL grew without end (300 MB for 15 MB of records in five
        seconds of the gateway's benchmark), each commit writing past its end. So past
        _WAL_PAGES, RESTART, holding this process's write lock (back-to-back appends would
        otherwise keep SQLite's from it; appends on the event loop go to a thread meanwhile):
        it copies what the PASSIVE one left and waits for readers at most _RESTART_WAIT_MS,
        and the next append writes the WAL from its start."""
        with self._translate("checkpoint"):
            conn = self._reader()
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames <= _WAL_PAGES:
                return
            with self._write_lock:
                conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}")
                try:
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def _start_maintenance(self) -> None:
        if self._maintenance is None and not self._closed:
            with self._connections_lock:
                if self._maintenance is None:
                    self._maintenance = threading.Thread(
                        target=self._maintain,
                        name=f"inmotion-sqlite-maintenance:{self.path}",
                        daemon=True,
                    )
                    self._maintenance.start()

    def _maintain(self) -> None:
        last_retention = time.monotonic()
        checkpointed = self._appends
        while not self._stop.wait(0.2):
            try:
                if self._appends != checkpointed:
                    checkpointed = self._appends
                    self.checkpoint()
                if time.monotonic() - last_retention >= self.retention_interval:
                    last_retention = time.monotonic()
                    self.enforce_retention()
            except (InmotionError, OSError):
                # Locked by another process, or closing: try again on the next round.
                continue

    def group_coordinator(self) -> Coordinator:
        from inmotion.log.sqlite.groups import SqliteCoordinator  # it builds on this module

        return SqliteCoordinator(self.path, self.timeout, log=self)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._notify()
        if self._maintenance is not None and self._maintenance is not threading.current_thread():
            self._maintenance.join()
        self._close_connections()
