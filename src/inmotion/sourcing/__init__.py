"""Event sourcing and CQRS: the event store, aggregates, snapshots, upcasting, projections, outbox."""

from inmotion.sourcing.aggregate import Aggregate, Repository, applies
from inmotion.sourcing.errors import AggregateNotFound, UnreadableEvent
from inmotion.sourcing.store import EventStore, NewEvent, NewSnapshot, StoredEvent, StoredSnapshot
from inmotion.sourcing.versioning import EventTypes

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "EventStore",
    "EventTypes",
    "NewEvent",
    "NewSnapshot",
    "Repository",
    "StoredEvent",
    "StoredSnapshot",
    "UnreadableEvent",
    "applies",
]
