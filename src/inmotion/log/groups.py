"""Consumer-group coordination, the contract: who is in a group and which partitions each member owns.

A `Coordinator` is the group side of a backend (`Log.group_coordinator()`). `join` gives a
`Membership`; the consumer calls `heartbeat()` every `heartbeat_interval` seconds and gets back
an `Assignment`: the partitions it holds and may process, and those it holds but must hand over
(finish in-flight events, commit, then `release`). A member that stops heartbeating for
`session_timeout` seconds is dead: its partitions go to the others. Kafka's own group protocol
fits the same shape (its assign/revoke callbacks fill the `Assignment`); the embedded backends
share the lease rules of `inmotion.log.leases`.

The same storage remembers which events a group has handled (`seen`/`remember`), for
idempotent subscriptions, within a bounded window (`forget_before`), and forgets chosen ones
when a replay asks for them to be handled again (`forget`); `append_unseen` appends only the
events a group has not seen (the gateway's ingress: a client's retry is not appended twice). A
backend that can commit a handler's own writes with its position offers `transactions`
(`transaction=True` subscriptions).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from inmotion.errors import InvalidConfig
from inmotion.log.base import Message, Position, TopicConfig

if TYPE_CHECKING:
    from inmotion.log.base import Log

Key = tuple[str, str]
"""An event's (source, id): what dedupe records hold."""

DEFAULT_SESSION_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    owned: frozenset[TopicPartition]
    """Partitions this member holds a lease on: it may process them."""
    revoke: frozenset[TopicPartition]
    """Held partitions that belong to another member now: finish, commit, then release them."""


@dataclasses.dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    host: str
    pid: int
    topics: tuple[str, ...]
    joined_ms: int | None
    heartbeat_ms: int | None
    session_ms: int | None
    """The member's own session timeout: silent for longer, it counts as gone. The times are
    None where the group's keeper does not tell them (Kafka lists only live members)."""

    def live(self, now_ms: int) -> bool:
        if self.heartbeat_ms is None or self.session_ms is None:
            return True
        return self.heartbeat_ms >= now_ms - self.session_ms


def deal(partitions: Mapping[str, int], members: Mapping[str, Iterable[str]]) -> dict[str, set[TopicPartition]]:
    """Who should own what: each topic's partitions dealt round-robin over its members by id."""
    wanted: dict[str, set[TopicPartition]] = {member: set() for member in members}
    for topic, count in partitions.items():
        subscribers = sorted(m for m, topics in members.items() if topic in topics)
        if subscribers:
            for partition in range(count):
                wanted[subscribers[partition % len(subscribers)]].add(TopicPartition(topic, partition))
    return wanted


class Coordinator(abc.ABC):
    """The group side of a backend: membership, partition ownership, dedupe records."""

    @abc.abstractmethod
    def join(
        self,
        group: str,
        partitions: Mapping[str, int],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        member_id: str | None = None,
    ) -> Membership:
        """Join `group` to consume `partitions` (topic -> partition count)."""

    @abc.abstractmethod
    def groups(self) -> list[str]:
        """Groups with at least one member, live or not yet timed out."""

    @abc.abstractmethod
    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        """The group's members that are live (or also those not yet removed, silent ones)."""

    @abc.abstractmethod
    def owners(self, group: str) -> dict[TopicPartition, str]:
        """Which member holds each leased partition."""

    @abc.abstractmethod
    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (source, id) pairs that the group has already handled. Must not wait
        for locks or the network: the consumer asks on its event loop."""

    @abc.abstractmethod
    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        """Record (source, id) pairs as handled by the group."""

    def remember_now(self, group: str, keys: Sequence[tuple[str, str]]) -> bool:
        """`remember` if it can be done at once, without waiting for a lock or the network (on
        an event loop); False, with nothing done, otherwise (call `remember` in a thread)."""
        return False

    @abc.abstractmethod
    def forget_before(self, group: str, cutoff_ms: int) -> int:
        """Drop the group's dedupe records older than `cutoff_ms` (the window's far end); returns how many."""

    @abc.abstractmethod
    def forget(self, group: str, keys: Sequence[tuple[str, str]]) -> int:
        """Drop the group's dedupe records of these (source, id) pairs, so that the group
        handles those events again (a replay); returns how many it had. Durable on return."""

    def flush(self, group: str) -> None:  # noqa: B027 - most coordinators remember synchronously
        """Make the group's remembered dedupe records durable (before offsets past them are committed)."""

    def append_unseen(
        self, log: Log, group: str, topic: str, messages: Sequence[Message], keys: Sequence[Key]
    ) -> list[Position | None]:
        """Append to `topic` those `messages` whose key (the event's (source, id), `keys[i]` for
        `messages[i]`) the group has not seen, nor an earlier one of `keys`, and remember their
        keys, durably: their positions, None for the copies. Where the backend has transactions
        (SQLite, `log` being the coordinator's own) the check, the append and the records are
        one: copies appended at once by two processes are appended once. Elsewhere the three
        steps follow each other, and such copies may both be appended."""
        fresh = unseen(keys, self.seen(group, list(dict.fromkeys(keys))))
        appended = log.append(topic, [messages[i] for i in fresh]) if fresh else []
        self.remember(group, [keys[i] for i in fresh])
        self.flush(group)
        return placed(len(keys), fresh, appended)

    def append_unseen_now(
        self, log: Log, group: str, topic: str, messages: Sequence[Message], keys: Sequence[Key]
    ) -> list[Position | None] | None:
        """`append_unseen` if it can be done at once, without waiting for a lock or the network
        (on an event loop); None, with nothing done, otherwise (call `append_unseen` in a thread)."""
        return None

    def transaction(self, group: str) -> Transaction:
        """A `Transaction` for a member of `group` (a `transaction=True` subscription);
        InvalidConfig where the backend cannot commit a handler's writes with its position."""
        raise InvalidConfig(f"transaction=True is not supported by {type(self).__name__}: use the sqlite backend")

    def close(self) -> None:  # noqa: B027 - most coordinators hold nothing to release
        """Release the coordinator's resources."""


