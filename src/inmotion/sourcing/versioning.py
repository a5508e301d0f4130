"""Typed events by name and schema version, and the upcasters that migrate old data on read.

An event class (pydantic model, dataclass or msgspec Struct) is stored under its class name,
or under `__event_type__` if it sets one, with schema version `__schema_version__` (default
1). When a class moves to version 3, it keeps static methods `upcast_v1_v2(data)` and
`upcast_v2_v3(data)` that take and return the JSON data of the older version; events stored as
v1 are read through both. Aggregates migrate their snapshots the same way, with
`__snapshot_version__` and `upcast_snapshot_v1_v2(data)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import pydantic

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events import from_data
from inmotion.sourcing.errors import UnreadableEvent
from inmotion.sourcing.store import EncodedEvent, StoredEvent, encode_json, new_event_ids


def event_type_name(cls: type) -> str:
    """The name that events of `cls` are stored under (not inherited by subclasses)."""
    name = cls.__dict__.get("__event_type__", cls.__name__)
    if not isinstance(name, str) or not name:
        raise InvalidConfig(f"{cls.__qualname__}.__event_type__ must be a non-empty string")
    return name


def schema_version(cls: type, attribute: str = "__schema_version__", *, inherited: bool = False) -> int:
    """The class's schema version: an event class's is its own (a subclass is another event),
    an aggregate's snapshot version passes to subclasses (`inherited`)."""
    version = getattr(cls, attribute, 1) if inherited else cls.__dict__.get(attribute, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidConfig(f"{cls.__qualname__}.{attribute} must be an integer >= 1, got {version!r}")
    return version


def upcast(owner: type, prefix: str, data: Any, stored: int, current: int) -> Any:
    """Run `owner`'s upcasters `{prefix}v{n}_v{n+1}` from version `stored` to `current`.

    Raises ValueError with the reason when the data cannot get there.
    """
    if stored > current:
        raise ValueError(f"stored with schema version {stored}, newer than {owner.__qualname__}'s {current}")
    for version in range(stored, current):
        name = f"{prefix}v{version}_v{version + 1}"
        upcaster: Callable[[Any], Any] | None = getattr(owner, name, None)
        if upcaster is None:
            raise ValueError(
                f"no upcaster from schema version {version} to {version + 1}: define {name} on {owner.__qualname__}"
            )
        try:
            data = upcaster(data)
        except Exception as exc:
            raise ValueError(f"{owner.__qualname__}.{name} failed: {exc!r}") from exc
    return data


class EventTypes:
    """A set of event classes, to encode them for the store and decode stored events back."""

    def __init__(self, classes: Iterable[type] = ()) -> None:
        self._by_name: dict[str, tuple[type, int, Callable[[bytes], Any]]] = {}
        self._names: dict[type, tuple[str, int]] = {}
        for cls in classes:
            self.add(cls)

    def add(self, cls: type) -> None:
        name, version = event_type_name(cls), schema_version(cls)
        known = self._by_name.get(name)
        if known is not None and known[0] is not cls:
            raise InvalidConfig(
                f"two event classes are stored as {name!r}: {known[0].__qualname__} and {cls.__qualname__}"
            )
        self._by_name[name] = (cls, version, _fast_decoder(cls))
        self._names[cls] = (name, version)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_name

    def encode(self, events: Sequence[object]) -> list[EncodedEvent]:
        """The events (instances of known classes) ready to append."""
        ids = new_event_ids(len(events))
        encoded = []
        for event, id in zip(events, ids, strict=True):
            known = self._names.get(type(event))
            if known is None:
                raise InvalidConfig(f"{type(event).__qualname__} is not a known event class here")
            encoded.append(EncodedEvent(known[0], known[1], id, encode_json(event)))
        return encoded

    def decode(self, stored: StoredEvent) -> Any:
        """The stored event as an instance of its current class; `UnreadableEvent` if it cannot be."""
        known = self._by_name.get(stored.type)
        if known is None:
            raise UnreadableEvent(stored.stream_id, stored.version, f"unknown event type {stored.type!r}")
        cls, version, decode = known
        try:
            if stored.schema_version == version:
                return decode(stored.payload)
            return from_data(upcast(cls, "upcast_", stored.data, stored.schema_version, version), cls)
        except UnreadableEvent:
            raise
        except (ValueError, InvalidEvent, msgspec.ValidationError) as exc:
            raise UnreadableEvent(stored.stream_id, stored.version, f"{stored.type!r}: {exc}") from exc
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UnreadableEvent(
                stored.stream_id, stored.version, f"corrupt payload of {stored.type!r}: {exc}"
            ) from exc


def _fast_decoder(cls: type) -> Callable[[bytes], Any]:
    """JSON bytes straight to `cls`, in one pass where the library can (the common, current case)."""
    if issubclass(cls, pydantic.BaseModel):
        return cls.model_validate_json
    if not (dataclasses.is_dataclass(cls) or issubclass(cls, msgspec.Struct)):
        raise InvalidConfig(
            f"{cls.__qualname__} is not an event class: use a pydantic model, dataclass or msgspec Struct"
        )
    return msgspec.json.Decoder(cls, strict=False).decode
