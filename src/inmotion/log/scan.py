"""Reading a partition through to where it ended when the reading began (a snapshot for
commands and pages that look at what is there, not at what comes meanwhile)."""

from __future__ import annotations

from collections.abc import Iterator

from inmotion.log.base import Log, Record

_SCAN = 1000


def batches_until_now(log: Log, topic: str, partition: int, start: int) -> Iterator[list[Record]]:
    """The partition's records from `start` up to where it ended when called, in batches."""
    offset, end = start, log.latest_offset(topic, partition)
    while offset < end:
        records = [r for r in log.read(topic, partition, offset, min(_SCAN, end - offset)) if r.offset < end]
        if not records:
            return
        yield records
        offset = records[-1].offset + 1


def newest_by_key(log: Log, topic: str) -> dict[bytes, Record]:
    """The newest record of each key of `topic` (what compaction keeps), tombstones (a None
    value) included; records without a key are left out."""
    newest: dict[bytes, Record] = {}
    for partition in range(log.partition_count(topic)):
        for records in batches_until_now(log, topic, partition, log.earliest_offset(topic, partition)):
            for record in records:
                if record.key is not None:
                    newest[record.key] = record
    return newest
