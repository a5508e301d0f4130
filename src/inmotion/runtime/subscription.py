"""What a subscription asks for: topics, group, handler, filter and delivery options."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, get_args

from inmotion.errors import InvalidConfig
from inmotion.log import TopicPartition
from inmotion.log.base import check_group_name, check_topic_name
from inmotion.runtime.filters import EventFilter
from inmotion.runtime.handler import Handler
from inmotion.runtime.retry import Retry

OnCorrupt = Literal["stop", "skip", "dead-letter"]


class PartitionWatcher(Protocol):
    """Told which partitions the group gives a subscription in this process: `assigned` once
    its worker is ready, `released` before the partition's lease is given up, or with `lost`
    once the lease has lapsed (another member may hold it already), so that state kept per
    partition moves with it."""

    async def assigned(self, tp: TopicPartition) -> None: ...

    async def released(self, tp: TopicPartition, *, lost: bool) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    topics: tuple[str, ...]
    group: str
    handler: Handler
    filter: EventFilter | None
    retry: Retry
    dead_letter: str | None
    """The dead-letter topic, or None to retry a failing event forever (its partition waits)."""
    concurrency: int
    idempotent: bool
    transaction: bool
    dedupe_window: float
    on_corrupt: OnCorrupt
    """What becomes of stored records that the log cannot decode (`CorruptRecord`): the
    partition stops there, or they are skipped, or their raw bytes are dead-lettered."""
    partitions: PartitionWatcher | None = None

    def __post_init__(self) -> None:
        if not self.topics:
            raise InvalidConfig("subscribe to at least one topic")
        for topic in self.topics:
            check_topic_name(topic)
        check_group_name(self.group)
        if self.dead_letter is not None:
            check_topic_name(self.dead_letter)
            if self.dead_letter in self.topics:
                raise InvalidConfig(f"the dead-letter topic {self.dead_letter!r} cannot be a subscribed topic")
        if (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or not 1 <= self.concurrency <= 1000
        ):
            raise InvalidConfig(f"concurrency must be an integer between 1 and 1000, got {self.concurrency!r}")
        if self.on_corrupt not in get_args(OnCorrupt):
            raise InvalidConfig(f"on_corrupt must be 'stop', 'skip' or 'dead-letter', got {self.on_corrupt!r}")
        if self.on_corrupt == "dead-letter" and self.dead_letter is None:
            raise InvalidConfig("on_corrupt='dead-letter' needs a dead-letter topic, and dead_letter=False gives none")
        if self.dedupe_window <= 0:
            raise InvalidConfig(f"dedupe_window must be positive, got {self.dedupe_window!r}")

    @property
    def keeps_dedupe_records(self) -> bool:
        """Does the group record the events it handled? An idempotent one does; so does a
        transactional one with `concurrency` > 1, where an event can finish before an earlier
        one of another key: its position cannot pass it, so only its dedupe record, committed
        with its effects, keeps it from being handled again after a restart."""
        return self.idempotent or (self.transaction and self.concurrency > 1)
