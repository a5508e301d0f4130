"""Aggregates: command methods emit typed events, appliers change state, a repository stores them.

    @dataclasses.dataclass
    class Deposited:
        amount: int

    class Account(Aggregate):
        balance: int = 0

        def deposit(self, amount: int) -> None:      # a command: checks, then emits
            if amount <= 0:
                raise ValueError("deposit a positive amount")
            self.emit(Deposited(amount))

        @applies(Deposited)                           # an applier: changes state, nothing else
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

    accounts = Repository(EventStore("sqlite:///bank.db"), Account, snapshot_every=100)
    account = Account("account-1"); account.deposit(10); accounts.save(account)
    accounts.get("account-1").balance  # 10

Snapshots are stored under the class name, or `__aggregate_type__` if the class sets one (so a
renamed class still reads its old snapshots). An aggregate's `__init__` takes only its id (the
repository calls `cls(id)` before replaying). Its state is its public attributes; a snapshot
stores them as JSON and restores them through the class's annotations (so `items: list[Item]`
comes back as `Item` objects).
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events import from_data
from inmotion.sourcing.errors import AggregateNotFound, UnreadableEvent
from inmotion.sourcing.store import EventStore, StoredSnapshot, encode_json
from inmotion.sourcing.versioning import EventTypes, schema_version, upcast

A = TypeVar("A", bound="Aggregate")
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

_APPLIES = "__inmotion_applies__"


def applies(*event_classes: type) -> Callable[[F], F]:
    """Mark an aggregate method as the applier of these event classes."""
    return marker(_APPLIES, "@applies", event_classes)


def marker(attribute: str, decorator: str, event_classes: tuple[type, ...]) -> Callable[[F], F]:
    """A decorator that records `event_classes` on a method, for `marked_methods` to find."""
    if not event_classes:
        raise InvalidConfig(f"{decorator} needs at least one event class")

    def mark(method: F) -> F:
        setattr(method, attribute, event_classes)
        return method

    return mark


def marked_methods(cls: type, attribute: str) -> dict[type, Callable[..., Any]]:
    """Event class -> method, for the methods of `cls` (and its bases) that `marker` marked."""
    methods: dict[type, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            for event_class in getattr(value, attribute, ()):
                methods[event_class] = value
    return methods


class Aggregate:
    """An event-sourced object: `emit` records an event and applies it at once."""

    __snapshot_version__: ClassVar[int] = 1
    _appliers: ClassVar[dict[type, Callable[[Any, Any], None]]] = {}
    _event_types: ClassVar[EventTypes] = EventTypes()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._appliers = marked_methods(cls, _APPLIES)
        cls._event_types = EventTypes(cls._appliers)
        schema_version(cls, "__snapshot_version__", inherited=True)

    def __init__(self, id: str) -> None:
        if not isinstance(id, str) or not id:
            raise InvalidConfig(f"an aggregate id is a non-empty string, got {id!r}")
        self._id = id
        self._stored_version = 0
        self._pending: list[Any] = []

    @property
    def id(self) -> str:
        return self._id

    @property
    def version(self) -> int:
        """The version after the pending events (the stored version plus their count)."""
        return self._stored_version + len(self._pending)

    @property
    def pending_events(self) -> tuple[Any, ...]:
        return tuple(self._pending)

    def emit(self, event: Any) -> None:
        """Apply `event` to this aggregate and keep it for the next `Repository.save`."""
        self._apply(event)
        self._pending.append(event)

    def _apply(self, event: Any) -> None:
        applier = self._appliers.get(type(event))
        if applier is None:
            raise InvalidConfig(
                f"{type(self).__qualname__} has no applier for {type(event).__qualname__}: mark one with @applies"
            )
        applier(self, event)

    def snapshot_state(self) -> dict[str, Any]:
        """The state a snapshot keeps: the public attributes."""
        return {name: value for name, value in vars(self).items() if not name.startswith("_")}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Set the state from a snapshot's JSON data, typed through the class's annotations."""
        hints = _state_hints(type(self))
        for name, value in state.items():
            setattr(self, name, from_data(value, hints[name]) if name in hints else value)


def _state_hints(cls: type) -> dict[str, Any]:
    cached: dict[str, Any] | None = cls.__dict__.get("_inmotion_state_hints")
    if cached is None:
        try:
            cached = typing.get_type_hints(cls)
        except NameError as exc:
            raise InvalidConfig(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
        type.__setattr__(cls, "_inmotion_state_hints", cached)
    return cached


class Repository(Generic[A]):
    """Loads and saves aggregates of one class; `snapshot_every=N` stores a snapshot each N events."""

    def __init__(self, store: EventStore, aggregate: type[A], *, snapshot_every: int | None = None) -> None:
        if snapshot_every is not None and (
            isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1
        ):
            raise InvalidConfig(f"snapshot_every must be a positive integer or None, got {snapshot_every!r}")
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every
        self._snapshot_type = aggregate.__dict__.get("__aggregate_type__", aggregate.__name__)
        self._snapshot_version = schema_version(aggregate, "__snapshot_version__", inherited=True)

    def get(self, id: str) -> A:
        """The aggregate as of its newest event; `AggregateNotFound` if it has none."""
        aggregate = self._from_snapshot(id) if self.snapshot_every else None
        if aggregate is None:
            aggregate = self.aggregate(id)
        events = self.store.read(id, aggregate._stored_version + 1)
        if not events and aggregate._stored_version == 0:
            raise AggregateNotFound(id)
        decode = self.aggregate._event_types.decode
        for stored in events:
            aggregate._apply(decode(stored))
        if events:
            aggregate._stored_version = events[-1].version
        return aggregate

    def save(self, aggregate: A) -> int:
        """Store the pending events; the new version. `ConcurrencyError` if somebody saved
        first: nothing is written, and the caller reloads with `get` and retries."""
        if not isinstance(aggregate, self.aggregate):
            raise InvalidConfig(
                f"this repository saves {self.aggregate.__qualname__}, not {type(aggregate).__qualname__}"
            )
        pending = aggregate._pending
        stored = aggregate._stored_version
        if not pending:
            return stored
        events = self.aggregate._event_types.encode(pending)
        new_version = stored + len(events)
        snapshot = None
        if self.snapshot_every and new_version // self.snapshot_every > stored // self.snapshot_every:
            snapshot = (self._snapshot_type, self._snapshot_version, encode_json(aggregate.snapshot_state()))
        aggregate._stored_version = self.store.recorder.append(aggregate.id, events, stored, snapshot)
        aggregate._pending = []
        return aggregate._stored_version

    async def aget(self, id: str) -> A:
        return await asyncio.to_thread(self.get, id)

    async def asave(self, aggregate: A) -> int:
        return await asyncio.to_thread(self.save, aggregate)

    def _from_snapshot(self, id: str) -> A | None:
        snapshot = self.store.load_snapshot(id)
        if snapshot is None or snapshot.type != self._snapshot_type:
            return None
        aggregate = self.aggregate(id)
        try:
            aggregate.restore_state(self._snapshot_data(snapshot))
        except (UnreadableEvent, InvalidEvent, ValueError) as exc:
            # A snapshot is a cache of the events: when it cannot be read, replay them all.
            logger.warning("ignoring the snapshot of %r at version %d: %s", id, snapshot.version, exc)
            return None
        aggregate._stored_version = snapshot.version
        return aggregate

    def _snapshot_data(self, snapshot: StoredSnapshot) -> Any:
        return upcast(
            self.aggregate, "upcast_snapshot_", snapshot.data, snapshot.schema_version, self._snapshot_version
        )
