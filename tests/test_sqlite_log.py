"""What only the embedded SQLite log must do: share one file between processes, survive
kill -9, and turn locked, corrupt or unreadable files into one clear StorageError."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import inmotion
from inmotion.errors import InvalidConfig, StorageError
from inmotion.log import Message, TopicConfig
from inmotion.log.sqlite import SqliteLog

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
    ["sqlite:///x.db?durability=sometimes", "sqlite:///x.db?colour=blue", "sqlite:///x.db?timeout=soon", "sqlite://"],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidConfig):
        inmotion.connect(url)


def test_unknown_scheme() -> None:
    with pytest.raises(InvalidConfig, match="unknown broker URL"):
        inmotion.connect("redis://localhost")


def test_background_checkpoint_keeps_the_wal_bounded(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with SqliteLog(path) as log:
        log.create_topic("t", TopicConfig(partitions=1))
        for _ in range(20):
            log.append("t", [Message(b"x" * 1000) for _ in range(500)])
        log.checkpoint()
        assert log.latest_offset("t", 0) == 10_000
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 64 * 1024 * 1024
