"""Reading a partition through to where it ended when the reading began (a snapshot for
commands and pages that look at what is there, not at what comes meanwhile)."""

from __future__ import annotations

import threading
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
    return NewestByKey(log, topic).read()


class NewestByKey:
    """`newest_by_key` kept up to date: each `read` takes in only what was appended since the
    last one (a page scraped every few seconds does not read the topic again each time)."""

    def __init__(self, log: Log, topic: str) -> None:
        self.log = log
        self.topic = topic
        self._newest: dict[bytes, Record] = {}
        self._next: dict[int, int] = {}
        self._lock = threading.Lock()

    def read(self) -> dict[bytes, Record]:
        """The newest record of each key now (a copy). UnknownTopic while the topic is missing."""
        with self._lock:
            for partition in range(self.log.partition_count(self.topic)):
                start = max(self._next.get(partition, 0), self.log.earliest_offset(self.topic, partition))
                for records in batches_until_now(self.log, self.topic, partition, start):
                    for record in records:
                        if record.key is not None:
                            self._newest[record.key] = record
                    self._next[partition] = records[-1].offset + 1
            return dict(self._newest)
