"""The CloudEvents 1.0 envelope."""

from __future__ import annotations

import builtins
import functools
import itertools
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from inmotion.errors import InvalidEvent
from inmotion.events.payload import from_data

T = TypeVar("T")

SPECVERSION = "1.0"
CORE_ATTRIBUTES = frozenset({"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"})
RESERVED_NAMES = CORE_ATTRIBUTES | {"data", "data_base64"}
PARTITIONKEY = "partitionkey"

_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
ExtensionValue = str | int | bool | bytes | datetime


_utcnow = functools.partial(datetime.now, UTC)  # no Python frame of its own: made once an event


def _new_id() -> str:
    """A unique event id in the UUID text form (RFC 9562 version 8: custom layout): a random
    prefix drawn once per process (74 random bits) and a counter that starts at a random
    value below 2**47. Unique like a random UUID, at a fifth of the cost of one (no randomness to
    draw and format per event). A forked child draws a prefix of its own. Ids that follow each
    other are easy to guess: an id is a name, never a secret."""
    return _id_prefix + "%012x" % next(_id_counter)  # noqa: UP031 - faster than a format spec


def _fresh_ids() -> None:
    global _id_prefix, _id_counter
    h = "%020x" % (random.getrandbits(80) & ~(0xF << 28 | 0x3 << 14) | 0x8 << 28 | 0x2 << 14)
    _id_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
    _id_counter = itertools.count(random.getrandbits(47))  # 2**47 events before it needs a 13th digit


_id_prefix: str
_id_counter: Iterator[int]
_fresh_ids()
os.register_at_fork(after_in_child=_fresh_ids)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One CloudEvent: context attributes, extensions and data.

    `data` holds whatever the producer gave (a pydantic model, dataclass, msgspec Struct,
    JSON value or bytes); after decoding from the wire it holds the JSON value or bytes, and
    `data_as(cls)` turns it back into the producer's class.

    The garbage collector does not track events (`gc=False`): services make them by the
    million and batches of them outlive several collections, each of which scanned them all
    again. So an event's data must never refer back to the event itself: such a cycle would
    never be freed.
    """

    type: str
    source: str
    data: Any = None
    id: str = msgspec.field(default_factory=_new_id)
    specversion: str = SPECVERSION
    subject: str | None = None
    time: datetime | None = msgspec.field(default_factory=_utcnow)
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: Mapping[str, ExtensionValue] = msgspec.field(default_factory=dict)

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
            if type(value) is not str or name not in _known_good_names:  # the usual extension passes here
                _check_extension(name, value)
        msgspec.structs.force_setattr(self, "extensions", extensions)

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
        return msgspec.structs.replace(self, **changes)

    def with_extensions(self, **extensions: ExtensionValue) -> Event:
        merged = dict(self.extensions)
        merged.update(extensions)
        return msgspec.structs.replace(self, extensions=merged)


def new_event(type: str, source: str, data: Any = None, subject: str | None = None, key: str | None = None) -> Event:
    """`Event(type=type, source=source, data=data, subject=subject)` with `key` as its
    partitionkey, at about two thirds of the cost: how publishers make events by the million.

    The attributes that repeat from event to event (type and source) are checked once, when a
    template event is built for them; each event is a copy of its template with an id, a time,
    data, subject and extensions of its own, so `Event.__post_init__` does not run again.
    Anything unusual (a key or subject that is not text, more than _MAX_TEMPLATES pairs of
    type and source) gets an `Event` built in full."""
    extensions: dict[str, ExtensionValue] = {} if key is None else {PARTITIONKEY: key}
    try:
        template = _templates.get((type, source))
    except TypeError:  # an unhashable attribute: Event names it
        template = None
    if (
        (template is None and len(_templates) >= _MAX_TEMPLATES)
        or (key is not None and builtins.type(key) is not str)
        or (subject is not None and (builtins.type(subject) is not str or not subject))
    ):
        return Event(type=type, source=source, data=data, subject=subject, extensions=extensions)
    if template is None:
        template = _templates[(type, source)] = Event(type=type, source=source)
    event = _copy(template)
    _force_setattr(event, "id", _new_id())
    _force_setattr(event, "time", _utcnow())
    _force_setattr(event, "data", data)
    _force_setattr(event, "extensions", extensions)
    if subject is not None:
        _force_setattr(event, "subject", subject)
    return event


_templates: dict[tuple[str, str], Event] = {}
_MAX_TEMPLATES = 1024
_force_setattr = msgspec.structs.force_setattr
_copy: Callable[[Event], Event] = Event.__copy__  # type: ignore[attr-defined]  # msgspec's, skips __post_init__


def _require_string(attribute: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidEvent(attribute, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent(attribute, "must be a non-empty string")


def _check_extension(name: str, value: object) -> None:
    """Called for extensions not yet known good (see `__post_init__`)."""
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
