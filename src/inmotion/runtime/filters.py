"""Subscription filters: which events of a topic a handler sees.

A filter is anything with a `matches(event) -> bool` method, so the router's event patterns
(`inmotion.patterns.Pattern`, or a plain pattern dict) plug in unchanged; `TypeIs` and `TypePrefix` cover the common
cases, and a plain string is shorthand for them ("shop.order.placed" or "shop.order.*").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.patterns import Pattern


@runtime_checkable
class EventFilter(Protocol):
    def matches(self, event: Event) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TypeIs:
    """Events whose `type` is one of `types`."""

    types: frozenset[str]

    def __init__(self, *types: str) -> None:
        if not types or not all(isinstance(t, str) and t for t in types):
            raise InvalidConfig("TypeIs needs one or more non-empty event types")
        object.__setattr__(self, "types", frozenset(types))

    def matches(self, event: Event) -> bool:
        return event.type in self.types


@dataclasses.dataclass(frozen=True, slots=True)
class TypePrefix:
    """Events whose `type` starts with `prefix`."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise InvalidConfig("TypePrefix needs a non-empty prefix")

    def matches(self, event: Event) -> bool:
        return event.type.startswith(self.prefix)


@dataclasses.dataclass(frozen=True, slots=True)
class _Predicate:
    function: Callable[[Event], bool]

    def matches(self, event: Event) -> bool:
        return bool(self.function(event))


FilterSpec = str | Mapping[str, Any] | EventFilter | Callable[[Event], bool] | None


def make_filter(spec: FilterSpec) -> EventFilter | None:
    """The filter that `spec` describes: None (everything), a type string ("a.b", "a.*"), an
    EventBridge event pattern (a dict, see `inmotion.patterns.Pattern`), an object with
    `matches(event)`, or a function of the event."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return Pattern(dict(spec))
    if isinstance(spec, str):
        if spec.endswith("*"):
            prefix = spec[:-1]
            if "*" in prefix:
                raise InvalidConfig(f"filter {spec!r}: only a trailing '*' is allowed")
            return TypePrefix(prefix) if prefix else None
        return TypeIs(spec)
    if isinstance(spec, EventFilter):
        return spec
    if callable(spec):
        return _Predicate(spec)
    raise InvalidConfig(f"filter must be an event type, an object with matches(event) or a function, got {spec!r}")
