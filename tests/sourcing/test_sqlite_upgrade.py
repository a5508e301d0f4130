"""Files whose event store and read models kept positions in tables of their own (event store
schema 1: es_cursors; projection schema 1: es_projection_positions) move them into the file's
one positions table; a file written by this version opens unchanged."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import ClassVar

import pytest

import inmotion
from inmotion.errors import StorageError
from inmotion.log.sqlite import format as log_format
from inmotion.log.sqlite import store as store_module
from inmotion.log.sqlite.file import APPLICATION_ID
from inmotion.sourcing import EventStore, NewEvent, OutboxRelay, Projection, Projector, TopicSource

from .test_projection import Balances, open_accounts

ES_CURSORS = "CREATE TABLE es_cursors (name TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID"
GROUP_OFFSETS = """CREATE TABLE group_offsets (grp TEXT NOT NULL, topic_id INTEGER NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, committed_ms INTEGER NOT NULL, PRIMARY KEY (grp, topic_id, partition)) WITHOUT ROWID"""


class Other(Projection):
    name = "other"
    tables: ClassVar[dict[str, str]] = {"others": "CREATE TABLE {others} (n INTEGER)"}


def test_an_event_store_of_schema_1_in_a_log_of_schema_2_has_its_cursors_moved(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = directory / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)  # as inmotion wrote it before the positions table
    conn.executescript(f"{log_format.SCHEMA}{GROUP_OFFSETS};{store_module._SCHEMA}{ES_CURSORS};")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    conn.execute("CREATE TABLE es_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO es_meta VALUES ('event_store_schema', 1)")
    conn.executemany("INSERT INTO es_events VALUES (?, 's', ?, 'Counted', 1, ?, 0, '{}')", [(1, 1, "a"), (2, 2, "b")])
    conn.execute("INSERT INTO es_cursors VALUES ('outbox:accounts', 1), ('audit', 2)")
    conn.close()
    with caplog.at_level(logging.WARNING, "inmotion.log.sqlite"), EventStore(f"sqlite:///{path}") as store:
        assert (store.recorder.cursor("outbox:accounts"), store.recorder.cursor("audit")) == (1, 2)
        relay = OutboxRelay(store, "memory://", "accounts")
        assert relay.pending() == 1
        relay.close()
    assert any("event_store_schema 2: relays' cursors in the positions table" in m for m in caplog.messages)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (log_format.SCHEMA_VERSION,)
        assert check.execute("SELECT value FROM es_meta WHERE key = 'event_store_schema'").fetchone() == (2,)
        assert (
            check.execute("SELECT 1 FROM sqlite_master WHERE name IN ('es_cursors', 'group_offsets')").fetchall() == []
        )
        assert check.execute(
            "SELECT kind, tracker, source, partition, position FROM positions ORDER BY tracker"
        ).fetchall() == [
            ("cursor", "audit", "store:all", 0, 2),
            ("cursor", "outbox:accounts", "store:all", 0, 1),
        ]
    check.close()


def _as_projection_schema_1(path: Path, rows: list[tuple[str, int, str, int]]) -> None:
    """Turn a read model's file back into projection schema 1: its positions in their own table,
    by (name, generation, cursor), cursor 'store' or a partition number as text."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(
            "CREATE TABLE es_projection_positions (name TEXT NOT NULL, generation INTEGER NOT NULL,"
            " cursor TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (name, generation, cursor)) WITHOUT ROWID"
        )
        conn.executemany("INSERT INTO es_projection_positions VALUES (?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM positions WHERE kind = 'projection'")
        conn.execute("UPDATE es_meta SET value = 1 WHERE key = 'projection_schema'")
    conn.close()


def test_a_read_model_of_schema_1_moves_each_projection_s_positions_as_it_is_opened(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    read_model = directory / "read.db"
    with EventStore(f"sqlite:///{directory / 'store.db'}") as store, inmotion.connect("memory://") as log:
        open_accounts(store, 2)
        log.create_topic("accounts", inmotion.TopicConfig(partitions=2))
        with Projector(Balances(), store, read_model) as projector:
            assert projector.run_once() == 8
        Projector(Other(), TopicSource(log, "accounts"), read_model).close()
        _as_projection_schema_1(read_model, [("balances", 1, "store", 9), ("other", 1, "0", 3), ("other", 1, "1", 4)])

        with (
            caplog.at_level(logging.WARNING, "inmotion.log.sqlite"),
            Projector(Balances(), store, read_model) as projector,
        ):
            assert projector.positions() == {0: 9}
            assert projector.run_once() == 0  # nothing applied twice
            assert projector.query("SELECT sum(balance) FROM balances") == [(12,)]
        assert any("projection 'balances'" in m for m in caplog.messages)
        with sqlite3.connect(read_model) as check:
            assert check.execute("SELECT value FROM es_meta WHERE key = 'projection_schema'").fetchone() == (2,)
            assert check.execute("SELECT name FROM es_projection_positions").fetchall() == [("other",), ("other",)]
        check.close()

        with Projector(Other(), TopicSource(log, "accounts"), read_model) as other:
            assert other.positions() == {0: 3, 1: 4}
        with sqlite3.connect(read_model) as check:
            assert check.execute("SELECT 1 FROM sqlite_master WHERE name = 'es_projection_positions'").fetchall() == []
            assert check.execute(
                "SELECT tracker, source, partition, position FROM positions WHERE kind = 'projection' ORDER BY 1, 3"
            ).fetchall() == [
                ("balances__g1", "store:all", 0, 9),
                ("other__g1", "accounts", 0, 3),
                ("other__g1", "accounts", 1, 4),
            ]
        check.close()


def test_a_file_of_this_version_opens_unchanged(directory: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = directory / "one.db"
    with EventStore(f"sqlite:///{path}") as store:
        store.append("s", [NewEvent("Counted", {"n": 1})], 0)
        store.recorder.save_cursor("relay", 1)
        with Projector(Balances(), store, path) as projector:
            projector.run_once()
    watcher = sqlite3.connect(path, isolation_level=None)
    (before,) = watcher.execute("PRAGMA data_version").fetchone()
    dump = list(watcher.iterdump())
    with caplog.at_level(logging.WARNING, "inmotion.log.sqlite"), EventStore(f"sqlite:///{path}") as store:
        assert store.recorder.cursor("relay") == 1
        with Projector(Balances(), store, path) as projector:
            assert projector.positions() == {0: 2}
    assert caplog.messages == []
    assert watcher.execute("PRAGMA data_version").fetchone() == (before,)
    assert list(watcher.iterdump()) == dump
    assert (
        watcher.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'es_%positions' OR name = 'es_cursors'"
        ).fetchall()
        == []
    )
    watcher.close()


def test_an_event_store_refuses_a_file_of_a_newer_log_schema(directory: Path) -> None:
    path = directory / "new.db"
    EventStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {log_format.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer inmotion"):
        EventStore(f"sqlite:///{path}")
