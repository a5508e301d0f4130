"""`inmotion trace ID`: the causal tree of the events that share a correlation id, across topics.

Handlers that publish through their context stamp each new event with the `correlationid` of
the event that triggered them (or its id when it has none) and a `causationid`, the trigger's
id, so a choreographed flow (services reacting to each other's events) can be followed
afterwards without any coordinator.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from inmotion.cli.common import (
    BrokerOption,
    JsonOption,
    fail,
    open_log,
    parse_time_ms,
    print_json,
)
from inmotion.events import Event, to_dict
from inmotion.events.codec import format_time
from inmotion.log import Record
from inmotion.runtime import trace as trace_flow
from inmotion.runtime.handler import CAUSATION_ID


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
    progress = _show_progress if sys.stderr.isatty() else None
    with open_log(broker, create=False) as log:
        existing = set(log.list_topics())
        names = topics or sorted(existing)
        missing = sorted(set(names) - existing)
        if missing:
            fail(f"no such topic: {', '.join(missing)}", code=2)
        found, scanned = trace_flow.scan(log, names, event_id, start_ms, progress)
        if not found:  # the end of an id, as the demo and logs show them
            ending = trace_flow.events_whose_id_ends_with(log, names, event_id, start_ms)
            if len(ending) > 1:
                some = ", ".join(sorted(ending)[:3])
                fail(f"{event_id!r} is the end of {len(ending)} event ids ({some}, ...): give more of it")
            if ending:
                event_id, pair = ending.popitem()
                found = [pair]
        correlation = trace_flow.correlation_of(found, event_id)
        if correlation != event_id or len(found) == 1:  # the flow around the event found alone
            found, _ = trace_flow.scan(log, names, correlation, start_ms, progress)
    if progress is not None and scanned >= trace_flow.PROGRESS_EVERY:
        print(file=sys.stderr)
    if not found:
        where = f"{_count(len(names), 'topic')} ({scanned:,} events)"
        fail(f"no event with id or correlation id {event_id!r} in {where}")
    if json:
        for event, record, depth, parent, _ in trace_flow.tree(found):
            document: dict[str, Any] = to_dict(event)
            document.update(
                topic=record.topic, partition=record.partition, offset=record.offset, depth=depth, parent=parent
            )
            print_json(document)
        return
    topic_count = len({record.topic for _, record in found})
    typer.echo(f"correlation {correlation}: {_count(len(found), 'event')} in {_count(topic_count, 'topic')}")
    first_ms = min(trace_flow.time_ms(event, record) for event, record in found)
    for event, record, depth, parent, branch in trace_flow.tree(found):
        typer.echo(_line(event, record, depth, parent, branch, first_ms))


def _show_progress(topic: str, number: int, scanned: int) -> None:
    print(f"\rreading {topic} ({number} topics, {scanned:,} events)", end="", file=sys.stderr)


def _line(event: Event, record: Record, depth: int, parent: str | None, branch: str, first_ms: int) -> str:
    where = f"{record.topic} {record.partition}@{record.offset}"
    if depth == 0 and event.time is not None:
        when = format_time(event.time)
    else:
        when = _after(trace_flow.time_ms(event, record) - first_ms)
    cause = event.extensions.get(CAUSATION_ID)
    orphan = f" (caused by {cause!s}, not found)" if depth == 0 and cause is not None and parent is None else ""
    return f"{branch}{event.type}  {where}  {when}  id {event.id}{orphan}"


def _after(ms: int) -> str:
    return f"+{ms} ms" if ms < 10_000 else f"+{ms / 1000:.1f} s"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.command("trace")(trace)
