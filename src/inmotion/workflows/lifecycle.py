"""Lifecycle events: each change of an instance that other services may follow (started, a step
completed, waiting, timed out, compensating, the end) as a CloudEvent on `<app>.workflows`."""

from __future__ import annotations

import asyncio
import logging

from inmotion.events import Event
from inmotion.runtime import App
from inmotion.workflows.history import fields
from inmotion.workflows.store import Entry, Instance

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


class Announcer:
    """Publishes the lifecycle events of history entries on `topic`, in the background: those
    of the next few milliseconds in one append."""

    def __init__(self, app: App, topic: str) -> None:
        self.app = app
        self.topic = topic
        self._pending: list[Event] = []
        self._publishing: asyncio.Future[None] | None = None

    def announce(self, instance: Instance, entries: list[Entry], cause: str | None = None) -> None:
        """Publish the lifecycle events of new history entries on `<app>.workflows` (in the
        background; their ids are the same if a replay announces them again)."""
        events = []
        for entry in entries:
            name = LIFECYCLE.get(entry.kind)
            if entry.kind == "waited":
                name = "timed_out" if fields(entry).get("timeout") else "wait.completed"
            if name is None:
                continue
            data = {
                "workflow": instance.workflow,
                "id": instance.id,
                "key": instance.key,
                "seq": entry.seq,
                "name": entry.name,
                **fields(entry),
            }
            data.pop("input", None)
            extensions = {"correlationid": instance.correlation}
            if cause is not None:
                extensions["causationid"] = cause
            event = self.app.build_event(
                self.topic,
                data,
                key=instance.key,
                type=f"inmotion.workflow.{name}",
                subject=instance.key,
                extensions=extensions,
            )
            events.append(event.replace(id=f"{instance.key}@{entry.version}"))
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
