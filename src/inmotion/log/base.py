"""The durable log contract that every backend implements.

A topic has N partitions; offsets in a partition start at 0 and only grow; order is kept per
partition. A record's timestamp is its append time in milliseconds since the epoch and never
decreases within a partition, so `offset_for_time` is well defined. A consumer group's
committed offset for a partition is the next offset to read.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import msgspec

from inmotion.errors import InvalidConfig
from inmotion.events import Event, from_binary, to_binary
from inmotion.log.partitioner import key_hash

if TYPE_CHECKING:
    from inmotion.log.groups import Coordinator

Headers = tuple[tuple[str, bytes], ...]
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_GROUP_NAME = re.compile(r"[^\x00-\x1f]{1,255}")


_BYTES_OR_NONE = {bytes, type(None)}
_BLOB_TYPES = {bytes, bytearray, memoryview, type(None)}


def check_blobs(keys: Sequence[object], values: Sequence[object]) -> bool:
    """What a backend checks before it stores anything of an append: InvalidConfig unless every
    key and value is bytes-like or None (a text key once failed deep in an append with
    "unsupported operand type(s) for ^=", and the in-memory log stored text values). True if
    all are bytes or None; False if some are other bytes-like objects (bytearray, memoryview),
    for a backend that must make them bytes (`as_bytes`)."""
    types = {*map(type, keys), *map(type, values)}
    if types <= _BYTES_OR_NONE:
        return True
    if not types <= _BLOB_TYPES:
        odd = next(type(item).__name__ for item in [*keys, *values] if type(item) not in _BLOB_TYPES)
        raise InvalidConfig(f"a message's key and value are bytes or None, not {odd}")
    return False


def as_bytes(blob: bytes | bytearray | memoryview | None) -> bytes | None:
    return blob if blob is None or type(blob) is bytes else bytes(blob)


def check_topic_name(name: str) -> str:
    """Kafka's topic name rules, so a topic created here can exist on Kafka too."""
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
        raise InvalidConfig(f"invalid topic name {name!r}: use 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'")
    return name


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise InvalidConfig(f"invalid consumer group name {name!r}")
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class TopicConfig:
    """How a topic is laid out and how long it keeps records.

    `retention_ms` and `retention_bytes` (per partition, as in Kafka) are None for "forever";
    `compact` keeps only the newest record per key (a None value is a tombstone).
    """

    partitions: int = 1
    retention_ms: int | None = None
    retention_bytes: int | None = None
    compact: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int):
            raise InvalidConfig("partitions must be an integer")
        if not 1 <= self.partitions <= 10_000:
            raise InvalidConfig(f"partitions must be between 1 and 10000, got {self.partitions}")
        for name in ("retention_ms", "retention_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise InvalidConfig(f"{name} must be a positive integer or None, got {value!r}")

    @property
    def cleanup_policy(self) -> Literal["delete", "compact"]:
        return "compact" if self.compact else "delete"


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    earliest: int
    """The first offset still stored (the log start offset)."""
    latest: int
    """The next offset to be written (the high watermark)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    config: TopicConfig
    partitions: tuple[PartitionInfo, ...]


class Message(msgspec.Struct, frozen=True, gc=False):
    """What a producer appends. `partition` overrides the key's partition.

    Message, Record and Position are frozen structs that the garbage collector does not track
    (`gc=False`: they hold only bytes, numbers, text and tuples of those, so they can never be
    part of a reference cycle). Logs make millions of them, and batches of them outlive several
    collections: tracked, each batch was scanned again and again and pushed the collector into
    full collections of the whole heap."""

    value: bytes | None
    key: bytes | None = None
    headers: Headers = ()
    partition: int | None = None

    def __post_init__(self) -> None:
        # Checked here, where the message is made: stored, a header of another type would make
        # the SQLite log's batch undecodable (a CorruptRecord for every later reader)
        try:
            for name, value in self.headers:
                if type(name) is not str or type(value) is not bytes:
                    break
            else:
                return
        except (TypeError, ValueError):  # not pairs
            pass
        raise InvalidConfig(f"a message's headers are (str, bytes) pairs, got {reprlib.repr(self.headers)}")

    @classmethod
    def from_event(cls, event: Event) -> Message:
        key, headers, value = to_binary(event)
        return cls(value, key, tuple(headers))


class Record(msgspec.Struct, frozen=True, gc=False):
    """One stored record."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def event(self) -> Event:
        """The CloudEvent this record carries (binary binding)."""
        return from_binary(self.key, self.headers, self.value)


class Position(msgspec.Struct, frozen=True, gc=False):
    partition: int
    offset: int


STICKY = 32
"""Messages without a key that go to one partition in a row (see `Log.partitions_of`)."""


class Log(abc.ABC):
    """A durable, partitioned, append-only log. Implementations are thread-safe."""

    url: str

    def __init__(self) -> None:
        self._round_robin = itertools.count()

    # --- topics ---------------------------------------------------------------------------
    @abc.abstractmethod
    def create_topic(self, name: str, config: TopicConfig = TopicConfig()) -> None:
        """Create a topic; raises TopicExists if there is one by that name."""

    @abc.abstractmethod
    def delete_topic(self, name: str) -> None:
        """Delete a topic with its records and committed offsets; UnknownTopic if absent."""

    @abc.abstractmethod
    def list_topics(self) -> list[str]:
        """Topic names, sorted."""

    @abc.abstractmethod
    def describe_topic(self, name: str) -> TopicInfo: ...

    @abc.abstractmethod
    def partition_count(self, topic: str) -> int: ...

    def topic_id(self, name: str) -> str | None:
        """An id of the topic that changes when it is deleted and created again, so that a
        consumer notices it must start over (UnknownTopic if there is no such topic; None from a
        backend that cannot tell)."""
        self.partition_count(name)
        return None

    # --- records --------------------------------------------------------------------------
    @abc.abstractmethod
    def append(self, topic: str, messages: Sequence[Message]) -> list[Position]:
        """Append a batch atomically; returns each message's position, in order.

        Returns only after the records are durable at the backend's configured durability.
        """

    def append_records(self, topic: str, messages: Sequence[Message]) -> tuple[list[Position], list[Record] | None]:
        """`append`, also returning the records as stored (offsets and timestamps included) when
        the backend knows them without reading them back, else None. The runtime hands them to
        this process's consumers, which then need not read what was just written."""
        return self.append(topic, messages), None

    appends_now = False
    """True when `append_now` and `commit_now` can succeed (a SQLite log without fsync'd commits)."""

    def append_now(
        self, topic: str, messages: Sequence[Message], *, records: bool = True
    ) -> tuple[list[Position], list[Record] | None] | None:
        """`append_records` (or, without `records`, `append` and None for the records) if it
        can be done at once, without waiting for a lock or a disk flush; else None, and nothing
        is written. An event loop appends this way instead of handing the batch to a thread
        (whose every wait for the GIL behind a busy loop adds milliseconds); backends that
        always wait answer None."""
        return None

    @abc.abstractmethod
    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        """Up to `limit` records of one partition with offsets >= `offset`, in order.

        Stored records that cannot be decoded end what a read returns; a read that starts at
        them raises CorruptRecord, naming their offsets."""

    def read_now(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record] | None:
        """`read` without waiting for the network or a lock: the records from `offset` that the
        backend holds at once (a prefix of what `read` returns, maybe none), or None when it
        cannot tell without waiting (read in a thread then). An event loop reads this way. The
        embedded logs read at once."""
        return self.read(topic, partition, offset, limit)

    @abc.abstractmethod
    def wait(self, topic: str, positions: Mapping[int, int], timeout: float) -> bool:
        """Block until a partition in `positions` has a record at or past its offset.

        Returns True when there is something to read, False when `timeout` seconds passed.
        """

    poll: float | None = None
    """Set (in seconds) by a backend whose `data_version` is cheap enough to call from an event
    loop that often, instead of blocking in `wait` on a thread."""

    def data_version(self) -> int | None:
        """A number that changes whenever records may have been appended, by this process or any
        other; None from a backend that has no such number (wait with `wait` there)."""
        return None

    @abc.abstractmethod
    def earliest_offset(self, topic: str, partition: int) -> int: ...

    @abc.abstractmethod
    def latest_offset(self, topic: str, partition: int) -> int:
        """The next offset to be written in the partition (its high watermark)."""

    @abc.abstractmethod
    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= `timestamp_ms` (the high watermark if none)."""

    # --- consumer group offsets ----------------------------------------------------------
    @abc.abstractmethod
    def commit(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> None:
        """Store `offsets` (partition -> next offset to read) for the group. With `forward_only`,
        a partition's stored offset that is further on stays: a consumer's commits never move
        its group back, though a member paused past its session may make one late, after
        another member went on (a reset, as `inmotion replay` does, moves offsets back). A
        backend whose group fences a lapsed member's commits may ignore it."""

    def commit_now(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> bool:
        """`commit` if it can be done at once (see `append_now`); False, with nothing written, if not."""
        return False

    @abc.abstractmethod
    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets on the topic (partitions never committed are absent)."""

    @abc.abstractmethod
    def list_groups(self) -> list[str]: ...

    def group_topics(self, group: str) -> list[str]:
        """The topics on which `group` has committed offsets, sorted (backends answer in one lookup)."""
        return [topic for topic in self.list_topics() if self.committed(group, topic)]

    def group_coordinator(self) -> Coordinator:
        """The group side of this backend: membership, partition ownership, dedupe records
        (see `inmotion.log.groups`). The caller closes it."""
        raise InvalidConfig(f"consumer groups are not supported on {self.url}")

    # --- maintenance ----------------------------------------------------------------------
    @abc.abstractmethod
    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Apply retention and compaction now (as if at `now_ms`); returns records removed."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # --- conveniences shared by every backend -------------------------------------------
    def append_events(self, topic: str, events: Iterable[Event]) -> list[Position]:
        return self.append(topic, [Message.from_event(event) for event in events])

    def partitions_of(self, messages: Sequence[Message], partitions: int) -> list[int]:
        """Where each message goes: its explicit partition, its key's, or, without a key, one
        partition for STICKY messages in a row, then the next, and the next append starts one
        partition further (Kafka's sticky partitioner, KIP-480): an append of a few messages
        writes one batch to one partition, not a batch to each."""
        first, keyless = next(self._round_robin), itertools.count()
        try:
            return [
                m.partition
                if m.partition is not None
                else key_hash(m.key) % partitions  # partition_for_key, one call less per message
                if m.key is not None
                else (first + next(keyless) // STICKY) % partitions
                for m in messages
            ]
        except (TypeError, ValueError):  # a key key_hash cannot take: InvalidConfig, or made bytes
            check_blobs([m.key for m in messages], ())
            return self.partitions_of(
                [Message(m.value, as_bytes(m.key), (), m.partition) for m in messages], partitions
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
