"""Errors of the event-sourcing layer, on top of the backend-neutral ones in `inmotion.errors`."""

from __future__ import annotations

from inmotion.errors import InmotionError


class AggregateNotFound(InmotionError, LookupError):
    """No event was ever stored for this aggregate id."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no aggregate {stream_id!r}: its stream has no events")
        self.stream_id = stream_id


class UnreadableEvent(InmotionError):
    """A stored event (or snapshot) that cannot become a typed object: an unknown type, a missing
    upcaster, a corrupt or non-fitting payload. `stream_id` and `version` locate it."""

    def __init__(self, stream_id: str, version: int, problem: str) -> None:
        super().__init__(f"cannot read event {version} of stream {stream_id!r}: {problem}")
        self.stream_id = stream_id
        self.version = version
        self.problem = problem
