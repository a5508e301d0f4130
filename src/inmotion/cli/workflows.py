"""`inmotion workflows list|describe|cancel|retry`: workflow instances, from their store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
import typer

from inmotion.cli.common import BrokerOption, JsonOption, fail, open_log, print_json
from inmotion.events.envelope import new_event
from inmotion.log import default_broker
from inmotion.runtime.publisher import to_message
from inmotion.workflows.engine import CANCEL, RETRY, store_url
from inmotion.workflows.history import fields
from inmotion.workflows.store import ACTIVE, STATUSES, Entry, Instance, WorkflowRecorder, open_workflow_recorder

workflows_app = typer.Typer(help="Workflow instances: list, describe, cancel, retry.", no_args_is_help=True)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where instances live. Default: $INMOTION_WORKFLOW_STORE, else the broker's SQLite file.",
        show_default=False,
    ),
]
IdArgument = Annotated[str, typer.Argument(metavar="ID", help="An instance: <workflow>/<id>, or its id alone.")]


@contextlib.contextmanager
def _store(broker: str | None, store: str | None) -> Iterator[WorkflowRecorder]:
    url = store or store_url(broker or default_broker())
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and not Path(parts.path[1:] if parts.path.startswith("/") else parts.path).exists():
        fail(f"no workflow store at {url} (check --broker or --store)")
    recorder = open_workflow_recorder(url)
    try:
        yield recorder
    finally:
        recorder.close()


def _find(recorder: WorkflowRecorder, wanted: str) -> tuple[Instance, list[Entry]]:
    if "/" not in wanted:
        keys = [i.key for i in recorder.instances(limit=1 << 30) if i.id == wanted]
        if len(keys) > 1:
            fail(f"{wanted!r} is the id of {len(keys)} instances ({', '.join(keys[:3])}): give <workflow>/<id>")
        wanted = keys[0] if keys else wanted
    found = recorder.load(wanted)
    if found is None:
        fail(f"no workflow instance {wanted!r}")
    return found


def list_instances(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help=f"Only these statuses (repeatable): {', '.join(STATUSES)}."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, oldest first.")] = 1000,
    broker: BrokerOption = None,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """List workflow instances, oldest first."""
    unknown = sorted(set(status or ()) - set(STATUSES))
    if unknown:
        fail(f"unknown status {', '.join(unknown)}: use {', '.join(STATUSES)}", code=2)
    with _store(broker, store) as recorder:
        instances = recorder.instances(statuses=status or STATUSES, limit=limit)
    if json:
        for instance in instances:
            print_json(_summary(instance))
        return
    if not instances:
        typer.echo("no workflow instances")
        return
    width = max(len("INSTANCE"), *(len(i.key) for i in instances))
    typer.echo(f"{'INSTANCE':<{width}}  {'STATUS':<19}  {'UPDATED':<24}  NOTE")
    for i in instances:
        note = i.error or (f"until {_time(i.wake_ms)}" if i.wake_ms is not None else "")
        typer.echo(f"{i.key:<{width}}  {i.status:<19}  {_time(i.updated_ms):<24}  {note}")


def describe(
    wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None, json: JsonOption = False
) -> None:
    """Show an instance: its input, each step with its result or error and timing, timers,
    waits, received events and compensations."""
    with _store(broker, store) as recorder:
        instance, entries = _find(recorder, wanted)
    if json:
        document = _summary(instance)
        document["input"] = msgspec.json.decode(instance.input)
        document["history"] = [
            {
                "version": e.version,
                "kind": e.kind,
                "seq": e.seq,
                "name": e.name,
                "at": _time(e.recorded_ms),
                **_details(e),
            }
            for e in entries
        ]
        print_json(document)
        return
    typer.echo(f"{instance.key}: {instance.status}")
    typer.echo(f"  correlation {instance.correlation}, shard {instance.shard}")
    typer.echo(f"  started {_time(instance.created_ms)}, updated {_time(instance.updated_ms)}")
    typer.echo(f"  input {instance.input.decode()}")
    if instance.error:
        typer.echo(f"  error {instance.error}")
    if instance.result is not None:
        typer.echo(f"  result {instance.result.decode()}")
    for entry in entries[1:]:
        where = f"#{entry.seq} " if entry.seq else ""
        name = f"{entry.name} " if entry.name else ""
        details = ", ".join(f"{k}={_text(v)}" for k, v in _details(entry).items() if v is not None)
        typer.echo(f"  {_time(entry.recorded_ms)}  {where}{entry.kind} {name}{details}".rstrip())


def cancel(wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None) -> None:
    """Cancel an active instance: the worker running it stops it at its next step or wait and
    runs the undos of its completed steps."""
    _ask(wanted, broker, store, CANCEL, ACTIVE, "cancelled", "cancel requested")


def retry(wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None) -> None:
    """Resume a failed instance from the step that failed (after a fix), or a compensation
    that failed from the undo that failed."""
    _ask(wanted, broker, store, RETRY, ("failed", "compensation_failed"), "retried", "retry requested")


def _ask(
    wanted: str, broker: str | None, store: str | None, kind: str, statuses: tuple[str, ...], verb: str, done: str
) -> None:
    with _store(broker, store) as recorder:
        instance, entries = _find(recorder, wanted)
    if instance.status not in statuses:
        fail(f"{instance.key} is {instance.status}: only {', '.join(statuses)} instances can be {verb}")
    inbox = str(fields(entries[0]).get("inbox"))
    event = new_event(kind, "inmotion.cli", {"key": instance.key}, None, instance.correlation)
    with open_log(broker, create=False) as log:
        log.append(inbox, [to_message(event, None)])
    typer.echo(f"{done}: {instance.key} (a worker of its app carries it out; see inmotion workflows describe)")


def _summary(instance: Instance) -> dict[str, Any]:
    return {
        "key": instance.key,
        "workflow": instance.workflow,
        "id": instance.id,
        "status": instance.status,
        "correlation": instance.correlation,
        "created": _time(instance.created_ms),
        "updated": _time(instance.updated_ms),
        "wake": None if instance.wake_ms is None else _time(instance.wake_ms),
        "error": instance.error,
        "steps": instance.version,
    }


def _details(entry: Entry) -> dict[str, Any]:
    if entry.kind == "received":
        event = msgspec.json.decode(entry.payload, type=dict)
        return {"event": event.get("id"), "type": event.get("type"), "data": event.get("data")}
    details = fields(entry)
    for name in ("due", "at"):
        if isinstance(details.get(name), int):
            details[name] = _time(details[name])
    return details


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
