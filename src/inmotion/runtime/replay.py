"""Replay: a consumer group's offsets moved back (or forward) on a topic, so that it handles the
events from there again; what `inmotion replay` and the gateway's admin API do.

An idempotent group skips events it has dedupe records for: a replay tells how many of the
replayed events that is, and may forget those records first so that they are handled again."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events.codec import source_and_id
from inmotion.log import Coordinator, Log, Record
from inmotion.log.scan import batches_until_now


@dataclasses.dataclass(frozen=True, slots=True)
class Moved:
    """One partition's replay: the group's offset before and after, the events from there on,
    and how many of them the group has (or had, when forgotten) dedupe records for."""

    partition: int
    before: int | None
    after: int
    events: int
    dedupe_records: int

    def document(self, topic: str, group: str, forgotten: bool) -> dict[str, object]:
        return {
            "topic": topic,
            "group": group,
            "partition": self.partition,
            "from": self.before,
            "to": self.after,
            "events": self.events,
            "dedupe_records": self.dedupe_records,
            "dedupe_forgotten": forgotten,
        }


def replay(
    log: Log,
    coordinator: Coordinator,
    topic: str,
    group: str,
    *,
    from_beginning: bool = False,
    since_ms: int | None = None,
    offset: int | None = None,
    partitions: Sequence[int] = (),
    force: bool = False,
    forget_dedupe: bool = False,
) -> list[Moved]:
    """Move `group`'s offsets on `topic` (every partition, or `partitions`) to the earliest
    offset, the first at or after `since_ms`, or `offset` (within what the partition holds):
    exactly one of the three. InvalidConfig while the group has live members, unless `force`."""
    if sum((from_beginning, since_ms is not None, offset is not None)) != 1:
        raise InvalidConfig("choose exactly one of from the beginning, since a time and an offset")
    count = log.partition_count(topic)
    chosen = sorted(set(partitions)) if partitions else list(range(count))
    for p in chosen:
        if not 0 <= p < count:
            raise InvalidConfig(f"topic {topic!r} has no partition {p} (it has {count})")
    live = coordinator.members(group)
    if live and not force:
        raise InvalidConfig(
            f"group {group!r} has {len(live)} live member(s) ({', '.join(m.member_id for m in live)}):"
            " stop them first or force it"
        )
    targets = {}
    for p in chosen:
        earliest, latest = log.earliest_offset(topic, p), log.latest_offset(topic, p)
        if from_beginning:
            targets[p] = earliest
        elif since_ms is not None:
            targets[p] = log.offset_for_time(topic, p, since_ms)
        else:
            assert offset is not None
            targets[p] = min(max(offset, earliest), latest)
    before = log.committed(group, topic)
    moved = [
        Moved(p, before.get(p), target, *_replayed(log, coordinator, group, topic, p, target, forget_dedupe))
        for p, target in targets.items()
    ]
    log.commit(group, topic, targets)
    return moved


def _replayed(
    log: Log, coordinator: Coordinator, group: str, topic: str, partition: int, start: int, forget: bool
) -> tuple[int, int]:
    """How many events the partition holds from `start` on, and for how many of them `group`
    has dedupe records (which, with `forget`, are forgotten). Records that are no CloudEvent
    have none: a consumer dead-letters them."""
    events = deduped = 0
    for records in batches_until_now(log, topic, partition, start):
        keys = []
        for record in records:
            with contextlib.suppress(InvalidEvent):
                keys.append(_event_key(record))
        if keys:
            deduped += coordinator.forget(group, keys) if forget else len(coordinator.seen(group, keys))
        events += len(records)
    return events, deduped


def _event_key(record: Record) -> tuple[str, str]:
    """(source, id), as the consumer keys dedupe records: from the headers of the binary
    binding, else from the decoded event."""
    try:
        return source_and_id(record.headers)
    except InvalidEvent:
        event = record.event()
        return event.source, event.id
