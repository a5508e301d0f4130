"""The one table of positions in an inmotion SQLite file (STYLE.md point 10): a group's offsets,
an event-store cursor, a projection's positions, later workflows' and SQL jobs'. Every function
runs inside the caller's transaction, so a position is written with the effects it tracks, and
a reset or a topic re-created has one place to clear."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (
    kind TEXT NOT NULL,
    tracker TEXT NOT NULL,
    source TEXT NOT NULL,
    partition INTEGER NOT NULL,
    position INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, tracker, source, partition)
) WITHOUT ROWID;
"""

_INSERT = "INTO positions (kind, tracker, source, partition, position, updated_ms) VALUES (?, ?, ?, ?, ?, ?)"
# An overwrite REPLACEs the row: on this key of three texts and a number SQLite's upsert (DO
# UPDATE) costs a group commit noticeably more; the figures are in the commit that chose it.
_OVERWRITE = "INSERT OR REPLACE " + _INSERT
# A consumer's commits only move forward: a redelivered batch, or a commit made late by a member
# paused past its session, must not take the position back.
_FORWARD = (
    "INSERT " + _INSERT + " ON CONFLICT (kind, tracker, source, partition)"
    " DO UPDATE SET position = max(position, excluded.position), updated_ms = excluded.updated_ms"
)


def load(conn: sqlite3.Connection, kind: str, tracker: str, source: str) -> dict[int, int]:
    """The tracker's positions in `source`, by partition."""
    rows = conn.execute(
        "SELECT partition, position FROM positions WHERE kind = ? AND tracker = ? AND source = ?",
        (kind, tracker, source),
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def save(
    conn: sqlite3.Connection,
    kind: str,
    tracker: str,
    source: str,
    positions: Mapping[int, int],
    *,
    forward_only: bool = False,
) -> None:
    now = int(time.time() * 1000)
    conn.executemany(
        _FORWARD if forward_only else _OVERWRITE,
        [(kind, tracker, source, p, o, now) for p, o in positions.items()],
    )


def clear_source(conn: sqlite3.Connection, source: str) -> None:
    """Forget every tracker's positions in `source` (a topic deleted: created again, it starts
    from nothing)."""
    conn.execute("DELETE FROM positions WHERE source = ?", (source,))


def clear_tracker(conn: sqlite3.Connection, kind: str, tracker: str) -> None:
    conn.execute("DELETE FROM positions WHERE kind = ? AND tracker = ?", (kind, tracker))


def trackers(conn: sqlite3.Connection, kind: str, source: str | None = None) -> list[str]:
    """The trackers of `kind` with a position (in `source`, if given), sorted."""
    if source is None:
        rows = conn.execute("SELECT DISTINCT tracker FROM positions WHERE kind = ? ORDER BY tracker", (kind,))
    else:
        rows = conn.execute(
            "SELECT DISTINCT tracker FROM positions WHERE kind = ? AND source = ? ORDER BY tracker", (kind, source)
        )
    return [t for (t,) in rows.fetchall()]


def sources(conn: sqlite3.Connection, kind: str, tracker: str) -> list[str]:
    """The sources in which the tracker has a position, sorted."""
    rows = conn.execute(
        "SELECT DISTINCT source FROM positions WHERE kind = ? AND tracker = ? ORDER BY source", (kind, tracker)
    )
    return [s for (s,) in rows.fetchall()]
