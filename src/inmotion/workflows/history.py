"""An instance's history read back for replay: which of its commands (steps, sleeps, waits,
publishes) have completed and how, which are still open, the events it received, and where its
compensation stands.

Entry kinds, in the order they may appear:
- `started` (the input), `retried` (after `inmotion workflows retry`)
- a command's completion, by its `seq`: `step`, `step_failed`, `slept`, `waited` (an event or
  a timeout), `published`, `cancelled`; an open command: `sleep`, `wait` (its due time)
- `received`: an event for the instance (a reply, an awaited event), whether or not a wait
  took it; `cancel_requested`
- `compensating`, then `undone` / `undo_failed` per undo (its `seq` is the undo's number, in
  the order the undos were registered)
- the end: `completed`, `failed`, `compensated`, `compensation_failed`
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from inmotion.events import Event
from inmotion.events.codec import from_json
from inmotion.workflows.store import FINISHED, Entry

COMPLETIONS = frozenset({"step", "step_failed", "slept", "waited", "published", "cancelled"})
OPENINGS = frozenset({"sleep", "wait"})
FAILURES = frozenset({"step_failed", "cancelled"})
"""Completions that raise in the workflow (with a timed-out `waited`)."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def payload(**fields: Any) -> bytes:
    return _encode(fields)


def fields(entry: Entry) -> dict[str, Any]:
    value = _decode(entry.payload)
    return value if isinstance(value, dict) else {}


def is_failure(entry: Entry) -> bool:
    return entry.kind in FAILURES or (entry.kind == "waited" and bool(fields(entry).get("timeout")))


class History:
    """The replay state of one instance, kept up to date as entries are added."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.completions: dict[int, Entry] = {}
        self.opened: dict[int, Entry] = {}
        self.received: list[tuple[str, Event]] = []
        """(topic, event) in the order they arrived."""
        self.received_ids: set[str] = set()
        self.taken: set[str] = set()
        """Ids of received events that a wait returned."""
        self.cancel_requested = False
        self.compensating: Entry | None = None
        self.undone: set[int] = set()
        self.end: Entry | None = None
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        kind = entry.kind
        if kind in COMPLETIONS:
            self.completions[entry.seq] = entry
            self.opened.pop(entry.seq, None)
            if kind == "waited" and (taken := fields(entry).get("event")):
                self.taken.add(taken)
        elif kind in OPENINGS:
            self.opened[entry.seq] = entry
        elif kind == "received":
            event = from_json(entry.payload)
            self.received.append((entry.name, event))
            self.received_ids.add(event.id)
        elif kind == "cancel_requested":
            self.cancel_requested = True
        elif kind == "compensating":
            self.compensating = entry
        elif kind == "undone":
            self.undone.add(entry.seq)
        elif kind in FINISHED:
            self.end = entry
        elif kind == "retried":
            self._retry()

    def _retry(self) -> None:
        """A retry resumes where the instance stopped: its compensation, if one failed (the undos
        not recorded `undone` run), or else the command whose failure ended it, which runs again."""
        if self.compensating is None and self.end is not None:
            seq = int(fields(self.end).get("seq") or 0)
            failure = self.completions.get(seq)
            if failure is not None and is_failure(failure):
                del self.completions[seq]
            self.cancel_requested = False
        self.end = None

    def event(self, event_id: str) -> Event | None:
        for _, event in self.received:
            if event.id == event_id:
                return event
        return None
