"""Damage a SQLite log's stored records the way a bad disk does: bytes of a batch's body change
and SQLite's own checks (`PRAGMA integrity_check`) still say ok."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from inmotion.log.sqlite.format import OFFSET_BITS


def flip_a_bit(body: bytes) -> bytes:
    """Bit 1 of the second byte: the length of the batch's list of keys (msgpack), so the body
    no longer decodes."""
    return body[:1] + bytes([body[1] ^ 0x02]) + body[2:]


def damage(
    path: Path | str, topic: str, partition: int, offset: int, change: Callable[[bytes], bytes] = flip_a_bit
) -> tuple[int, int]:
    """Change the body of the stored batch that holds `offset`; its (first, last) offsets."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        rowid, first, body = conn.execute(
            "SELECT b.id, b.first, b.body FROM batches b JOIN partitions p ON b.id >= (p.log_id << ?) + ?"
            " AND b.id < (p.log_id + 1) << ? JOIN topics t ON t.id = p.topic_id"
            " WHERE t.name = ? AND p.partition = ? ORDER BY b.id LIMIT 1",
            (OFFSET_BITS, offset, OFFSET_BITS, topic, partition),
        ).fetchone()
        conn.execute("UPDATE batches SET body = ? WHERE id = ?", (change(body), rowid))
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return first, rowid & ((1 << OFFSET_BITS) - 1)
