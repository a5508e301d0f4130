"""The CloudEvents 1.0 envelope."""

from __future__ import annotations

import builtins
import dataclasses
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from inmotion.errors import InvalidEvent
from inmotion.events.payload import from_data

T = TypeVar("T")

SPECVERSION = "1.0"
CORE_ATTRIBUTES = frozenset({"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"})
RESERVED_NAMES = CORE_ATTRIBUTES | {"data", "data_base64"}
PARTITIONKEY = "partitionkey"

_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
ExtensionValue = str | int | bool | bytes | datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    """A random (version 4) UUID string, at a fraction of the cost of str(uuid.uuid4()).

    `random` is reseeded in forked children, so processes never share a sequence."""
    h = "%032x" % (random.getrandbits(128) & _UUID_CLEAR | _UUID_V4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One CloudEvent: context attributes, extensions and data.

    `data` holds whatever the producer gave (a pydantic model, dataclass, msgspec Struct,
    JSON value or bytes); after decoding from the wire it holds the JSON value or bytes, and
    `data_as(cls)` turns it back into the producer's class.
    """

    type: str
    source: str
    data: Any = None
    id: str = dataclasses.field(default_factory=_new_id)
    specversion: str = SPECVERSION
    subject: str | None = None
    time: datetime | None = dataclasses.field(default_factory=_utcnow)
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: Mapping[str, ExtensionValue] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # The usual event (text type, source and id; no optional text attributes; an aware
        # time) passes with a handful of type checks; anything else gets the full checks.
        if not (
            type(self.type) is str
            and type(self.source) is str
            and type(self.id) is str
            and self.type
            and self.source
            and self.id
        ):
            for name in ("type", "source", "id"):
                _require_string(name, getattr(self, name))
        if self.specversion != SPECVERSION:
            raise InvalidEvent("specversion", f"must be {SPECVERSION!r}, got {self.specversion!r}")
        if self.subject is not None or self.datacontenttype is not None or self.dataschema is not None:
            for name in ("subject", "datacontenttype", "dataschema"):
                value = getattr(self, name)
                if value is not None:
                    _require_string(name, value)
        time = self.time
        if time is not None and (type(time) is not datetime or time.tzinfo is None):
            if not isinstance(time, datetime):
                raise InvalidEvent("time", "must be a datetime")
            if time.tzinfo is None:
                raise InvalidEvent("time", "must carry a time zone (RFC 3339)")
        extensions = dict(self.extensions)
        for name, value in extensions.items():
            _check_extension(name, value)
        object.__setattr__(self, "extensions", extensions)

    @classmethod
    def create(
        cls,
        type: str,
        data: Any = None,
        *,
        source: str,
        key: str | None = None,
        subject: str | None = None,
        **attributes: Any,
    ) -> Event:
        """Build an event; `key` becomes the `partitionkey` extension, unknown keywords
        become extensions, and the known optional attributes are passed through."""
        extensions: dict[str, ExtensionValue] = dict(attributes.pop("extensions", None) or ())
        known = {}
        if attributes:
            known = {name: attributes.pop(name) for name in list(attributes) if name in CORE_ATTRIBUTES}
            extensions.update(attributes)
        if key is not None:
            extensions[PARTITIONKEY] = key
        return cls(type=type, source=source, data=data, subject=subject, extensions=extensions, **known)

    @property
    def key(self) -> str | None:
        """The partition key (the `partitionkey` extension), if any."""
        value = self.extensions.get(PARTITIONKEY)
        return None if value is None else str(value)

    def data_as(self, cls: builtins.type[T]) -> T:
        """The data decoded into `cls` (pydantic model, dataclass, msgspec Struct, dict...)."""
        return from_data(self.data, cls)

    def replace(self, **changes: Any) -> Event:
        return dataclasses.replace(self, **changes)

    def with_extensions(self, **extensions: ExtensionValue) -> Event:
        merged = dict(self.extensions)
        merged.update(extensions)
        return dataclasses.replace(self, extensions=merged)


def _require_string(attribute: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidEvent(attribute, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent(attribute, "must be a non-empty string")


def _check_extension(name: str, value: object) -> None:
    if type(value) is str and name in _known_good_names:
        return
    if not isinstance(name, str) or not _EXTENSION_NAME.fullmatch(name):
        raise InvalidEvent(str(name), "extension names use only lower-case letters a-z and digits 0-9")
    if name in RESERVED_NAMES:
        raise InvalidEvent(name, "is a reserved attribute name, not an extension")
    if not isinstance(value, str | int | bool | bytes | datetime):
        raise InvalidEvent(
            name,
            f"extension values are strings, integers, booleans, bytes or times, got {type(value).__name__}",
        )
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**31) <= value < 2**31:
        raise InvalidEvent(name, "integer extension values must fit in a signed 32-bit integer")
    if len(_known_good_names) < 1024:
        _known_good_names.add(name)


_known_good_names: set[str] = set()  # extension names already checked: most events reuse a few
