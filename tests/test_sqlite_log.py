"""What only the embedded SQLite log must do: share one file between processes, survive
kill -9, and turn locked, corrupt or unreadable files into one clear StorageError."""

from __future__ import annotations

import collections
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inmotion
import inmotion.log.sqlite.format as sqlite_format
import inmotion.log.sqlite.log as sqlite_module
from inmotion.errors import CorruptRecord, InvalidConfig, StorageError
from inmotion.log import Message, TopicConfig, connect, partition_for_key
from inmotion.log.base import STICKY
from inmotion.log.sqlite import SqliteLog
from inmotion.log.sqlite.file import APPLICATION_ID
from inmotion.sourcing import EventStore
from inmotion.testing import wait_until
from tests.damage import damage

APPENDER = textwrap.dedent(
    """
    import sys
    import inmotion
    from inmotion.log import Message
    url, name, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with inmotion.connect(url) as log:
        for batch in range(batches):
            messages = [Message(f"{name}:{batch}:{i}".encode(), key=f"k{i % 7}".encode()) for i in range(20)]
            positions = log.append("shared", messages)
            print(batch, positions[-1].partition, positions[-1].offset, flush=True)
    """
)


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/shared.db"


def _spawn(url: str, name: str, batches: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, url, name, str(batches)], stdout=subprocess.PIPE, text=True
    )


def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("shared", TopicConfig(partitions=3))
    workers = [_spawn(url, name, 40) for name in ("A", "B")]
    for worker in workers:
        worker.communicate(timeout=120)
        assert worker.returncode == 0
    with inmotion.connect(url) as log:
        seen: list[bytes] = []
        for partition in range(3):
            records = log.read("shared", partition, 0, limit=10_000)
            assert [r.offset for r in records] == list(range(len(records)))
            values = [r.value for r in records if r.value is not None]
            seen.extend(values)
            for name in ("A", "B"):
                mine = [v for v in values if v.startswith(f"{name}:".encode())]
                order = [tuple(int(x) for x in v.decode().split(":")[1:]) for v in mine]
                assert order == sorted(order), "a process's records were reordered within a partition"
        assert len(seen) == len(set(seen)) == 2 * 40 * 20


COPIER = textwrap.dedent(
    """
    import sys
    import inmotion
    from inmotion.log import Message
    url, name = sys.argv[1], sys.argv[2]
    with inmotion.connect(url) as log:
        coordinator = log.group_coordinator()
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        for batch in range(300):  # the same 300 x 2 events as the other process, each with its own value
            keys = [("client", f"{batch}-{i}") for i in range(2)]
            messages = [Message(f"{name}:{batch}-{i}".encode(), key=f"{i}".encode()) for i in range(2)]
            coordinator.append_unseen(log, "ingress", "shared", messages, keys)
    """
)


