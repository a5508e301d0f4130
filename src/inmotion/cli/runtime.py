"""`inmotion groups list|describe`, `inmotion dlq list|redrive`, `inmotion replay`, `inmotion run`."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inmotion.cli.common import (
    BrokerOption,
    JsonOption,
    check_offset,
    fail,
    open_log,
    parse_time_ms,
    print_json,
)
from inmotion.errors import InvalidConfig, UnknownTopic
from inmotion.log import Coordinator, Log, MemberInfo
from inmotion.log.lag import all_groups, group_lag
from inmotion.runtime import deadletter, logs
from inmotion.runtime.replay import replay as replay_offsets
from inmotion.runtime.reports import reporter

groups_app = typer.Typer(help="Inspect consumer groups: members, assignments, offsets, lag.", no_args_is_help=True)
dlq_app = typer.Typer(help="List and redrive dead-letter topics.", no_args_is_help=True)


@contextlib.contextmanager
def _open(broker: str | None) -> Iterator[tuple[Log, Coordinator]]:
    with open_log(broker, create=False) as log:
        coordinator = log.group_coordinator()
        try:
            yield log, coordinator
        finally:
            coordinator.close()


def _member_document(member: MemberInfo, now_ms: int) -> dict[str, object]:
    return {
        "member": member.member_id,
        "host": member.host,
        "pid": member.pid,
        "topics": list(member.topics),
        "last_heartbeat_s": None if member.heartbeat_ms is None else round((now_ms - member.heartbeat_ms) / 1000, 3),
        "session_timeout_s": None if member.session_ms is None else member.session_ms / 1000,
    }


@groups_app.command("list")
def list_groups(
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """List consumer groups with their live members and total lag."""
    with _open(broker) as (log, coordinator):
        rows = []
        for group in all_groups(log, coordinator):
            states = group_lag(log, coordinator, group)
            rows.append(
                {
                    "group": group,
                    "members": len(coordinator.members(group)),
                    "topics": sorted({s.topic for s in states}),
                    "lag": sum(s.lag for s in states),
                }
            )
    if json:
        for row in rows:
            print_json(row)
        return
    if not rows:
        typer.echo("no consumer groups")
        return
    table = Table("group", "members", "topics", "lag", box=None)
    for row in rows:
        table.add_row(str(row["group"]), str(row["members"]), ", ".join(row["topics"]), str(row["lag"]))  # type: ignore[arg-type]
    Console().print(table)


@groups_app.command("describe")
def describe_group(
    group: str,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Show a group's members, who owns each partition, committed offsets and lag."""
    with _open(broker) as (log, coordinator):
        if group not in log.list_groups() and group not in coordinator.groups():
            fail(f"unknown consumer group {group!r} (list them with: inmotion groups list)")
        members = coordinator.members(group)
        states = group_lag(log, coordinator, group)
    now_ms = int(time.time() * 1000)
    if json:
        print_json(
            {
                "group": group,
                "members": [_member_document(m, now_ms) for m in members],
                "partitions": [s.document() for s in states],
                "lag": sum(s.lag for s in states),
            }
        )
        return
    console = Console()
    console.print(f"[bold]{group}[/bold]: {len(members)} live member(s), lag {sum(s.lag for s in states)}")
    if members:
        table = Table("member", "host", "pid", "topics", "last heartbeat", box=None)
        for m in members:
            age = "-" if m.heartbeat_ms is None else f"{(now_ms - m.heartbeat_ms) / 1000:.1f}s ago"
            table.add_row(m.member_id, m.host, str(m.pid), ", ".join(m.topics), age)
        console.print(table)
    table = Table("topic", "partition", "owner", "committed", "latest", "lag", box=None)
    for s in states:
        committed = "-" if s.committed is None else str(s.committed)
        table.add_row(s.topic, str(s.partition), s.owner or "-", committed, str(s.latest), str(s.lag))
    console.print(table)


# --- dead letters ---------------------------------------------------------------------------


def _dlq_topics(log: Log, topic: str | None) -> list[str]:
    if topic is not None:
        if topic not in log.list_topics():
            raise UnknownTopic(topic)
        return [topic]
    return [t for t in log.list_topics() if t.endswith(".dlq")]


