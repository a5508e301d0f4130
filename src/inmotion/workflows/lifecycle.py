"""Lifecycle events: each change of an instance that other services may follow (started, a step
completed, waiting, timed out, compensating, the end) as a CloudEvent on `<app>.workflows`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from inmotion.events import Event
from inmotion.runtime import App
from inmotion.workflows.history import fields
from inmotion.workflows.store import Entry

logger = logging.getLogger("inmotion.workflows")

LIFECYCLE = {
    "started": "started",
    "step": "step.completed",
    "step_failed": "step.failed",
    "sleep": "sleeping",
    "wait": "waiting",
    "cancelled": "cancelled",
    "compensating": "compensating",
    "undone": "undone",
    "undo_failed": "undo_failed",
    "completed": "completed",
    "failed": "failed",
    "compensated": "compensated",
    "compensation_failed": "compensation_failed",
}
"""History entries announced on `<app>.workflows`, as `inmotion.workflow.<name>` events."""
_LINGER = 0.005
"""Seconds that lifecycle events wait for others to be published with."""


def causal_extensions(correlation: str, cause: str | None, trace: Mapping[str, str]) -> dict[str, str]:
    """What an instance's events carry: its correlation id, the id of the event that started
    it (their cause) and that event's W3C trace context."""
    extensions = {"correlationid": correlation, **trace}
    if cause is not None:
        extensions["causationid"] = cause
    return extensions


class Announcer:
    """Publishes the lifecycle events of history entries on `topic`, in the background: those
    of the next few milliseconds in one append."""

    def __init__(self, app: App, topic: str) -> None:
        self.app = app
        self.topic = topic
        self._pending: list[Event] = []
        self._publishing: asyncio.Future[None] | None = None

    def announce(self, key: str, entries: list[Entry], extensions: Mapping[str, str]) -> None:
        """Publish the lifecycle events of instance `key`'s new history entries (in the
        background; their ids are the same if a replay announces them again), with the
        instance's causal `extensions` (see `causal_extensions`)."""
        workflow, _, id = key.partition("/")
        events = []
        for entry in entries:
            name = LIFECYCLE.get(entry.kind)
            if entry.kind == "waited":
                name = "timed_out" if fields(entry).get("timeout") else "wait.completed"
            if name is None:
                continue
            data = {"workflow": workflow, "id": id, "key": key, "seq": entry.seq, "name": entry.name, **fields(entry)}
            data.pop("input", None)
            event = self.app.build_event(
                self.topic, data, key=key, type=f"inmotion.workflow.{name}", subject=key, extensions=extensions
            )
            events.append(event.replace(id=f"{key}@{entry.version}"))
        self._pending += events
        if events and (self._publishing is None or self._publishing.done()):
            self._publishing = asyncio.ensure_future(self._publish())

    async def _publish(self) -> None:
        while self._pending:
            await asyncio.sleep(_LINGER)  # what the next moments announce goes in the same append
            events, self._pending = self._pending, []
            try:
                await self.app.publish_many(self.topic, events)
            except Exception as exc:
                logger.warning("could not publish %d workflow events on %s: %s", len(events), self.topic, exc)

    async def flush(self) -> None:
        """Return once the events announced so far are published (or their failure logged)."""
        if self._publishing is not None:
            await self._publishing