def test_two_processes_appending_copies_at_once_append_each_event_once(tmp_path: Path) -> None:
    """The check for a copy, the append and the dedupe record are one transaction (the gateway's
    ingress, two `inmotion serve` on one file, a client retrying against the other)."""
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("shared", TopicConfig(partitions=3))
    copiers = [
        subprocess.Popen(
            [sys.executable, "-c", COPIER, url, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for name in ("A", "B")
    ]
    for copier in copiers:
        assert copier.stdout is not None
        assert copier.stdout.readline() == "ready\n"
    for copier in copiers:
        assert copier.stdin is not None
        copier.stdin.write("go\n")
        copier.stdin.flush()
    for copier in copiers:
        copier.communicate(timeout=120)
        assert copier.returncode == 0
    with inmotion.connect(url) as log:
        values = [r.value or b"" for p in range(3) for r in log.read("shared", p, 0, limit=10_000)]
    ids = sorted(value.split(b":")[1] for value in values)
    assert ids == sorted(f"{batch}-{i}".encode() for batch in range(300) for i in range(2))


def test_group_reads_never_wait_behind_a_heartbeat_that_waits_for_the_file(tmp_path: Path) -> None:
    """A transactional handler holds the file's write lock while the event loop runs it; a
    heartbeat thread of the same process then waits for the file holding the coordinator's own
    lock. The loop's group reads (dedupe records from a new thread's connection, members,
    owners) must not queue behind it: that was a deadlock until the heartbeat's busy timeout."""
    with inmotion.connect(f"sqlite:///{tmp_path}/log.db?timeout=60") as log:
        log.create_topic("orders", TopicConfig(partitions=2))
        coordinator = log.group_coordinator()
        member = coordinator.join("billing", {"orders": 2}, session_timeout=30)
        transaction = coordinator.transaction("billing")
        transaction.begin()  # the file's write lock, as a handler in flight holds it
        heartbeat = threading.Thread(target=member.heartbeat, daemon=True)
        heartbeat.start()
        wait_until(lambda: coordinator._lock.locked(), 30, "the heartbeat to wait for the file")  # type: ignore[attr-defined]
        answers: list[object] = []

        def read() -> None:
            answers.extend(
                [
                    coordinator.seen("billing", [("src", "1")]),
                    coordinator.members("billing"),
                    coordinator.owners("billing"),
                ]
            )

        reader = threading.Thread(target=read, daemon=True)  # a thread of its own: a new reader connection
        reader.start()
        wait_until(lambda: len(answers) == 3, 30, "the reads, while the write lock is still held")
        assert answers[0] == set()
        transaction.rollback()
        heartbeat.join(30)
        assert not heartbeat.is_alive()
        transaction.close()
        coordinator.close()


def test_wait_wakes_on_another_process_append(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("shared", TopicConfig(partitions=3))
        woke = threading.Event()

        def waiter() -> None:
            if log.wait("shared", {0: 0, 1: 0, 2: 0}, timeout=60):
                woke.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        worker = _spawn(url, "W", 1)
        worker.communicate(timeout=60)
        thread.join(timeout=60)
        assert woke.is_set()


def test_data_version_changes_on_appends_from_this_process_and_others(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("shared", TopicConfig(partitions=3))
        assert log.poll is not None
        before = log.data_version()
        assert log.data_version() == before  # nothing written: no change
        log.append("shared", [Message(b"here")])
        local = log.data_version()
        assert local != before
        worker = _spawn(url, "W", 1)
        worker.communicate(timeout=60)
        assert log.data_version() != local


def test_append_now_and_commit_now_write_at_once_or_not_at_all(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("t", TopicConfig(partitions=2))
        assert log.appends_now
        done = log.append_now("t", [Message(b"a", key=b"k"), Message(b"b", key=b"k")])
        assert done is not None
        positions, records = done
        assert records == log.read("t", positions[0].partition, 0)
        assert [r.offset for r in records] == [p.offset for p in positions] == [0, 1]
        unrecorded = log.append_now("t", [Message(b"x", key=b"k")], records=False)
        assert unrecorded is not None
        assert unrecorded[1] is None  # nobody asked for the records: none built
        assert unrecorded[0][0].offset == 2
        assert log.commit_now("g", "t", {positions[0].partition: 2})
        assert log.committed("g", "t") == {positions[0].partition: 2}
        # another connection (as another process would) holds the write lock: nothing waits,
        # nothing is written
        other = sqlite3.connect(tmp_path / "shared.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert log.append_now("t", [Message(b"c")]) is None
            assert not log.commit_now("g", "t", {0: 0, 1: 0})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert sum(log.latest_offset("t", p) for p in range(2)) == 3
        assert log.committed("g", "t") == {positions[0].partition: 2}
        log.append("t", [Message(b"c")])  # the lock is free again; the blocking path still works
        assert sum(log.latest_offset("t", p) for p in range(2)) == 4
    with inmotion.connect(url + "?durability=fsync") as log:
        assert not log.appends_now  # an fsync'd commit would block the caller's event loop
        assert log.append_now("t", [Message(b"d")]) is None


def test_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("shared", TopicConfig(partitions=1))
    worker = _spawn(url, "K", 100_000)
    assert worker.stdout is not None
    acknowledged = -1
    for line in worker.stdout:
        acknowledged = int(line.split()[2])
        if acknowledged >= 30 * 20:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    worker.stdout.close()
    with inmotion.connect(url) as log:
        records = log.read("shared", 0, 0, limit=1_000_000)
        assert [r.offset for r in records] == list(range(len(records)))
        assert len(records) > acknowledged
        assert len(records) % 20 == 0, "a batch was half written"
        assert log.latest_offset("shared", 0) == len(records)


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    url = _url(tmp_path)
    with inmotion.connect(url) as log:
        log.create_topic("keep", TopicConfig(partitions=2, retention_ms=86_400_000, compact=True))
        log.append("keep", [Message(b"v", key=b"k")])
        log.commit("g", "keep", {0: 1})
    with inmotion.connect(url) as log:
        assert log.describe_topic("keep").config == TopicConfig(2, 86_400_000, None, True)
        assert sum(log.latest_offset("keep", p) for p in range(2)) == 1
        assert log.committed("g", "keep") == {0: 1}


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database at all, just some text " * 100)
    with pytest.raises(StorageError, match="corrupt or not a SQLite database"):
        inmotion.connect(f"sqlite:///{path}")


def test_a_damaged_batch_is_a_corrupt_record_error_naming_its_offsets(tmp_path: Path) -> None:
    """A flipped bit in a stored body passes SQLite's integrity check: reads name the topic,
    partition and offsets of the damaged batch (they raised msgspec's DecodeError), after
    returning the records before it, and reads past it are unaffected."""
    path = tmp_path / "log.db"
    with SqliteLog(path) as log:
        log.create_topic("orders", TopicConfig(partitions=2))
        for values in ([b"a", b"b"], [b"c", b"d", b"e"], [b"f"]):  # three batches in partition 1
            log.append("orders", [Message(value, partition=1) for value in values])
        log.append("orders", [Message(b"other", partition=0)])
        assert damage(path, "orders", 1, 3) == (2, 4)
        assert [r.value for r in log.read("orders", 1, 0)] == [b"a", b"b"]
        for offset in (2, 3):
            with pytest.raises(CorruptRecord, match=r"^corrupt records orders/1@2-4: the stored batch does not decode"):
                log.read("orders", 1, offset)
        with pytest.raises(CorruptRecord) as caught:
            log.read("orders", 1, 2)
        error = caught.value
        assert (error.topic, error.partition, error.first, error.last) == ("orders", 1, 2, 4)
        assert error.raw
        assert isinstance(error, StorageError)
        assert [r.value for r in log.read("orders", 1, 5)] == [b"f"]
        assert [r.value for r in log.read("orders", 0, 0)] == [b"other"]


def test_a_body_that_decodes_into_the_wrong_types_is_corrupt(tmp_path: Path) -> None:
    """One bit turns a key's nil into true: the body still decodes as msgpack, but not as keys
    (it made a Record whose key was True, which failed later as an AttributeError). In a batch
    written before schema 4, which has no checksum, the typed decoding still catches it."""
    path = tmp_path / "log.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=1))
        log.append("t", [Message(b"v")])
        damage(path, "t", 0, 0, lambda body: body.replace(b"\x91\xc0", b"\x91\xc3", 1))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE batches SET crc = NULL")
        conn.close()
        with pytest.raises(CorruptRecord, match=r"corrupt record t/0@0: .*Expected `bytes \| null`, got `bool`"):
            log.read("t", 0, 0)


def test_retention_of_the_other_partitions_goes_on_past_a_damaged_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=2, retention_ms=1000))
        for partition in (0, 1):
            log.append("t", [Message(b"old", partition=partition)])
        damage(path, "t", 0, 0)
        assert log.enforce_retention(now_ms=int(time.time() * 1000) + 10_000) == 1
        assert log.earliest_offset("t", 1) == 1
        assert "retention of t/0 cannot go past a damaged batch: corrupt record t/0@0" in caplog.text


def test_foreign_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    with pytest.raises(StorageError, match="not an inmotion log"):
        inmotion.connect(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]
    conn.close()


def test_missing_directory_and_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        inmotion.connect(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(StorageError, match="cannot open"):
        inmotion.connect(f"sqlite:///{tmp_path}")  # a directory, not a file


def test_locked_file_gives_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with inmotion.connect(f"sqlite:///{path}") as log:
        log.create_topic("t", TopicConfig(partitions=1))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        log = SqliteLog(path, timeout=0.2)
        with pytest.raises(StorageError, match="locked by another process"):
            log.append("t", [Message(b"x")])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert log.latest_offset("t", 0) == 0
    log.append("t", [Message(b"after")])
    assert log.latest_offset("t", 0) == 1
    log.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?durability=sometimes",
        "sqlite:///x.db?colour=blue",
        "sqlite:///x.db?timeout=soon",
        "sqlite://",
        "sqlite:///x.db?poll=0",
        "sqlite:///x.db?timeout=-1",
        "sqlite:///x.db?retention_interval=nan",
        "sqlite:///x.db?timeout=inf",
    ],
)
def test_bad_urls(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a URL accepted by mistake creates x.db here
    with pytest.raises(InvalidConfig):
        inmotion.connect(url)


def test_unknown_scheme() -> None:
    with pytest.raises(InvalidConfig, match="unknown broker URL"):
        inmotion.connect("redis://localhost")


def test_checkpoints_keep_the_wal_bounded_under_appends_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread appends without a pause while checkpoints run (every 50 appends one starts,
    and the appends go on meanwhile, as beside the maintenance thread's): a PASSIVE checkpoint
    alone never catches up with the last commit, and the WAL used to grow by every commit's
    pages (tens of MB a second); past the limit the WAL starts over, cut back to the limit."""
    monkeypatch.setattr(sqlite_module, "_WAL_PAGES", 64)
    path = tmp_path / "wal.db"
    wal = path.with_name(path.name + "-wal")
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=4))
        due, started = threading.Semaphore(0), threading.Semaphore(0)
        done = threading.Event()

        def append() -> None:
            try:
                for i in range(1, 1501):
                    log.append("t", [Message(b"x" * 200, key=f"{i}-{j}".encode()) for j in range(10)])
                    if i % 50 == 0:
                        due.release()
                        started.acquire()
            finally:
                done.set()
                due.release()

        writer = threading.Thread(target=append)
        writer.start()
        largest = 0
        while not done.is_set():
            due.acquire()
            started.release()
            log.checkpoint()
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        writer.join()
        assert sum(log.latest_offset("t", p) for p in range(4)) == 15_000
        assert sum(len(log.read("t", p, 0, 20_000)) for p in range(4)) == 15_000
    # the limit (64 pages of 4 KiB) and what 50 appends and more, during a checkpoint, add: some
    # 4 MB at most, where without the RESTART it grows to some 60 MB
    assert largest < 8 * 1024 * 1024, f"the WAL grew to {largest:,} bytes"


def test_an_append_of_a_few_messages_without_key_writes_one_batch(tmp_path: Path) -> None:
    """Keyless messages stick to one partition for STICKY in a row (Kafka's sticky
    partitioner): a small append is one batch in one partition, the next append goes to the
    next partition, and larger appends still cover every partition."""
    with SqliteLog(tmp_path / "sticky.db") as log:
        log.create_topic("t", TopicConfig(partitions=4))
        appended = [log.append("t", [Message(b"x") for _ in range(10)]) for _ in range(8)]
        partitions = [{p.partition for p in positions} for positions in appended]
        assert all(len(used) == 1 for used in partitions)
        assert [used.pop() for used in partitions] == [0, 1, 2, 3, 0, 1, 2, 3]
        (batches,) = log._reader().execute("SELECT count(*) FROM batches").fetchone()
        assert batches == 8
        large = log.append("t", [Message(b"y") for _ in range(4 * STICKY)])
        assert collections.Counter(p.partition for p in large) == dict.fromkeys(range(4), STICKY)
        keyed = log.append("t", [Message(b"z", key=b"k") for _ in range(3)])
        assert {p.partition for p in keyed} == {partition_for_key(b"k", 4)}


# --- records stored in batches ------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.sampled_from([b"a", b"b", b"c", None]), max_size=30)),
        st.tuples(st.just("read"), st.integers(0, 80), st.integers(1, 40)),
        st.tuples(st.just("compact"), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=operations)
def test_batches_read_compact_and_seek_like_the_memory_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: list[tuple[str, object]]
) -> None:
    """Small batches (7 records), so that reads and compaction cross and split them; the memory
    log, which stores one record at a time, is the model."""
    monkeypatch.setattr(sqlite_module, "BATCH", 7)
    topic = "t"
    with (
        inmotion.connect(f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db") as log,  # one per example
        inmotion.connect("memory://") as model,
    ):
        for each in (log, model):
            each.create_topic(topic, TopicConfig(partitions=1, compact=True))
        serial = 0
        for operation, *arguments in script:
            if operation == "append":
                keys = arguments[0]
                assert isinstance(keys, list)
                messages = []
                for key in keys:
                    serial += 1
                    tombstone = serial % 5 == 0
                    value = None if tombstone else f"v{serial}".encode()
                    messages.append(Message(value, key=key, headers=(("n", str(serial).encode()),), partition=0))
                assert log.append(topic, messages) == model.append(topic, messages)
            elif operation == "read":
                offset, limit = arguments
                assert isinstance(offset, int)
                assert isinstance(limit, int)
                got = [(r.offset, r.key, r.value, r.headers) for r in log.read(topic, 0, offset, limit)]
                want = [(r.offset, r.key, r.value, r.headers) for r in model.read(topic, 0, offset, limit)]
                assert got == want
            else:
                assert log.enforce_retention() == model.enforce_retention()
            assert log.earliest_offset(topic, 0) == model.earliest_offset(topic, 0)
            assert log.latest_offset(topic, 0) == model.latest_offset(topic, 0)
        everything = [(r.offset, r.value) for r in log.read(topic, 0, 0, 10_000)]
        assert everything == [(r.offset, r.value) for r in model.read(topic, 0, 0, 10_000)]


def test_retention_by_size_splits_a_batch_and_counts_what_stays(tmp_path: Path) -> None:
    with inmotion.connect(f"sqlite:///{tmp_path}/size.db") as log:
        log.create_topic("sized", TopicConfig(partitions=1, retention_bytes=5_000))
        log.append("sized", [Message(b"x" * 100, partition=0) for _ in range(1_200)])  # 3 batches
        removed = log.enforce_retention()
        kept = log.read("sized", 0, 0, limit=2_000)
        assert removed + len(kept) == 1_200
        assert [r.offset for r in kept] == list(range(removed, 1_200))
        assert 40 <= len(kept) <= 50
        assert log.earliest_offset("sized", 0) == removed
        assert log.enforce_retention() == 0  # the bytes still counted are the records kept


def test_offset_for_time_finds_the_first_batch_at_or_after_the_time(tmp_path: Path) -> None:
    with inmotion.connect(f"sqlite:///{tmp_path}/time.db") as log:
        log.create_topic("timed", TopicConfig(partitions=1))
        stamps = []
        for n in range(30):
            log.append("timed", [Message(b"v", partition=0) for _ in range(n % 4 + 1)])
            stamps.append(log.read("timed", 0, log.latest_offset("timed", 0) - 1)[0].timestamp)
            while int(time.time() * 1000) <= stamps[-1]:
                time.sleep(0.001)  # the next append gets a later millisecond
        records = log.read("timed", 0, 0, limit=1_000)
        for stamp in stamps:
            expected = next(r.offset for r in records if r.timestamp >= stamp)
            assert log.offset_for_time("timed", 0, stamp) == expected
        assert log.offset_for_time("timed", 0, stamps[-1] + 1) == log.latest_offset("timed", 0)


SCHEMA_1 = """
CREATE TABLE topics (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL,
    retention_ms INTEGER, retention_bytes INTEGER, compact INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE partitions (log_id INTEGER PRIMARY KEY AUTOINCREMENT, topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL, next_offset INTEGER NOT NULL DEFAULT 0, last_timestamp INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, UNIQUE (topic_id, partition));
CREATE TABLE records (id INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, key BLOB, value BLOB, headers BLOB);
CREATE TABLE group_offsets (grp TEXT NOT NULL, topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, committed_ms INTEGER NOT NULL, PRIMARY KEY (grp, topic_id, partition)) WITHOUT ROWID;
"""


def test_a_file_of_the_row_per_record_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(SCHEMA_1)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO topics VALUES (1, 'old', 2, NULL, NULL, 1, 0)")
    conn.execute("INSERT INTO partitions VALUES (1, 1, 0, 1300, 3000, 0), (2, 1, 1, 2, 3000, 0)")
    headers = msgspec.msgpack.encode([["ce_id", b"x"]])
    rows: list[tuple[int, int, bytes | None, bytes | None, bytes | None]] = [
        ((1 << 40) + n, 1000 if n < 700 else 3000, b"k", f"v{n}".encode(), headers) for n in range(1300) if n % 100
    ]
    rows += [((2 << 40) + n, 2000, None, None, None) for n in range(2)]
    conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
    # schema 1 kept a key or value given as text or a number as such; stored records are bytes now
    conn.execute("UPDATE records SET key = 'text', value = 42 WHERE id = ?", ((2 << 40) + 1,))
    conn.execute("INSERT INTO group_offsets VALUES ('g', 1, 0, 42, 0)")
    conn.close()
    with inmotion.connect(f"sqlite:///{path}") as log:
        kept = log.read("old", 0, 0, limit=2_000)
        assert [r.offset for r in kept] == [n for n in range(1300) if n % 100]
        assert [r.value for r in kept] == [f"v{n}".encode() for n in range(1300) if n % 100]
        assert {r.headers for r in kept} == {(("ce_id", b"x"),)}
        assert [r.offset for r in log.read("old", 0, 600, limit=3)] == [601, 602, 603]
        assert log.earliest_offset("old", 0) == 1
        assert log.offset_for_time("old", 0, 2000) == 701
        assert [(r.offset, r.key, r.value, r.headers) for r in log.read("old", 1, 0)] == [
            (0, None, None, ()),
            (1, b"text", b"42", ()),
        ]
        assert log.committed("g", "old") == {0: 42}
        assert log.append("old", [Message(b"new", partition=0)])[0].offset == 1300
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_format.SCHEMA_VERSION,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'records'").fetchone() == (0,)
    conn.close()


GROUP_OFFSETS = SCHEMA_1.split(";")[3]


def test_a_file_of_schema_2_has_its_group_offsets_moved_to_the_positions_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sqlite_format.SCHEMA + GROUP_OFFSETS)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO topics VALUES (1, 'a', 2, NULL, NULL, 0, 0), (2, 'b', 1, NULL, NULL, 0, 0)")
    conn.execute("INSERT INTO partitions VALUES (1, 1, 0, 0, 0, 0), (2, 1, 1, 0, 0, 0), (3, 2, 0, 0, 0, 0)")
    conn.execute("INSERT INTO group_offsets VALUES ('g', 1, 0, 42, 5), ('g', 1, 1, 7, 5), ('h', 2, 0, 3, 5)")
    conn.close()
    with inmotion.connect(f"sqlite:///{path}") as log:
        assert log.committed("g", "a") == {0: 42, 1: 7}
        assert log.committed("h", "b") == {0: 3}
        assert log.list_groups() == ["g", "h"]
        assert log.group_topics("g") == ["a"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_format.SCHEMA_VERSION,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'group_offsets'").fetchone() == (0,)
    conn.close()


def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_format.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer inmotion"):
        SqliteLog(path).list_topics()


def test_deleting_a_topic_clears_every_tracker_s_positions_in_it(tmp_path: Path) -> None:
    with SqliteLog(tmp_path / "log.db") as log:
        log.create_topic("t")
        log.create_topic("other")
        log.commit("g", "t", {0: 5})
        log.commit("g", "other", {0: 1})
        with sqlite3.connect(log.path, isolation_level=None) as conn:
            conn.execute(
                "INSERT INTO positions VALUES ('projection', 'p', 't', 0, 9, 0), ('cursor', 'c', 't', 0, 9, 0)"
            )
        conn.close()
        log.delete_topic("t")
        log.create_topic("t")
        assert log.committed("g", "t") == {}
        assert log.committed("g", "other") == {0: 1}
        with sqlite3.connect(log.path) as conn:
            assert conn.execute("SELECT kind FROM positions WHERE source = 't'").fetchall() == []
        conn.close()


def test_positions_of_transactional_handlers_in_files_of_before_join_the_committed_offsets(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with inmotion.connect(f"sqlite:///{path}") as log:
        log.create_topic("payments", TopicConfig(partitions=2))
        log.commit("ledger", "payments", {0: 5, 1: 9})
    with sqlite3.connect(path, isolation_level=None) as old:  # the table a file of before kept them in
        old.execute("CREATE TABLE grp_positions (grp TEXT, topic TEXT, partition INTEGER, offset INTEGER)")
        old.execute("INSERT INTO grp_positions VALUES ('ledger', 'payments', 0, 7), ('ledger', 'payments', 1, 3)")
    with inmotion.connect(f"sqlite:///{path}") as log:
        log.group_coordinator().close()
        assert log.committed("ledger", "payments") == {0: 7, 1: 9}  # the later of the two
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT 1 FROM sqlite_master WHERE name = 'grp_positions'").fetchone() is None


def test_a_file_of_another_application_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as theirs:
        theirs.execute("CREATE TABLE notes (text TEXT)")
        theirs.execute("INSERT INTO notes VALUES ('mine')")
    before = path.read_bytes()
    with pytest.raises(StorageError, match="not an inmotion log"):
        connect(f"sqlite:///{path}")
    with pytest.raises(StorageError, match="not an inmotion log"):
        EventStore(f"sqlite:///{path}")
    assert path.read_bytes() == before
    with sqlite3.connect(path) as theirs:
        assert theirs.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def _open_new_files(directory: str, rounds: int, start: Any) -> list[str]:
    failures = []
    for n in range(rounds):
        start.wait()
        try:
            connect(f"sqlite:///{directory}/new-{n}.db").close()
        except StorageError as exc:
            failures.append(str(exc))
    return failures


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock for which SQLite calls no busy handler: three
    processes racing to open it used to fail at once with 'locked' (11 of 120 times)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(3)
        with context.Pool(3) as pool:
            results = [pool.apply_async(_open_new_files, (str(tmp_path), 30, start)) for _ in range(3)]
            failures = [failure for result in results for failure in result.get(timeout=120)]
    assert failures == []


def test_a_full_disk_says_so_and_loses_nothing_written_before(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=1))
        log.append("t", [Message(b"kept")])
        (pages,) = log._writer.execute("PRAGMA page_count").fetchone()
        log._writer.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk had room for 2 pages
        with pytest.raises(StorageError, match="disk is full"):
            log.append("t", [Message(bytes(100_000))])
        assert [record.value for record in log.read("t", 0, 0)] == [b"kept"]
        assert log.latest_offset("t", 0) == 1


@pytest.mark.parametrize(
    "headers",
    [(("trace", None),), (("trace", "text"),), ((1, b"x"),), (("a", b"x", b"y"),), ("ab",), 5, None],
    ids=["value None", "value str", "name int", "a triple", "not pairs", "not iterable", "None"],
)
def test_a_message_whose_headers_are_not_str_bytes_pairs_is_refused_and_its_partition_stays_readable(
    tmp_path: Path, headers: Any
) -> None:
    """Stored, such a header made the whole batch undecodable: every later read of the
    partition met a CorruptRecord. It is refused where the message is made."""
    with connect(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.create_topic("t", TopicConfig(partitions=1))
        with pytest.raises(InvalidConfig, match=r"a message's headers are \(str, bytes\) pairs, got "):
            log.append("t", [Message(b"bad", None, headers)])
        log.append("t", [Message(b"ok", None, (("trace", b"1"),))])
        assert [(r.offset, r.value, r.headers) for r in log.read("t", 0, 0)] == [(0, b"ok", (("trace", b"1"),))]


def test_every_flipped_bit_of_a_stored_batch_is_a_corrupt_record_naming_it(tmp_path: Path) -> None:
    """SQLite checks its pages, not the bytes of a blob: without a checksum about half of the
    single-bit flips of a batch decoded into other keys, values or headers, delivered as if
    they were the records written. Each one is caught now, and the next batch reads as written."""
    path = tmp_path / "log.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=1))
        log.append("t", [Message(b'{"n": 1}', b"k1", (("ce_id", b"a"),)), Message(b"[2]", None, (("h", b""),))])
        log.append("t", [Message(b"next")])
        with sqlite3.connect(path, isolation_level=None) as conn:
            rowid, body = conn.execute("SELECT id, body FROM batches ORDER BY id LIMIT 1").fetchone()
            for bit in range(len(body) * 8):
                flipped = bytearray(body)
                flipped[bit // 8] ^= 1 << (bit % 8)
                conn.execute("UPDATE batches SET body = ? WHERE id = ?", (bytes(flipped), rowid))
                with pytest.raises(CorruptRecord, match=r"^corrupt records t/0@0-1: the stored batch does not decode"):
                    log.read("t", 0, 0)
                assert [r.value for r in log.read("t", 0, 2)] == [b"next"]
        conn.close()


def test_a_file_of_schema_3_gets_checksums_for_the_batches_written_from_then_on(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=1))
        log.append("t", [Message(b"before")])
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("ALTER TABLE batches DROP COLUMN crc")
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    with SqliteLog(path) as log:
        log.append("t", [Message(b"after")])
        assert [r.value for r in log.read("t", 0, 0)] == [b"before", b"after"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (sqlite_format.SCHEMA_VERSION,)
        assert [crc is None for (crc,) in conn.execute("SELECT crc FROM batches ORDER BY id")] == [True, False]
    conn.close()