def unseen(keys: Sequence[Key], seen: set[Key]) -> list[int]:
    """The indexes of the first occurrence of each key not in `seen`."""
    first: dict[Key, int] = {}
    for index, key in enumerate(keys):
        if key not in seen:
            first.setdefault(key, index)
    return list(first.values())


def placed(count: int, fresh: Sequence[int], appended: Sequence[Position]) -> list[Position | None]:
    """`count` positions: `appended[j]` at index `fresh[j]`, None elsewhere."""
    positions: list[Position | None] = [None] * count
    for index, position in zip(fresh, appended, strict=True):
        positions[index] = position
    return positions


class Transaction(abc.ABC):
    """A handler's writes, committed together with the events the handler published, the
    group's next offset and (idempotent subscriptions) the event's dedupe record, or not at
    all: exactly-once effects.

    One transaction at a time, on one thread at a time; `begin` may wait for the backend's write
    lock, so callers on an event loop run it in a thread.
    """

    connection: Any
    """What the handler writes its effects through (`Context.db`): a `sqlite3.Connection` on
    SQLite."""

    @abc.abstractmethod
    def begin(self) -> None: ...

    @abc.abstractmethod
    def seen(self, key: tuple[str, str]) -> bool:
        """Inside the transaction: has the group handled the event (source, id) already?"""

    @abc.abstractmethod
    def append(self, topic: str, messages: Sequence[Message], create: TopicConfig | None) -> None:
        """Append inside the transaction (a missing topic is created with `create`, when given)."""

    @abc.abstractmethod
    def commit(self, key: tuple[str, str] | None, tp: TopicPartition, next_offset: int, member_id: str) -> bool:
        """Record `key` as handled (unless None: the position alone makes the effects
        exactly-once) and `next_offset` as the group's position on `tp`, then commit; False,
        with everything rolled back, when `member_id` no longer holds `tp`."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Give up the open transaction, if any."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Membership(abc.ABC):
    """One member's seat in a group."""

    def __init__(self, group: str, member_id: str, session_timeout: float) -> None:
        if not 0.1 <= session_timeout <= 3600:
            raise InvalidConfig(f"session_timeout must be between 0.1 and 3600 seconds, got {session_timeout!r}")
        self.group = group
        self.member_id = member_id
        self.session_timeout = session_timeout
        self.heartbeat_interval = min(1.0, session_timeout / 5)
        self.revoke_now: Callable[[frozenset[TopicPartition]], Mapping[TopicPartition, int]] | None = None
        """Set by the consumer for backends whose group protocol takes partitions away at once
        (Kafka's rebalance callbacks, run inside `heartbeat`): called with the partitions being
        taken, it returns once their in-flight events are finished, with the offsets to commit
        for them (which the membership commits before it lets the partitions go)."""

    @abc.abstractmethod
    def heartbeat(self) -> Assignment: ...

    @abc.abstractmethod
    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Give up leases on `partitions` (after their progress is committed)."""

    @abc.abstractmethod
    def leave(self) -> None:
        """Leave the group, releasing every lease."""


def new_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
