import sqlite3

import pytest

from inmotion.log.sqlite import positions


@pytest.fixture
def conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(positions.SCHEMA)
    return conn


def test_save_overwrites_and_load_reads_back(conn: sqlite3.Connection) -> None:
    positions.save(conn, "group", "g", "orders", {0: 5, 1: 7})
    positions.save(conn, "group", "g", "orders", {0: 3})
    assert positions.load(conn, "group", "g", "orders") == {0: 3, 1: 7}
    assert positions.load(conn, "projection", "g", "orders") == {}


def test_forward_only_never_moves_back(conn: sqlite3.Connection) -> None:
    positions.save(conn, "group", "g", "orders", {0: 5})
    positions.save(conn, "group", "g", "orders", {0: 3, 1: 2}, forward_only=True)
    assert positions.load(conn, "group", "g", "orders") == {0: 5, 1: 2}


def test_clear_source_clears_every_kind(conn: sqlite3.Connection) -> None:
    positions.save(conn, "group", "g", "orders", {0: 5})
    positions.save(conn, "projection", "p", "orders", {0: 5})
    positions.save(conn, "group", "g", "other", {0: 1})
    positions.clear_source(conn, "orders")
    assert positions.load(conn, "group", "g", "orders") == {}
    assert positions.load(conn, "projection", "p", "orders") == {}
    assert positions.load(conn, "group", "g", "other") == {0: 1}


def test_trackers_and_sources(conn: sqlite3.Connection) -> None:
    positions.save(conn, "group", "b", "orders", {0: 1})
    positions.save(conn, "group", "a", "other", {0: 1})
    positions.save(conn, "cursor", "relay", "store", {0: 1})
    assert positions.trackers(conn, "group") == ["a", "b"]
    assert positions.trackers(conn, "group", "orders") == ["b"]
    assert positions.sources(conn, "group", "a") == ["other"]
    positions.clear_tracker(conn, "group", "a")
    assert positions.trackers(conn, "group") == ["b"]
