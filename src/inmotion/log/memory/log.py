"""`memory://`: the in-memory twin of the log, for tests. One process, nothing kept."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence

from inmotion.errors import Closed, TopicExists, UnknownPartition, UnknownTopic
from inmotion.log.base import (
    Log,
    Message,
    PartitionInfo,
    Position,
    Record,
    TopicConfig,
    TopicInfo,
    as_bytes,
    check_blobs,
    check_group_name,
    check_topic_name,
)
from inmotion.log.memory.groups import MemoryCoordinator
from inmotion.log.retention import plan_removals


class _Partition:
    __slots__ = ("bytes", "last_timestamp", "next_offset", "records")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.next_offset = 0
        self.last_timestamp = 0
        self.bytes = 0

    @property
    def earliest(self) -> int:
        return self.records[0].offset if self.records else self.next_offset


class MemoryLog(Log):
    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self._coordinator: MemoryCoordinator | None = None
        self._coordinator_lock = threading.Lock()
        self.url = url
        self._topics: dict[str, tuple[TopicConfig, list[_Partition]]] = {}
        self._topic_ids: dict[str, int] = {}
        self._created = itertools.count(1)
        self._groups: dict[str, dict[str, dict[int, int]]] = {}
        self._changed = threading.Condition()
        self._closed = False

    def _topic(self, name: str) -> tuple[TopicConfig, list[_Partition]]:
        if self._closed:
            raise Closed("the log is closed")
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopic(name) from None

    def _partition(self, topic: str, partition: int) -> _Partition:
        partitions = self._topic(topic)[1]
        if not 0 <= partition < len(partitions):
            raise UnknownPartition(topic, partition)
        return partitions[partition]

    def create_topic(self, name: str, config: TopicConfig = TopicConfig()) -> None:
        check_topic_name(name)
        with self._changed:
            if name in self._topics:
                raise TopicExists(name)
            self._topics[name] = (config, [_Partition() for _ in range(config.partitions)])
            self._topic_ids[name] = next(self._created)

    def delete_topic(self, name: str) -> None:
        with self._changed:
            self._topic(name)
            del self._topics[name]
            for topics in self._groups.values():
                topics.pop(name, None)
            self._changed.notify_all()

    def topic_id(self, name: str) -> str:
        with self._changed:
            self._topic(name)
            return str(self._topic_ids[name])

    def list_topics(self) -> list[str]:
        with self._changed:
            return sorted(self._topics)

    def describe_topic(self, name: str) -> TopicInfo:
        with self._changed:
            config, partitions = self._topic(name)
            infos = tuple(PartitionInfo(i, p.earliest, p.next_offset) for i, p in enumerate(partitions))
            return TopicInfo(name, config, infos)

    def partition_count(self, topic: str) -> int:
        with self._changed:
            return len(self._topic(topic)[1])

    def append(self, topic: str, messages: Sequence[Message]) -> list[Position]:
        return self.append_records(topic, messages)[0]

    def append_records(self, topic: str, messages: Sequence[Message]) -> tuple[list[Position], list[Record]]:
        check_blobs([m.key for m in messages], [m.value for m in messages])
        with self._changed:
            partitions = self._topic(topic)[1]
            targets = self.partitions_of(messages, len(partitions))
            for target in targets:
                if not 0 <= target < len(partitions):
                    raise UnknownPartition(topic, target)
            now = int(time.time() * 1000)
            positions = []
            records = []
            for message, target in zip(messages, targets, strict=True):
                part = partitions[target]
                part.last_timestamp = max(part.last_timestamp, now)
                record = Record(
                    topic,
                    target,
                    part.next_offset,
                    part.last_timestamp,
                    as_bytes(message.key),
                    as_bytes(message.value),
                    tuple(message.headers),
                )
                part.records.append(record)
                records.append(record)
                part.bytes += _size(record)
                positions.append(Position(target, part.next_offset))
                part.next_offset += 1
            self._changed.notify_all()
            return positions, records

    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        with self._changed:
            records = self._partition(topic, partition).records
            start = _bisect_offset(records, offset)
            return records[start : start + limit]

    def wait(self, topic: str, positions: Mapping[int, int], timeout: float) -> bool:
        def ready() -> bool:
            return (
                self._closed
                or topic not in self._topics
                or any(self._partition(topic, p).next_offset > offset for p, offset in positions.items())
            )

        with self._changed:
            return self._changed.wait_for(ready, timeout) and not self._closed

    def earliest_offset(self, topic: str, partition: int) -> int:
        with self._changed:
            return self._partition(topic, partition).earliest

    def latest_offset(self, topic: str, partition: int) -> int:
        with self._changed:
            return self._partition(topic, partition).next_offset

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        with self._changed:
            part = self._partition(topic, partition)
            for record in part.records:
                if record.timestamp >= timestamp_ms:
                    return record.offset
            return part.next_offset

    def commit(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> None:
        check_group_name(group)
        with self._changed:
            for partition in offsets:
                self._partition(topic, partition)
            stored = self._groups.setdefault(group, {}).setdefault(topic, {})
            if forward_only:
                offsets = {p: max(o, stored.get(p, o)) for p, o in offsets.items()}
            stored.update(offsets)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._changed:
            self._topic(topic)
            return dict(self._groups.get(group, {}).get(topic, {}))

    def group_topics(self, group: str) -> list[str]:
        with self._changed:
            return sorted(topic for topic, offsets in self._groups.get(group, {}).items() if offsets)

    def list_groups(self) -> list[str]:
        with self._changed:
            return sorted(g for g, topics in self._groups.items() if topics)

    def enforce_retention(self, now_ms: int | None = None) -> int:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        removed = 0
        with self._changed:
            for config, partitions in self._topics.values():
                for part in partitions:
                    rows = [(r.offset, r.timestamp, r.key, r.value is None, _size(r)) for r in part.records]
                    doomed = plan_removals(config, rows, part.bytes, now_ms)
                    if doomed:
                        part.records = [r for r in part.records if r.offset not in doomed]
                        part.bytes = sum(_size(r) for r in part.records)
                        removed += len(doomed)
        return removed

    def group_coordinator(self) -> MemoryCoordinator:
        """The one coordinator of this log's groups (its state lives in it; closing it is a no-op)."""
        with self._coordinator_lock:
            if self._coordinator is None:
                self._coordinator = MemoryCoordinator()
            return self._coordinator

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def _size(record: Record) -> int:
    return len(record.value or b"") + len(record.key or b"") + sum(len(k) + len(v) for k, v in record.headers)


def _bisect_offset(records: list[Record], offset: int) -> int:
    lo, hi = 0, len(records)
    while lo < hi:
        mid = (lo + hi) // 2
        if records[mid].offset < offset:
            lo = mid + 1
        else:
            hi = mid
    return lo
