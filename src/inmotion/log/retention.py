"""Which records retention and compaction remove; shared by the backends that store records.

Delete policy: the oldest records go while they are older than `retention_ms` or while the
partition holds more than `retention_bytes`. Compact policy: a record goes when a newer record
has the same key; a tombstone (None value) that is the newest for its key goes once it is older
than `retention_ms` (default one day, Kafka's `delete.retention.ms`).
"""

from __future__ import annotations

from collections.abc import Iterable

from inmotion.log.base import TopicConfig

TOMBSTONE_RETENTION_MS = 24 * 3600 * 1000

# (offset, timestamp, key, is_tombstone, size) of one record, oldest first
RetentionRow = tuple[int, int, bytes | None, bool, int]


def plan_removals(config: TopicConfig, rows: Iterable[RetentionRow], total_bytes: int, now_ms: int) -> list[int]:
    """The offsets to remove, in ascending order. Reads `rows` only as far as it must."""
    if config.compact:
        return _compaction(config, rows, now_ms)
    return _expiry(config, rows, total_bytes, now_ms)


def needs_scan(config: TopicConfig) -> bool:
    return config.compact or config.retention_ms is not None or config.retention_bytes is not None


def _expiry(config: TopicConfig, rows: Iterable[RetentionRow], total_bytes: int, now_ms: int) -> list[int]:
    cutoff = None if config.retention_ms is None else now_ms - config.retention_ms
    limit = config.retention_bytes
    remaining = total_bytes
    doomed: list[int] = []
    for offset, timestamp, _key, _tombstone, size in rows:
        expired = cutoff is not None and timestamp < cutoff
        oversize = limit is not None and remaining > limit
        if not (expired or oversize):
            break
        doomed.append(offset)
        remaining -= size
    return doomed


def _compaction(config: TopicConfig, rows: Iterable[RetentionRow], now_ms: int) -> list[int]:
    cutoff = now_ms - (config.retention_ms or TOMBSTONE_RETENTION_MS)
    newest: dict[bytes | None, tuple[int, int, bool]] = {}
    doomed: list[int] = []
    for offset, timestamp, key, tombstone, _size in rows:
        previous = newest.get(key)
        if previous is not None and key is not None:
            doomed.append(previous[0])
        newest[key] = (offset, timestamp, tombstone)
    doomed.extend(offset for offset, timestamp, tombstone in newest.values() if tombstone and timestamp < cutoff)
    doomed.sort()
    return doomed
