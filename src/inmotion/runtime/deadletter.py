"""Dead-letter topics: the failed event, intact, with headers that say what went wrong.

The original record's key, value and headers (its CloudEvent) are kept as they were;
`dlq_*` headers are added. `redrive` appends entries back to their original topic without
the `dlq_*` headers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from inmotion.errors import InvalidConfig, InvalidEvent, TopicExists, UnknownTopic
from inmotion.events import Event
from inmotion.log import Log, Message, Record, TopicConfig

PREFIX = "dlq_"
FOR_GROUP = "inmotion-for-group"
"""The last header of a redriven record: only this consumer group handles it, the others skip
it. Consumers look for it in the last place only (`DeadLetter.original` puts it there), which
spares every other record a scan of its headers."""
_MAX_TRACEBACK = 8000
REDRIVE_GROUP = "inmotion.redrive"


def default_topic(group: str) -> str:
    """The dead-letter topic of a subscription's group: `<group>.dlq`, made a valid topic name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", group)[:245] + ".dlq"


def dead_letter(record: Record, error: BaseException, attempts: int, group: str, now: float) -> Message:
    """The message that carries `record` into a dead-letter topic."""
    trace = "".join(traceback.format_exception(error))[-_MAX_TRACEBACK:]
    added = {
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "error_message": str(error),
        "error_traceback": trace,
        "attempts": str(attempts),
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "group": group,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    # a value-less header (a Kafka client may write one) counts as absent, and a Message has none
    headers = tuple(h for h in record.headers if not h[0].startswith(PREFIX) and h[1] is not None)
    headers += tuple((PREFIX + name, value.encode()) for name, value in added.items())
    return Message(value=record.value, key=record.key, headers=headers)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter topic."""

    record: Record
    error: dict[str, str]
    """The `dlq_*` headers without their prefix: error_type, error_message, attempts, topic..."""

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        error = {
            name[len(PREFIX) :]: value.decode("utf-8", "replace")
            for name, value in record.headers
            if name.startswith(PREFIX)
        }
        if "topic" not in error:
            raise InvalidConfig(f"{record.topic} offset {record.offset} is not a dead-letter entry (no dlq_topic)")
        return cls(record, error)

    @property
    def original_topic(self) -> str:
        return self.error["topic"]

    def event(self) -> Event:
        return self.record.event()

    def event_or_none(self) -> Event | None:
        """The entry's CloudEvent; None for one that is not (a record of another producer, or
        the raw bytes of records that the log could not decode)."""
        try:
            return self.record.event()
        except InvalidEvent:
            return None

    def document(self, *, include_traceback: bool = False) -> dict[str, object]:
        """The entry as `inmotion dlq list --json` and the gateway show it."""
        event = self.event_or_none()
        document: dict[str, object] = {
            "dlq": self.record.topic,
            "dlq_partition": self.record.partition,
            "dlq_offset": self.record.offset,
            "id": None if event is None else event.id,
            "source": None if event is None else event.source,
            "type": None if event is None else event.type,
            "key": None if event is None else event.key,
        }
        document.update({k: v for k, v in self.error.items() if k != "error_traceback"})
        if include_traceback:
            document["error_traceback"] = self.error.get("error_traceback", "")
        return document

    def original(self, only_group: bool = False) -> Message:
        """The message as it was before it failed; with `only_group`, marked for the group
        that dead-lettered it alone."""
        headers = tuple(
            h for h in self.record.headers if not h[0].startswith(PREFIX) and h[0] != FOR_GROUP and h[1] is not None
        )
        if only_group:
            headers += ((FOR_GROUP, self.error["group"].encode()),)
        return Message(value=self.record.value, key=self.record.key, headers=headers)


def entries(log: Log, topic: str, start: int | None = None) -> Iterator[DeadLetter]:
    """Every entry of the dead-letter topic, partition by partition, from `start` (default:
    the earliest)."""
    for partition in range(log.partition_count(topic)):
        offset = log.earliest_offset(topic, partition) if start is None else start
        while True:
            batch = log.read(topic, partition, offset, 500)
            if not batch:
                break
            for record in batch:
                yield DeadLetter.from_record(record)
            offset = batch[-1].offset + 1


def redrive(
    log: Log,
    topic: str,
    accept: Callable[[DeadLetter], bool] = lambda entry: True,
    *,
    from_start: bool = False,
    to: str | None = None,
    only_group: bool = False,
) -> list[DeadLetter]:
    """Append the accepted entries back to their original topic (or `to`); with `only_group`
    just the group that dead-lettered an entry handles it again, the topic's other groups skip it.

    By default each entry is redriven once: a cursor (group `inmotion.redrive`) remembers
    how far previous redrives got; `from_start` ignores it.
    """
    if topic not in log.list_topics():
        raise UnknownTopic(topic)
    cursor = {} if from_start else log.committed(REDRIVE_GROUP, topic)
    sent: list[DeadLetter] = []
    ends: dict[int, int] = {}
    for partition in range(log.partition_count(topic)):
        offset = max(cursor.get(partition, 0), log.earliest_offset(topic, partition))
        end = log.latest_offset(topic, partition)
        while offset < end:
            batch = [r for r in log.read(topic, partition, offset, 500) if r.offset < end]
            if not batch:
                break
            chosen = [entry for entry in map(DeadLetter.from_record, batch) if accept(entry)]
            for target in sorted({to or entry.original_topic for entry in chosen}):
                log.append(target, [e.original(only_group) for e in chosen if (to or e.original_topic) == target])
            sent.extend(chosen)
            offset = batch[-1].offset + 1
        ends[partition] = end
    if ends:
        log.commit(REDRIVE_GROUP, topic, ends)
    return sent


def ensure_topic(log: Log, topic: str) -> None:
    if topic not in log.list_topics():
        with contextlib.suppress(TopicExists):  # another process created it meanwhile
            log.create_topic(topic, TopicConfig(partitions=1))
