"""What operators do with workflow instances, from any edge (the CLI, the gateway): find one,
describe it, and ask its app's workers to cancel or retry it (a request on the app's inbox,
which the worker owning the instance carries out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from inmotion.errors import InmotionError, InvalidConfig
from inmotion.events.envelope import new_event
from inmotion.log import Log
from inmotion.runtime.publisher import to_message
from inmotion.workflows.engine import CANCEL, RETRY
from inmotion.workflows.history import fields
from inmotion.workflows.store import ACTIVE, Entry, Instance, WorkflowRecorder

REQUESTS = {"cancel": (CANCEL, ACTIVE), "retry": (RETRY, ("failed", "compensation_failed"))}
"""What an operator may ask, with the inbox event that asks it and the statuses that allow it."""


class UnknownInstance(InmotionError, LookupError):
    def __init__(self, wanted: str) -> None:
        super().__init__(f"no workflow instance {wanted!r}")
        self.wanted = wanted


def find(recorder: WorkflowRecorder, wanted: str) -> tuple[Instance, list[Entry]]:
    """The instance `<workflow>/<id>` (or the only one with that id) and its history."""
    if "/" not in wanted:
        keys = [i.key for i in recorder.instances(limit=1 << 30) if i.id == wanted]
        if len(keys) > 1:
            raise InvalidConfig(
                f"{wanted!r} is the id of {len(keys)} instances ({', '.join(keys[:3])}): give <workflow>/<id>"
            )
        wanted = keys[0] if keys else wanted
    found = recorder.load(wanted)
    if found is None:
        raise UnknownInstance(wanted)
    return found


def summary(instance: Instance) -> dict[str, Any]:
    return {
        "key": instance.key,
        "workflow": instance.workflow,
        "id": instance.id,
        "status": instance.status,
        "correlation": instance.correlation,
        "created": format_ms(instance.created_ms),
        "updated": format_ms(instance.updated_ms),
        "wake": None if instance.wake_ms is None else format_ms(instance.wake_ms),
        "error": instance.error,
        "steps": instance.version,
    }


def description(instance: Instance, entries: list[Entry]) -> dict[str, Any]:
    """The instance with its input and its whole history (what `workflows describe --json` prints)."""
    document = summary(instance)
    document["input"] = msgspec.json.decode(instance.input)
    document["result"] = None if instance.result is None else msgspec.json.decode(instance.result)
    document["history"] = [
        {"version": e.version, "kind": e.kind, "seq": e.seq, "name": e.name, "at": format_ms(e.recorded_ms)}
        | details(e)
        for e in entries
    ]
    return document


def details(entry: Entry) -> dict[str, Any]:
    if entry.kind == "received":
        event = msgspec.json.decode(entry.payload, type=dict)
        return {"event": event.get("id"), "type": event.get("type"), "data": event.get("data")}
    found = fields(entry)
    for name in ("due", "at"):
        if isinstance(found.get(name), int):
            found[name] = format_ms(found[name])
    return found


def ask(log: Log, instance: Instance, entries: list[Entry], request: str, source: str) -> None:
    """Ask the instance's app to `cancel` or `retry` it; InvalidConfig if its status does not allow it."""
    kind, statuses = REQUESTS[request]
    if instance.status not in statuses:
        done = "cancelled" if request == "cancel" else "retried"
        raise InvalidConfig(f"{instance.key} is {instance.status}: only {', '.join(statuses)} instances can be {done}")
    inbox = str(fields(entries[0]).get("inbox"))
    event = new_event(kind, source, {"key": instance.key}, None, instance.correlation)
    log.append(inbox, [to_message(event, None)])


def format_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
