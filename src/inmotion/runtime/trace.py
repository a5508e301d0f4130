"""A flow of events across topics: those that share a correlation id, each under the event
that caused it (its causation id). Handlers that publish through their context stamp both, so
a choreography (services reacting to each other's events) can be followed afterwards without
any coordinator; `inmotion trace` and the gateway draw it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from inmotion.errors import InvalidEvent
from inmotion.events import Event
from inmotion.log import Log, Record
from inmotion.log.scan import batches_until_now
from inmotion.runtime.handler import CAUSATION_ID, CORRELATION_ID

_ID_HEADER = "ce_id"
_CORRELATION_HEADER = "ce_" + CORRELATION_ID
PROGRESS_EVERY = 100_000

Found = list[tuple[Event, Record]]
Progress = Callable[[str, int, int], None]
"""Told every PROGRESS_EVERY records: the topic being read, its number, the records read so far."""


def scan(
    log: Log, topics: list[str], wanted: str, start_ms: int | None, progress: Progress | None = None
) -> tuple[Found, int]:
    """The events of `topics` whose id or correlation id is `wanted`, with their records, and
    how many records were read. Each partition is read up to where it ended when its scan
    began. Records are matched on their binary-mode headers, so only the matches are decoded."""
    needle = wanted.encode()
    by_id, by_correlation = (_ID_HEADER, needle), (_CORRELATION_HEADER, needle)
    found: Found = []
    scanned = 0
    for number, topic in enumerate(topics, start=1):
        for record in _records(log, topic, start_ms):
            scanned += 1
            if progress is not None and scanned % PROGRESS_EVERY == 0:
                progress(topic, number, scanned)
            if by_correlation in record.headers or by_id in record.headers:
                try:
                    found.append((record.event(), record))
                except InvalidEvent:
                    continue  # a header like ours on a record that is no CloudEvent
    return found, scanned


def events_whose_id_ends_with(
    log: Log, topics: list[str], end: str, start_ms: int | None
) -> dict[str, tuple[Event, Record]]:
    """The events whose id ends with `end`, by id: the slow path (each record's headers looked
    through), taken only when no event has `end` as its id or correlation id."""
    needle = end.encode()
    found: dict[str, tuple[Event, Record]] = {}
    for topic in topics:
        for record in _records(log, topic, start_ms):
            value = next((value for name, value in record.headers if name == _ID_HEADER), None)
            if value is not None and value.endswith(needle):
                with contextlib.suppress(InvalidEvent):  # a header like ours on a record that is no CloudEvent
                    event = record.event()
                    found[event.id] = (event, record)
    return found


def _records(log: Log, topic: str, start_ms: int | None) -> Iterator[Record]:
    for partition in range(log.partition_count(topic)):
        if start_ms is None:
            start = log.earliest_offset(topic, partition)
        else:
            start = log.offset_for_time(topic, partition, start_ms)
        for batch in batches_until_now(log, topic, partition, start):
            yield from batch


def correlation_of(found: Found, event_id: str) -> str:
    """The correlation id of the flow that `event_id` names: its event's correlation id if it
    is an event's id, else itself (a correlation id, or the id of a flow's first event)."""
    for event, _ in found:
        if event.id == event_id:
            return str(event.extensions.get(CORRELATION_ID, event_id))
    return event_id


def tree(found: Found) -> Iterator[tuple[Event, Record, int, str | None, str]]:
    """Events depth first, each after the event that caused it, siblings in time order, with
    their depth, their cause's id and the branches to draw before them; an event whose cause
    is not among them (outside the topics or the time read) is a root."""
    ordered = sorted(found, key=lambda pair: (time_ms(*pair), pair[1].topic, pair[1].partition, pair[1].offset))
    ids = {event.id for event, _ in ordered}
    children: dict[str | None, Found] = {}
    for event, record in ordered:
        cause = event.extensions.get(CAUSATION_ID)
        parent = str(cause) if cause is not None and str(cause) in ids and str(cause) != event.id else None
        children.setdefault(parent, []).append((event, record))
    seen: set[str] = set()

    def walk(parent: str | None, depth: int, indent: str) -> Iterator[tuple[Event, Record, int, str | None, str]]:
        # an event stored twice (a producer's retry) is shown once, and a cycle of ids ends
        mine = [(event, record) for event, record in children.get(parent, []) if event.id not in seen]
        seen.update(event.id for event, _ in mine)
        for number, (event, record) in enumerate(mine, start=1):
            last = number == len(mine)
            branch = "" if depth == 0 else indent + ("└─ " if last else "├─ ")
            yield event, record, depth, parent, branch
            yield from walk(event.id, depth + 1, "" if depth == 0 else indent + ("   " if last else "│  "))

    yield from walk(None, 0, "")


def time_ms(event: Event, record: Record) -> int:
    return int(event.time.timestamp() * 1000) if event.time is not None else record.timestamp
