"""Event sourcing and CQRS: the event store, aggregates, snapshots, upcasting, projections, outbox.

- `EventStore(url)`: streams with optimistic concurrency and a global, gap-free position.
- `Aggregate`, `applies`, `Repository`: typed events, appliers, snapshots, sync and async.
- `EventTypes` and `upcast_vN_vN+1` methods: schema versions migrated on read.
- `Projection`, `handles`, `Projector`: read models in SQLite with exactly-once effects.
- `OutboxRelay`: the store's events, published to a log topic in order (`type_prefix` namespaces
  their types).

`Repository.save` raises `ConcurrencyError` (re-exported from `inmotion.errors`) when another
writer saved the aggregate first: load it again and retry the command.
"""

from inmotion.errors import ConcurrencyError
from inmotion.sourcing.aggregate import Aggregate, Repository, applies
from inmotion.sourcing.errors import AggregateNotFound, UnreadableEvent
from inmotion.sourcing.outbox import OutboxRelay
from inmotion.sourcing.projection import (
    Projection,
    Projector,
    Source,
    StoreSource,
    TopicSource,
    Transaction,
    handles,
)
from inmotion.sourcing.store import EventStore, NewEvent, NewSnapshot, StoredEvent, StoredSnapshot
from inmotion.sourcing.versioning import EventTypes

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "ConcurrencyError",
    "EventStore",
    "EventTypes",
    "NewEvent",
    "NewSnapshot",
    "OutboxRelay",
    "Projection",
    "Projector",
    "Repository",
    "Source",
    "StoreSource",
    "StoredEvent",
    "StoredSnapshot",
    "TopicSource",
    "Transaction",
    "UnreadableEvent",
    "applies",
    "handles",
]
