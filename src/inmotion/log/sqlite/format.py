"""How the embedded log's records sit in its SQLite file: the tables, batches (a row per
append to a partition: msgpack columns of keys, values and headers, with a CRC-32), rowids that
encode partition and offset, reading records out of a batch, and the upgrades of files written
by older schemas."""

from __future__ import annotations

import bisect
import itertools
import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any

import msgspec

from inmotion.errors import CorruptRecord
from inmotion.log.base import Headers, Record
from inmotion.log.sqlite import positions

SCHEMA_VERSION = 4
BATCH = 512
"""Most records in one stored batch. An append stores each partition's records as one row (a
row per record cost SQLite 3-4 us each, a batch costs about one row plus its bytes); a read
that starts inside a batch decodes all of it."""
# Records are stored in batches, one row each: the records of one append to one partition, up
# to BATCH of them. A batch's rowid is (log_id << 40) + the offset of the last record it was
# written with: each partition owns one contiguous rowid range, so appends, reads and deletes
# are rowid range operations on a single b-tree, the cheapest thing SQLite does, and the batch
# holding offset x is the first at or after rowid (log_id << 40) + x. log_ids come from
# AUTOINCREMENT and are never reused.
OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    retention_ms INTEGER,
    retention_bytes INTEGER,
    compact INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
    log_id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL DEFAULT 0,
    last_timestamp INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic_id, partition)
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    first INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    body BLOB NOT NULL,
    crc INTEGER
);
"""
# `crc`: the CRC-32 of `body`, NULL in batches written before schema 4. SQLite checks its pages,
# not the bytes of a blob: without it, most flipped bits of a body decode into other data.

# A batch's body: its records' keys, values and headers, and their offsets (nil while they are
# consecutive from the batch's `first`, as appended; retention and compaction leave gaps).
# All of a batch's records were appended together and share its timestamp.
Body = tuple[list[bytes | None], list[bytes | None], list[Headers], list[int] | None]
_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(Body)  # typed: a damaged body fails here, not in a consumer


def decode_body(topic: str, partition: int, rowid: int, first: int, blob: bytes, crc: int | None) -> Body:
    """A stored batch's body; CorruptRecord, naming the batch's offsets, when its checksum does
    not match, it does not decode or its columns do not fit together."""
    last = rowid & OFFSET_MASK
    if crc is not None and zlib.crc32(blob) != crc:
        raise CorruptRecord(
            topic, partition, first, last, "the stored batch does not decode: its checksum does not match", blob
        )
    try:
        body = _body_decoder.decode(blob)
    except msgspec.MsgspecError as exc:
        problem = str(exc)
    else:
        keys, values, headers, offsets = body
        count = len(keys)
        # retention may have removed a batch's last records: its offsets may end before `last`
        if (
            count > 0
            and len(values) == count
            and len(headers) == count
            and (
                first + count - 1 <= last
                if offsets is None
                else len(offsets) == count and offsets[0] == first and offsets[-1] <= last
            )
        ):
            return body
        problem = "its keys, values, headers and offsets do not fit together"
    raise CorruptRecord(topic, partition, first, last, f"the stored batch does not decode: {problem}", blob)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What a record counts towards a partition's `retention_bytes`."""
    return len(key or b"") + len(value or b"") + (len(_encoder.encode(headers)) if headers else 0)


def offsets_of(first: int, body: Body) -> Sequence[int]:
    return body[3] if body[3] is not None else range(first, first + len(body[0]))


def consecutive_body(keys: list[bytes | None], values: list[bytes | None], headers: list[Headers]) -> bytes:
    """A batch's body of records at consecutive offsets (an append's)."""
    return _encoder.encode((keys, values, headers, None))


def encode_body(records: list[tuple[int, Any, Any, Headers]]) -> bytes:
    """A batch's body of (offset, key, value, headers) records, ascending by offset."""
    offsets, keys, values, headers = (list(column) for column in zip(*records, strict=True))
    consecutive = offsets[-1] - offsets[0] == len(offsets) - 1
    return _encoder.encode((keys, values, headers, None if consecutive else offsets))


def create_tables(conn: sqlite3.Connection) -> None:
    for statement in (SCHEMA + positions.SCHEMA).split(";"):
        if statement.strip():
            conn.execute(statement)  # each IF NOT EXISTS: tables a file has already stay as they are


def positions_from_group_offsets(conn: sqlite3.Connection) -> None:
    """Upgrade a file of schema 2 (groups' offsets in a table of their own, by topic id) to the one
    positions table (STYLE.md point 10), inside the caller's transaction."""
    create_tables(conn)
    conn.execute(
        "INSERT INTO positions (kind, tracker, source, partition, position, updated_ms)"
        " SELECT 'group', g.grp, t.name, g.partition, g.offset, g.committed_ms"
        " FROM group_offsets g JOIN topics t ON t.id = g.topic_id"
    )
    conn.execute("DROP TABLE group_offsets")


def checksum_column(conn: sqlite3.Connection) -> None:
    """Upgrade a file of schema 3 (batches without a checksum) to 4, inside the caller's
    transaction: the batches it holds keep a NULL checksum, unchecked."""
    if "crc" not in {row[1] for row in conn.execute("PRAGMA table_info(batches)")}:
        conn.execute("ALTER TABLE batches ADD COLUMN crc INTEGER")


def batches_from_rows(conn: sqlite3.Connection) -> None:
    """Upgrade a file of schema 1 (a row per record) to batches, inside the caller's transaction."""
    create_tables(conn)
    decode = msgspec.msgpack.Decoder(Headers).decode
    batch: list[tuple[int, Any, Any, Headers]] = []  # (offset, key, value, headers) of one partition
    log_id = timestamp = 0

    def close_batch() -> None:  # written at once: a big file is never held in memory
        blob = encode_body(batch)
        conn.execute(
            "INSERT INTO batches (id, first, timestamp, body, crc) VALUES (?, ?, ?, ?, ?)",
            ((log_id << OFFSET_BITS) + batch[-1][0], batch[0][0], timestamp, blob, zlib.crc32(blob)),
        )
        batch.clear()

    # keys and values that schema 1 kept as SQLite text or integers become bytes, as stored now
    for rowid, stamp, key, value, headers in conn.execute(
        "SELECT id, timestamp, CAST(key AS BLOB), CAST(value AS BLOB), headers FROM records ORDER BY id"
    ):
        if batch and (rowid >> OFFSET_BITS != log_id or stamp != timestamp or len(batch) == BATCH):
            close_batch()
        log_id, timestamp = rowid >> OFFSET_BITS, stamp
        batch.append((rowid & OFFSET_MASK, key, value, decode(headers) if headers else ()))
    if batch:
        close_batch()
    conn.execute("DROP TABLE records")


def records_of(
    topic: str,
    partition: int,
    rowid: int,
    first: int,
    timestamp: int,
    blob: bytes,
    crc: int | None,
    offset: int,
    limit: int,
) -> list[Record]:
    """Up to `limit` records of a stored batch, from `offset` on."""
    body = decode_body(topic, partition, rowid, first, blob, crc)
    keys, values, headers, _ = body
    offsets = offsets_of(first, body)
    start = bisect.bisect_left(offsets, offset)  # a range bisects too
    end = start + limit
    # one Record per stored record with no Python bytecode run per record (mapped, not looped)
    return list(
        map(
            Record,
            itertools.repeat(topic),
            itertools.repeat(partition),
            offsets[start:end],
            itertools.repeat(timestamp),
            keys[start:end],
            values[start:end],
            headers[start:end],
        )
    )
