"""`inmotion publish` and `inmotion tail`."""

from __future__ import annotations

import base64
import heapq
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from inmotion.cli.common import (
    BrokerOption,
    JsonOption,
    check_offset,
    fail,
    json_encoder,
    open_log,
    parse_time_ms,
    print_json,
)
from inmotion.errors import InvalidEvent
from inmotion.events import Event, from_dict, to_dict
from inmotion.events.codec import decode_json_document, format_time
from inmotion.log import Log, Record

DEFAULT_TYPE = "inmotion.message"
DEFAULT_SOURCE = "/inmotion/cli"


def publish(
    topic: str,
    data: Annotated[
        str | None,
        typer.Argument(
            help="The event data as a JSON value, or '-' to read one JSON document per line from stdin "
            "(each a data value, or a whole CloudEvent when it has a 'specversion' member).",
            show_default=False,
        ),
    ] = None,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Partition key.")] = None,
    type: Annotated[str, typer.Option("--type", "-t", help="CloudEvents type.")] = DEFAULT_TYPE,
    source: Annotated[str, typer.Option("--source", "-s", help="CloudEvents source.")] = DEFAULT_SOURCE,
    subject: Annotated[str | None, typer.Option(help="CloudEvents subject.")] = None,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Publish events to a topic. The whole input is checked first: one bad line publishes nothing."""
    if data is None:
        fail("give the event data as a JSON value, or '-' to read JSON lines from stdin", code=2)
    if data == "-":
        events = list(_events_from_lines(sys.stdin, type, source, key, subject))
    else:
        try:
            value = decode_json_document(data)
        except InvalidEvent as error:
            fail(f"DATA is not valid JSON: {error.problem} (quote strings: '\"text\"')", code=2)
        events = [Event.create(type, value, source=source, key=key, subject=subject)]
    if not events:
        typer.echo("nothing to publish: stdin was empty", err=True)
        return
    with open_log(broker) as log:
        positions = log.append_events(topic, events)
    for event, position in zip(events, positions, strict=True):
        if json:
            print_json({"topic": topic, "partition": position.partition, "offset": position.offset, "id": event.id})
        else:
            typer.echo(f"{topic}/{position.partition}@{position.offset} {event.type} {event.id}")


def _events_from_lines(lines: Any, type: str, source: str, key: str | None, subject: str | None) -> Iterator[Event]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = decode_json_document(line)
            if isinstance(document, dict) and "specversion" in document:
                event = from_dict(document)
                if key is not None and event.key is None:
                    event = event.with_extensions(partitionkey=key)
                yield event
            else:
                yield Event.create(type, document, source=source, key=key, subject=subject)
        except InvalidEvent as error:
            fail(f"line {number}: {error}; nothing was published")


def tail(
    topic: str,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest record.")] = False,
    offset: Annotated[int | None, typer.Option("--offset", help="Start at this offset in each partition.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Start at this time: RFC 3339 (UTC if no zone), or a duration ago (10m)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", help="Stop after this many (default: the last 10, unless a start is given)."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events as they arrive.")] = False,
    partition: Annotated[int | None, typer.Option("--partition", help="Only this partition.")] = None,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Print a topic's events: the last 10 by default, or from a start you choose."""
    if sum((from_beginning, offset is not None, since is not None)) > 1:
        fail("choose one start: --from-beginning, --offset or --since", code=2)
    if limit is not None and limit < 0:
        fail("--limit must be 0 or more", code=2)
    if offset is not None:
        check_offset(offset)
    with open_log(broker, create=False) as log:
        count = log.partition_count(topic)
        if partition is not None and not 0 <= partition < count:
            fail(f"topic {topic!r} has no partition {partition} (it has {count})", code=2)
        partitions = [partition] if partition is not None else list(range(count))
        if from_beginning:
            starts = {p: log.earliest_offset(topic, p) for p in partitions}
        elif offset is not None:
            starts = dict.fromkeys(partitions, offset)
        elif since is not None:
            moment = parse_time_ms(since)
            starts = {p: log.offset_for_time(topic, p, moment) for p in partitions}
        else:
            starts = _last_records(log, topic, partitions, 10 if limit is None else limit)
        _print_records(log, topic, starts, limit, follow, json)


def _last_records(log: Log, topic: str, partitions: list[int], count: int) -> dict[int, int]:
    """Start offsets that show the newest `count` records across partitions."""
    starts = {p: max(log.earliest_offset(topic, p), log.latest_offset(topic, p) - count) for p in partitions}
    newest = heapq.nlargest(
        count,
        (r for p, start in starts.items() for r in log.read(topic, p, start, limit=count)),
        key=lambda r: (r.timestamp, r.offset),
    )
    ends = {p: log.latest_offset(topic, p) for p in partitions}
    return {p: min((r.offset for r in newest if r.partition == p), default=ends[p]) for p in partitions}


def _print_records(log: Log, topic: str, starts: dict[int, int], limit: int | None, follow: bool, json: bool) -> None:
    positions = dict(starts)
    printed = 0
    while limit is None or printed < limit:
        batch = [r for p, start in positions.items() for r in log.read(topic, p, start, limit=500)]
        batch.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        for record in batch:
            if limit is not None and printed >= limit:
                return
            _print_record(record, json)
            positions[record.partition] = record.offset + 1
            printed += 1
        if not batch:
            if not follow:
                return
            while not log.wait(topic, positions, timeout=1.0):
                pass
        sys.stdout.flush()


def _print_record(record: Record, json: bool) -> None:
    try:
        event: Event | None = record.event()
    except InvalidEvent:
        event = None  # written by a producer that does not speak CloudEvents
    if json:
        document: dict[str, Any] = to_dict(event) if event is not None else _raw(record)
        document.update(topic=record.topic, partition=record.partition, offset=record.offset)
        print_json(document)
        return
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.timestamp / 1000))
    where = f"{record.partition}@{record.offset}"
    if event is None:
        typer.echo(f"{where} {stamp}Z (not a CloudEvent) {_raw(record)}")
        return
    parts = [where, format_time(event.time) if event.time else stamp + "Z", event.type]
    if event.key is not None:
        parts.append(f"key={event.key}")
    if event.subject is not None:
        parts.append(f"subject={event.subject}")
    data = to_dict(event)
    if "data" in data:
        parts.append(json_encoder.encode(data["data"]).decode())
    elif "data_base64" in data:
        parts.append(f"<{len(base64.b64decode(data['data_base64']))} bytes>")
    typer.echo(" ".join(parts))


def _raw(record: Record) -> dict[str, Any]:
    def text(value: bytes | None) -> str | None:
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()

    return {"key": text(record.key), "value": text(record.value), "timestamp": record.timestamp}


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.command("publish")(publish)
    app.command("tail")(tail)
