"""The event store: streams of events with optimistic concurrency and one global, gap-free order.

`EventStore(url)` is the low-level API that aggregates, projections and the outbox relay build on,
and that scripts may use directly. Versions in a stream start at 1; positions over all streams
start at 1 and have no gaps, so "every event after position N" is a complete answer at any time.
The storage itself sits behind `Recorder`, one implementation per backend, chosen by the URL:
`memory://` (tests) and `sqlite:///path/to/file.db` (the embedded default, shareable with the log).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

import msgspec
import pydantic

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events import Event
from inmotion.log import default_broker
from inmotion.log.registry import backend_for
from inmotion.sourcing.errors import UnreadableEvent

EVENT_SOURCE = "inmotion.sourcing"
"""The CloudEvents `source` of events that leave the store (see `StoredEvent.to_cloudevent`)."""
ALL_EVENTS = "store:all"
"""What positions in the store's global order are kept against, where a topic's are kept against
its name (a relay's cursor, a projection of the store): ':' is in no topic name."""

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


def encode_json(data: Any) -> bytes:
    """`data` (a pydantic model, dataclass, msgspec Struct or JSON values) as JSON bytes."""
    if isinstance(data, pydantic.BaseModel):
        return data.__pydantic_serializer__.to_json(data)
    try:
        return _json_encode(data)
    except TypeError as exc:
        raise InvalidEvent("data", f"cannot encode {type(data).__name__} as JSON: {exc}") from exc


def decode_json(payload: bytes, stream_id: str, version: int, what: str) -> Any:
    """JSON bytes read back from the store; `UnreadableEvent` naming where they came from."""
    try:
        return _json_decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UnreadableEvent(stream_id, version, f"corrupt {what}: {exc}") from exc


def new_event_id() -> str:
    """A random (version 4) UUID as text; uuid.uuid4() costs several times more per event."""
    return _uuid4_text(os.urandom(16).hex())


def new_event_ids(count: int) -> list[str]:
    """`count` random UUIDs from one call for randomness."""
    hexes = os.urandom(16 * count).hex()
    return [_uuid4_text(hexes[i : i + 32]) for i in range(0, 32 * count, 32)]


def _uuid4_text(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its type name, the schema version of its data, and the data."""

    type: str
    data: Any
    schema_version: int = 1
    id: str = dataclasses.field(default_factory=new_event_id)


class StoredEvent(msgspec.Struct, frozen=True):
    """One event as stored: where it sits in its stream (`version`) and over all streams
    (`position`), and its data as JSON bytes (`payload`; `data` decodes it)."""

    stream_id: str
    version: int
    position: int
    type: str
    schema_version: int
    id: str
    recorded_ms: int
    payload: bytes

    @property
    def data(self) -> Any:
        return decode_json(self.payload, self.stream_id, self.version, f"payload of {self.type!r}")

    @property
    def recorded_at(self) -> datetime:
        return datetime.fromtimestamp(self.recorded_ms / 1000, UTC)

    def to_cloudevent(self, source: str = EVENT_SOURCE, type_prefix: str = "") -> Event:
        """The event as a CloudEvent keyed by its stream, so a log keeps each stream in order;
        its type is the stored one after `type_prefix` (`bank.` + `Deposited`)."""
        return Event.create(
            type_prefix + self.type,
            self.data,
            source=source,
            key=self.stream_id,
            subject=self.stream_id,
            id=self.id,
            time=self.recorded_at,
            datacontenttype="application/json",
            streamversion=self.version,
            schemaversion=self.schema_version,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class NewSnapshot:
    """Aggregate state to store next to an append, at the stream's new version."""

    type: str
    data: Any
    schema_version: int = 1


class StoredSnapshot(msgspec.Struct, frozen=True):
    stream_id: str
    version: int
    type: str
    schema_version: int
    payload: bytes

    @property
    def data(self) -> Any:
        return decode_json(self.payload, self.stream_id, self.version, "snapshot")


class EncodedEvent(NamedTuple):
    """An event ready for a recorder: its data already JSON bytes (made before any write)."""

    type: str
    schema_version: int
    id: str
    payload: bytes


class Recorder(abc.ABC):
    """What a backend stores. Implementations are thread-safe; `append` is atomic."""

    @abc.abstractmethod
    def append(
        self,
        stream_id: str,
        events: Sequence[EncodedEvent],
        expected_version: int,
        snapshot: tuple[str, int, bytes] | None,
    ) -> int:
        """Write all events (and the snapshot, at the new version) or nothing; the new version.

        Raises ConcurrencyError, writing nothing, unless the stream is at `expected_version`.
        """

    @abc.abstractmethod
    def read_stream(self, stream_id: str, from_version: int, to_version: int | None) -> list[StoredEvent]: ...

    @abc.abstractmethod
    def read_all(self, from_position: int, limit: int) -> list[StoredEvent]: ...

    @abc.abstractmethod
    def stream_version(self, stream_id: str) -> int: ...

    @abc.abstractmethod
    def last_position(self) -> int: ...

    @abc.abstractmethod
    def load_snapshot(self, stream_id: str) -> StoredSnapshot | None: ...

    @abc.abstractmethod
    def wait(self, after_position: int, timeout: float) -> bool: ...

    @abc.abstractmethod
    def cursor(self, name: str) -> int:
        """A named reader's saved position in `ALL_EVENTS` (0 if never saved); the outbox relay keeps
        its own here, with the backend's other positions (SQLite: its positions table)."""

    @abc.abstractmethod
    def save_cursor(self, name: str, position: int) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class EventStore:
    """Streams of events in one store, chosen by URL: `memory://` or `sqlite:///path/to/file.db`.

    The SQLite store may live in the log's file (the default `INMOTION_BROKER`); several
    processes may append to it at once. URL options for SQLite: `durability=normal|fsync`,
    `timeout=SECONDS` (wait for another process's write lock), `poll=SECONDS` (how often `wait`
    looks for other processes' appends).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_broker()
        self._recorder = _open_recorder(self.url)

    # --- writing ---------------------------------------------------------------------------
    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        snapshot: NewSnapshot | None = None,
    ) -> int:
        """Append `events` to the stream if it is at `expected_version` (0: does not exist yet).

        Returns the stream's new version. On a conflict raises `ConcurrencyError` and writes
        nothing; `snapshot` (state at the new version) is written in the same transaction.
        """
        _check_stream_id(stream_id)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
            raise InvalidConfig(f"expected_version must be an integer >= 0, got {expected_version!r}")
        encoded = [_encode_event(event) for event in events]
        stored_snapshot = None
        if snapshot is not None:
            stored_snapshot = (
                snapshot.type,
                _check_schema_version(snapshot.schema_version),
                encode_json(snapshot.data),
            )
        return self._recorder.append(stream_id, encoded, expected_version, stored_snapshot)

    # --- reading ---------------------------------------------------------------------------
    def read(self, stream_id: str, from_version: int = 1, to_version: int | None = None) -> list[StoredEvent]:
        """The stream's events with `from_version <= version <= to_version`, in order."""
        _check_stream_id(stream_id)
        return self._recorder.read_stream(stream_id, max(from_version, 1), to_version)

    def read_all(self, from_position: int = 1, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events of every stream with `position >= from_position`, in order."""
        return self._recorder.read_all(max(from_position, 1), limit)

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 if it does not exist)."""
        _check_stream_id(stream_id)
        return self._recorder.stream_version(stream_id)

    def last_position(self) -> int:
        """The position of the newest event (0 if the store is empty)."""
        return self._recorder.last_position()

    def load_snapshot(self, stream_id: str) -> StoredSnapshot | None:
        """The newest snapshot of the stream, if any."""
        return self._recorder.load_snapshot(stream_id)

    def wait(self, after_position: int, timeout: float) -> bool:
        """Block until an event past `after_position` exists (True) or `timeout` seconds pass."""
        return self._recorder.wait(after_position, timeout)

    # --- async twins -------------------------------------------------------------------------
    async def aappend(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        snapshot: NewSnapshot | None = None,
    ) -> int:
        return await asyncio.to_thread(self.append, stream_id, events, expected_version, snapshot=snapshot)

    async def aread(self, stream_id: str, from_version: int = 1, to_version: int | None = None) -> list[StoredEvent]:
        return await asyncio.to_thread(self.read, stream_id, from_version, to_version)

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._recorder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def recorder(self) -> Recorder:
        return self._recorder


def check_type_prefix(prefix: object) -> None:
    """A prefix for the types of published events (`bank.`): text, without whitespace."""
    if not isinstance(prefix, str) or any(c.isspace() for c in prefix):
        raise InvalidConfig(f"type_prefix must be text without whitespace, e.g. 'bank.', got {prefix!r}")


def _open_recorder(url: str) -> Recorder:
    backend, parts, options = backend_for(url)
    opener = getattr(backend, "open_recorder", None)
    if opener is None:
        raise InvalidConfig(f"the event store cannot live on {parts.scheme}://: use sqlite:///path/to/file.db")
    recorder: Recorder = opener(url, parts, options)
    return recorder


def _check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str) or not stream_id:
        raise InvalidConfig(f"a stream id is a non-empty string, got {stream_id!r}")


def _check_schema_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidConfig(f"a schema version is an integer >= 1, got {version!r}")
    return version


def _encode_event(event: NewEvent) -> EncodedEvent:
    if not isinstance(event, NewEvent):
        raise InvalidConfig(f"append takes NewEvent objects, got {type(event).__name__}")
    if not isinstance(event.type, str) or not event.type:
        raise InvalidConfig(f"an event type is a non-empty string, got {event.type!r}")
    return EncodedEvent(event.type, _check_schema_version(event.schema_version), event.id, encode_json(event.data))
