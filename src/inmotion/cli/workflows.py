"""`inmotion workflows list|describe|cancel|retry`: workflow instances, from their store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
import typer

from inmotion.cli.common import BrokerOption, JsonOption, fail, open_log, print_json
from inmotion.errors import InvalidConfig
from inmotion.log import default_broker
from inmotion.workflows import admin
from inmotion.workflows.engine import store_url
from inmotion.workflows.store import STATUSES, Entry, Instance, WorkflowRecorder, open_workflow_recorder

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
    try:
        return admin.find(recorder, wanted)
    except (InvalidConfig, admin.UnknownInstance) as exc:
        fail(str(exc))


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
            print_json(admin.summary(instance))
        return
    if not instances:
        typer.echo("no workflow instances")
        return
    width = max(len("INSTANCE"), *(len(i.key) for i in instances))
    typer.echo(f"{'INSTANCE':<{width}}  {'STATUS':<19}  {'UPDATED':<24}  NOTE")
    for i in instances:
        note = i.error or (f"until {admin.format_ms(i.wake_ms)}" if i.wake_ms is not None else "")
        typer.echo(f"{i.key:<{width}}  {i.status:<19}  {admin.format_ms(i.updated_ms):<24}  {note}")


def describe(
    wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None, json: JsonOption = False
) -> None:
    """Show an instance: its input, each step with its result or error and timing, timers,
    waits, received events and compensations."""
    with _store(broker, store) as recorder:
        instance, entries = _find(recorder, wanted)
    if json:
        print_json(admin.description(instance, entries))
        return
    typer.echo(f"{instance.key}: {instance.status}")
    typer.echo(f"  correlation {instance.correlation}, shard {instance.shard}")
    created, updated = admin.format_ms(instance.created_ms), admin.format_ms(instance.updated_ms)
    typer.echo(f"  started {created}, updated {updated}")
    typer.echo(f"  input {instance.input.decode()}")
    if instance.error:
        typer.echo(f"  error {instance.error}")
    if instance.result is not None:
        typer.echo(f"  result {instance.result.decode()}")
    for entry in entries[1:]:
        where = f"#{entry.seq} " if entry.seq else ""
        name = f"{entry.name} " if entry.name else ""
        details = ", ".join(f"{k}={_text(v)}" for k, v in admin.details(entry).items() if v is not None)
        typer.echo(f"  {admin.format_ms(entry.recorded_ms)}  {where}{entry.kind} {name}{details}".rstrip())


def cancel(wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None) -> None:
    """Cancel an active instance: the worker running it stops it at its next step or wait and
    runs the undos of its completed steps."""
    _ask(wanted, broker, store, "cancel", "cancel requested")


def retry(wanted: IdArgument, broker: BrokerOption = None, store: StoreOption = None) -> None:
    """Resume a failed instance from the step that failed (after a fix), or a compensation
    that failed from the undo that failed."""
    _ask(wanted, broker, store, "retry", "retry requested")


def _ask(wanted: str, broker: str | None, store: str | None, request: str, done: str) -> None:
    with _store(broker, store) as recorder:
        instance, entries = _find(recorder, wanted)
    with open_log(broker, create=False) as log:
        try:
            admin.ask(log, instance, entries, request, "inmotion.cli")
        except InvalidConfig as exc:
            fail(str(exc))
    typer.echo(f"{done}: {instance.key} (a worker of its app carries it out; see inmotion workflows describe)")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    workflows_app.command("list")(list_instances)
    workflows_app.command("describe")(describe)
    workflows_app.command("cancel")(cancel)
    workflows_app.command("retry")(retry)
    app.add_typer(workflows_app, name="workflows")