@dlq_app.command("list")
def dlq_list(
    topic: Annotated[str | None, typer.Argument(help="A dead-letter topic (default: every topic named *.dlq).")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many entries per topic.")] = 100,
    traceback: Annotated[bool, typer.Option("--traceback", help="Include each error's traceback.")] = False,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """List dead-lettered events with their errors."""
    if limit <= 0:
        fail(f"--limit must be positive, got {limit}")
    with open_log(broker, create=False) as log:
        found = []
        for name in _dlq_topics(log, topic):
            for count, entry in enumerate(deadletter.entries(log, name)):
                if count >= limit:
                    break
                found.append(entry.document(include_traceback=traceback))
    if json:
        for document in found:
            print_json(document)
        return
    if not found:
        typer.echo("no dead-lettered events")
        return
    for d in found:
        error_type = str(d.get("error_type", "")).rsplit(".", 1)[-1]
        what = "(not a CloudEvent)" if d["type"] is None else f"{d['type']}  {d['id']}"
        typer.echo(
            f"{d['dlq']}@{d['dlq_offset']}  from {d.get('topic')}/{d.get('partition')}@{d.get('offset')}"
            f"  {what}  attempts={d.get('attempts')}  {error_type}: {d.get('error_message', '')}"
        )
        if traceback:
            typer.echo("    " + str(d["error_traceback"]).rstrip().replace("\n", "\n    "))


@dlq_app.command("redrive")
def dlq_redrive(
    topic: Annotated[str, typer.Argument(help="The dead-letter topic.")],
    event_type: Annotated[str | None, typer.Option("--type", help="Only events of this type ('a.b' or 'a.*').")] = None,
    error_type: Annotated[
        str | None, typer.Option("--error", help="Only events that failed with this error type.")
    ] = None,
    event_id: Annotated[list[str] | None, typer.Option("--id", help="Only the events with these ids.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Send to this topic instead of each event's original.")] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Also consider entries that an earlier redrive went past.")
    ] = False,
    only_group: Annotated[
        bool,
        typer.Option("--only-group", help="Only the group that dead-lettered each event handles it again."),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be redriven, send nothing.")] = False,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Send dead-lettered events back to their original topic (optionally filtered), for every
    group on it or, with --only-group, for the group that failed them."""
    from inmotion.runtime.filters import make_filter

    type_filter = make_filter(event_type)

    def accept(entry: deadletter.DeadLetter) -> bool:
        event = entry.event_or_none()
        if type_filter is not None and (event is None or not type_filter.matches(event)):
            return False
        if error_type is not None and error_type not in (
            entry.error.get("error_type", ""),
            entry.error.get("error_type", "").rsplit(".", 1)[-1],
        ):
            return False
        return not event_id or (event is not None and event.id in event_id)

    with open_log(broker, create=False) as log:
        if to is not None and to not in log.list_topics():
            raise UnknownTopic(to)
        if dry_run:
            cursor = {} if again else log.committed(deadletter.REDRIVE_GROUP, topic)
            chosen = [
                e
                for e in deadletter.entries(log, topic)
                if e.record.offset >= cursor.get(e.record.partition, 0) and accept(e)
            ]
        else:
            chosen = deadletter.redrive(log, topic, accept, from_start=again, to=to, only_group=only_group)
    if json:
        for entry in chosen:
            print_json({**entry.document(), "redriven_to": to or entry.original_topic, "dry_run": dry_run})
        return
    verb = "would redrive" if dry_run else "redrove"
    typer.echo(f"{verb} {len(chosen)} event(s) from {topic}")
    for entry in chosen:
        event = entry.event_or_none()
        what = "(not a CloudEvent)" if event is None else f"{event.type} {event.id}"
        typer.echo(f"  {what} -> {to or entry.original_topic}")


# --- replay ---------------------------------------------------------------------------------


def replay(
    topic: Annotated[str, typer.Argument(help="The topic whose offsets to move.")],
    group: Annotated[str, typer.Option("--group", "-g", help="The consumer group.")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Go back to the earliest offset.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="A time (RFC 3339) or a duration ago (10m, 2h).")] = None,
    offset: Annotated[int | None, typer.Option("--offset", help="This offset in every chosen partition.")] = None,
    partition: Annotated[list[int] | None, typer.Option("--partition", "-p", help="Only these partitions.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Move offsets even while the group has live members.")] = False,
    forget_dedupe: Annotated[
        bool,
        typer.Option(
            "--forget-dedupe",
            help="Forget the group's dedupe records of the events from the replay point on, so that an"
            " idempotent subscription handles them again instead of skipping them as seen.",
        ),
    ] = False,
    broker: BrokerOption = None,
    json: JsonOption = False,
) -> None:
    """Move a consumer group's offsets so that it handles a topic's events again.

    An idempotent subscription skips events it has dedupe records for: replay tells how many of
    the events from the replay point on that is (a warning on stderr), and --forget-dedupe
    forgets those records first, so that the events are handled again."""
    if sum((from_beginning, since is not None, offset is not None)) != 1:
        fail("choose exactly one of --from-beginning, --since TIME and --offset N")
    if offset is not None:
        check_offset(offset)
    since_ms = None if since is None else parse_time_ms(since)
    with _open(broker) as (log, coordinator):
        try:
            moved = replay_offsets(
                log,
                coordinator,
                topic,
                group,
                from_beginning=from_beginning,
                since_ms=since_ms,
                offset=offset,
                partitions=partition or (),
                force=force,
                forget_dedupe=forget_dedupe,
            )
        except InvalidConfig as exc:
            fail(str(exc).replace("or force it", "or pass --force"))
    events = sum(m.events for m in moved)
    deduped = sum(m.dedupe_records for m in moved)
    if deduped and not forget_dedupe:
        typer.echo(
            f"warning: group {group!r} has dedupe records for {deduped} of the {events} event(s) from the replay"
            " point on: an idempotent subscription skips them as seen. Pass --forget-dedupe to handle them again.",
            err=True,
        )
    if json:
        for m in moved:
            print_json(m.document(topic, group, forget_dedupe))
        return
    for m in moved:
        typer.echo(f"{topic}/{m.partition}: {'-' if m.before is None else m.before} -> {m.after}")
    if deduped and forget_dedupe:
        typer.echo(f"forgot the dedupe records of group {group!r} for {deduped} of the {events} event(s) replayed")


# --- run ------------------------------------------------------------------------------------


def load_app(spec: str) -> Any:
    """The object that `MODULE:ATTRIBUTE` names (the current directory is importable)."""
    from inmotion.runtime import App

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidConfig(f"expected MODULE:APP, e.g. billing.service:app, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidConfig(f"cannot import {module_name!r}: {exc}") from exc
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InvalidConfig(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not isinstance(target, App):
        raise InvalidConfig(f"{spec} is a {type(target).__name__}, not an inmotion.App")
    return target


def run(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP", help="Where the App is, e.g. billing.service:app")],
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log one JSON object per line.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve the app's metrics at http://HOST:PORT/metrics.")
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="The address of --metrics-port.")] = "127.0.0.1",
    broker: BrokerOption = None,
) -> None:
    """Run an app's subscribers and background tasks until SIGTERM or Ctrl-C (then finish,
    commit, leave the groups and run the shutdown hooks); with --metrics-port, serve its
    counters and lag in the Prometheus text format meanwhile. Its counters are also reported
    to the log every 5 s (the topic inmotion.metrics), for the gateway's /metrics."""
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    if broker:
        os.environ["INMOTION_BROKER"] = broker
    logs.configure(log_level, json_logs)
    app = load_app(app_spec)
    if broker and app.log.url != broker:
        app.close()
        fail(f"{app_spec} names its own broker ({app.log.url}): drop --broker or create the App without one")
    if not app.subscriptions and not app.lifecycle.tasks:
        fail(f"{app_spec} has no subscriptions or background tasks to run")
    app.task(reporter(app))  # its counters in the gateway's /metrics
    if metrics_port is not None:
        if not 0 < metrics_port < 65536:
            fail(f"--metrics-port must be between 1 and 65535, got {metrics_port}")
        from inmotion.gateway import serve_metrics  # only then: see inmotion.cli.gateway

        app.task(serve_metrics(app.prometheus, metrics_host, metrics_port))
    try:
        app.run_sync()
    finally:
        app.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.add_typer(groups_app, name="groups")
    app.add_typer(dlq_app, name="dlq")
    app.command("replay")(replay)
    app.command("run")(run)
