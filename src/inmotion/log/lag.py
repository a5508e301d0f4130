"""How far behind a consumer group is: per partition of each topic it reads, who owns it, the
committed offset, the latest offset and the difference (what `inmotion groups` and the
gateway's admin API and metrics show)."""

from __future__ import annotations

import dataclasses

from inmotion.errors import UnknownTopic
from inmotion.log.base import Log
from inmotion.log.groups import Coordinator, TopicPartition


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    owner: str | None
    committed: int | None
    latest: int

    @property
    def lag(self) -> int:
        return self.latest - (self.committed or 0)

    def document(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "owner": self.owner,
            "committed": self.committed,
            "latest": self.latest,
            "lag": self.lag,
        }


def group_lag(log: Log, coordinator: Coordinator, group: str) -> list[PartitionLag]:
    """The partitions of every topic the group reads (its members subscribe to, it owns or it
    has committed offsets on), in topic and partition order."""
    owners = coordinator.owners(group)
    topics = {topic for member in coordinator.members(group, live_only=False) for topic in member.topics}
    topics |= {tp.topic for tp in owners} | set(log.group_topics(group))
    states = []
    for topic in sorted(topics):
        try:
            committed = log.committed(group, topic)
            partitions = log.describe_topic(topic).partitions
        except UnknownTopic:  # deleted since
            continue
        for info in partitions:
            owner = owners.get(TopicPartition(topic, info.partition))
            states.append(PartitionLag(topic, info.partition, owner, committed.get(info.partition), info.latest))
    return states


def all_groups(log: Log, coordinator: Coordinator) -> list[str]:
    """Every group that has committed offsets or members."""
    return sorted(set(log.list_groups()) | set(coordinator.groups()))
