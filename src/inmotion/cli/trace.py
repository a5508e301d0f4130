"""`inmotion trace ID`: the causal tree of the events that share a correlation id, across topics.

Handlers that publish through their context stamp each new event with the `correlationid` of
the event that triggered them (or its id when it has none) and a `causationid`, the trigger's
id, so a choreographed flow (services reacting to each other's events) can be followed
afterwards without any coordinator.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from inmotion.cli.common import (
    BrokerOption,
    JsonOption,
    batches_until_now,
    fail,
    open_log,
    parse_time_ms,
    print_json,
)
from inmotion.errors import InvalidEvent
from inmotion.events import Event, to_dict
from inmotion.events.codec import format_time
from inmotion.log import Log, Record
from inmotion.runtime.handler import CAUSATION_ID, CORRELATION_ID

_ID_HEADER = "ce_id"
_CORRELATION_HEADER = "ce_" + CORRELATION_ID
_PROGRESS_EVERY = 100_000

Found = list[tuple[Event, Record]]


def trace(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="An event id, or a correlation id.")],
    topics: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Look in this topic only (repeatable). Default: every topic."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events stored since: RFC 3339 (UTC if no zone), or a duration ago (1h)."),
    ] = None,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Print the causal tree of the events that share ID's correlation id, across topics.

    Each event sits under the event that caused it (its causationid). ID may be any event of
    the flow, or the end of its id (as the demo shows ids): the tree is that of its
    correlation id. With --json, one event per line in tree order, each with its topic,
    partition, offset, depth and parent (the causing event's id).
    """
    if not event_id:
        fail("give an event id, the end of one, or a correlation id", code=2)
    start_ms = parse_time_ms(since) if since is not None else None
    with open_log(broker, create=False) as log:
        existing = set(log.list_topics())
        names = topics or sorted(existing)
        missing = sorted(set(names) - existing)
        if missing:
            fail(f"no such topic: {', '.join(missing)}", code=2)
        found, scanned = _scan(log, names, event_id, start_ms)
        if not found:  # the end of an id, as the demo and logs show them
            ending = _events_whose_id_ends_with(log, names, event_id, start_ms)
            if len(ending) > 1:
                some = ", ".join(sorted(ending)[:3])
                fail(f"{event_id!r} is the end of {len(ending)} event ids ({some}, ...): give more of it")
            if ending:
                event_id, pair = ending.popitem()
                found = [pair]
        correlation = _correlation_of(found, event_id)
        if correlation != event_id or len(found) == 1:  # the flow around the event found alone
            found, _ = _scan(log, names, correlation, start_ms)
    if not found:
        where = f"{_count(len(names), 'topic')} ({scanned:,} events)"
        fail(f"no event with id or correlation id {event_id!r} in {where}")
    if json:
        for event, record, depth, parent, _ in _tree(found):
            document: dict[str, Any] = to_dict(event)
            document.update(
                topic=record.topic, partition=record.partition, offset=record.offset, depth=depth, parent=parent
            )
            print_json(document)
        return
    topic_count = len({record.topic for _, record in found})
    typer.echo(f"correlation {correlation}: {_count(len(found), 'event')} in {_count(topic_count, 'topic')}")
    first_ms = min(_time_ms(event, record) for event, record in found)
    for event, record, depth, parent, branch in _tree(found):
        typer.echo(_line(event, record, depth, parent, branch, first_ms))


def _scan(log: Log, topics: list[str], wanted: str, start_ms: int | None) -> tuple[Found, int]:
    """The events of `topics` whose id or correlation id is `wanted`, with their records, and
    how many records were read. Each partition is read up to where it ended when its scan
    began. Records are matched on their binary-mode headers, so only the matches are decoded."""
    needle = wanted.encode()
    by_id, by_correlation = (_ID_HEADER, needle), (_CORRELATION_HEADER, needle)
    found: Found = []
    scanned = 0
    progress = sys.stderr.isatty()
    for number, topic in enumerate(topics, start=1):
        for record in _records(log, topic, start_ms):
            scanned += 1
            if progress and scanned % _PROGRESS_EVERY == 0:
                print(f"\rreading {topic} ({number}/{len(topics)} topics, {scanned:,} events)", end="", file=sys.stderr)
            if by_correlation in record.headers or by_id in record.headers:
                try:
                    found.append((record.event(), record))
                except InvalidEvent:
                    continue  # a header like ours on a record that is no CloudEvent
    if progress and scanned >= _PROGRESS_EVERY:
        print(file=sys.stderr)
    return found, scanned


def _events_whose_id_ends_with(
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


def _correlation_of(found: Found, event_id: str) -> str:
    """The correlation id of the flow that `event_id` names: its event's correlation id if it
    is an event's id, else itself (a correlation id, or the id of a flow's first event)."""
    for event, _ in found:
        if event.id == event_id:
            return str(event.extensions.get(CORRELATION_ID, event_id))
    return event_id


def _tree(found: Found) -> Iterator[tuple[Event, Record, int, str | None, str]]:
    """Events depth first, each after the event that caused it, siblings in time order, with
    their depth, their cause's id and the branches to draw before them; an event whose cause
    is not among them (outside the topics or the time read) is a root."""
    ordered = sorted(found, key=lambda pair: (_time_ms(*pair), pair[1].topic, pair[1].partition, pair[1].offset))
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


def _line(event: Event, record: Record, depth: int, parent: str | None, branch: str, first_ms: int) -> str:
    where = f"{record.topic} {record.partition}@{record.offset}"
    if depth == 0 and event.time is not None:
        when = format_time(event.time)
    else:
        when = _after(_time_ms(event, record) - first_ms)
    cause = event.extensions.get(CAUSATION_ID)
    orphan = f" (caused by {cause!s}, not found)" if depth == 0 and cause is not None and parent is None else ""
    return f"{branch}{event.type}  {where}  {when}  id {event.id}{orphan}"


def _after(ms: int) -> str:
    return f"+{ms} ms" if ms < 10_000 else f"+{ms / 1000:.1f} s"


def _time_ms(event: Event, record: Record) -> int:
    return int(event.time.timestamp() * 1000) if event.time is not None else record.timestamp


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
