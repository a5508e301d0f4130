"""What every inmotion object on a SQLite file shares: the file a URL names, connections,
transactions, and sqlite3's errors as `StorageError` with a message a user can act on."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from inmotion.errors import Closed, InmotionError, InvalidConfig, StorageError

T = TypeVar("T")

APPLICATION_ID = 0x494E4D4F  # "INMO": the log, the event store and the groups share a file


def database_path(url: str, path: str) -> Path:
    """The file a `sqlite:///...` URL names: sqlite:///x.db is relative, sqlite:////x.db absolute."""
    if not path or path == "/":
        raise InvalidConfig(f"sqlite URL {url!r} names no file: use sqlite:///path/to/file.db")
    return Path(path[1:] if path.startswith("/") else path)


@contextlib.contextmanager
def translate_errors(path: Path, action: str, timeout: float) -> Iterator[None]:
    """sqlite3's exceptions as StorageError with a message a user can act on."""
    try:
        yield
    except InmotionError:
        raise
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            message = f"{path} is locked by another process (waited {timeout:g}s)"
        elif "disk is full" in text:  # SQLITE_FULL: the transaction was rolled back, nothing written
            message = f"cannot {action} {path}: the disk is full (nothing was written)"
        elif "not a database" in text or "malformed" in text:
            message = f"{path} is corrupt or not a SQLite database ({text})"
        elif "unable to open" in text or "readonly" in text or "disk I/O" in text:
            message = f"cannot {action} {path}: {text} (check that the file is readable and writable)"
        else:
            message = f"cannot {action} {path}: {text}"
        raise StorageError(message) from exc


def open_connection(path: Path, timeout: float) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) that waits `timeout` seconds for
    another process's write lock."""
    if not path.parent.exists():
        raise StorageError(f"cannot open {path}: directory {path.parent} does not exist")
    with translate_errors(path, "open", timeout):
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def immediate(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` in one `BEGIN IMMEDIATE` transaction: it holds the write lock of every process
    from the start, so what it reads stays true until it commits."""
    conn.execute("BEGIN IMMEDIATE")
    return finish(conn, work)


def finish(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` in the transaction just begun on `conn`, then commit; roll back if it fails."""
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return result


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the transaction a failure interrupted, if SQLite has not already: it rolls
    back by itself on some errors (SQLITE_FULL), and ROLLBACK would then hide them."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SqliteFile:
    """What every inmotion object on a SQLite file shares: one connection per thread for
    reading, one writer behind a lock, sqlite3's errors as StorageError, and a condition that
    wakes this process's waiters after each write. Subclasses open connections (`_connect`)
    and set `_writer`."""

    what = "the file"
    _writer: sqlite3.Connection

    def __init__(self, path: str | os.PathLike[str], timeout: float) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._appended = threading.Condition()
        self._closed = False

    def _keep(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Remember `conn` so that close() closes it."""
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        return self._keep(open_connection(self.path, self.timeout))

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise Closed(f"{self.what} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _translate(self, action: str) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.path, action, self.timeout)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one IMMEDIATE transaction on the writer connection."""
        with self._write_lock, self._translate("write to"):
            if self._closed:
                raise Closed(f"{self.what} is closed")
            result = immediate(self._writer, work)
        self._notify()
        return result

    def _write_now(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """Run `work` in a write transaction if the write lock is free at once (in this process
        and in the file): on an event loop, a write that waits for nobody costs less than a
        hand-over to a thread. False, with nothing done, if the lock is taken."""
        if not self._write_lock.acquire(blocking=False):
            return False  # another thread is writing
        try:
            conn = self._writer
            with self._translate("write to"):
                if self._closed:
                    raise Closed(f"{self.what} is closed")
                conn.execute("PRAGMA busy_timeout = 0")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:
                    return False  # another process holds the write lock
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                finish(conn, work)
        finally:
            self._write_lock.release()
        self._notify()
        return True

    def _notify(self) -> None:
        with self._appended:
            self._appended.notify_all()

    def _close_connections(self) -> None:
        self._closed = True
        self._notify()
        with self._write_lock, self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()


def refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file of another application before anything changes it (not even its
    journal mode): it is ours (our `application_id`) or new (no id, no tables)."""
    # one statement, one snapshot: another process may be creating the schema meanwhile
    app_id, tables = conn.execute(
        "SELECT application_id, (SELECT count(*) FROM sqlite_master) FROM pragma_application_id()"
    ).fetchone()
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StorageError(f"{path} is a SQLite database but not an inmotion log")


def use_wal(conn: sqlite3.Connection, path: Path, timeout: float) -> None:
    """Put the file in WAL mode. Switching takes an exclusive lock for which SQLite does not call
    the busy handler: processes opening a new file at once retry here, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise StorageError(f"{path} is locked by another process (waited {timeout:g}s)")
        time.sleep(0.005)
