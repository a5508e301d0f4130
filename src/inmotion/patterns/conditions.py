"""The conditions of EventBridge event patterns: one element of a leaf array each (an exact
value, prefix, suffix, wildcard, numeric range, CIDR, anything-but, exists, ...), each with
its own test of a value. `inmotion.patterns.parse` parses patterns into them."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from typing import Any, ClassVar, TypeAlias

MISSING: Any = object()
"""What a document holds where it has no field."""
Scalar: TypeAlias = str | int | float | bool | None

# --- conditions: one element of a leaf array -------------------------------------------------


class Condition:
    """One element of a leaf array. `rank` orders conditions from cheap and selective to costly."""

    rank: ClassVar[int]
    __slots__ = ()

    def test(self, value: Any) -> bool:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, slots=True)
class Exact(Condition):
    """A literal string, number, true, false or null. `tag` keeps `true` apart from `1`."""

    tag: str
    value: Scalar
    rank: ClassVar[int] = 0

    @classmethod
    def of(cls, value: Scalar) -> Exact:
        return cls(_tag(value), value)

    def test(self, value: Any) -> bool:
        return _tag(value) == self.tag and value == self.value


@dataclasses.dataclass(frozen=True, slots=True)
class EqualsIgnoreCase(Condition):
    lowered: str
    rank: ClassVar[int] = 1

    def test(self, value: Any) -> bool:
        return type(value) is str and value.lower() == self.lowered


@dataclasses.dataclass(frozen=True, slots=True)
class Prefix(Condition):
    text: str
    ignore_case: bool = False
    rank: ClassVar[int] = 1

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).startswith(self.text)


@dataclasses.dataclass(frozen=True, slots=True)
class Suffix(Condition):
    text: str
    ignore_case: bool = False
    rank: ClassVar[int] = 1

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        return (value.lower() if self.ignore_case else value).endswith(self.text)


@dataclasses.dataclass(frozen=True, slots=True)
class Cidr(Condition):
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    rank: ClassVar[int] = 1

    def test(self, value: Any) -> bool:
        address = ip_number(value)
        if address is None or address[0] != self.network.version:
            return False
        shift = self.network.max_prefixlen - self.network.prefixlen
        return address[1] >> shift == int(self.network.network_address) >> shift


@dataclasses.dataclass(frozen=True, slots=True)
class Numeric(Condition):
    """A closed or open interval; a missing bound is EventBridge's limit, inclusive."""

    low: float
    low_inclusive: bool
    high: float
    high_inclusive: bool
    rank: ClassVar[int] = 2

    def test(self, value: Any) -> bool:
        if (type(value) is not int and type(value) is not float) or value != value:  # NaN is no number
            return False
        if value < self.low or (value == self.low and not self.low_inclusive):
            return False
        return not (value > self.high or (value == self.high and not self.high_inclusive))


@dataclasses.dataclass(frozen=True, slots=True)
class Wildcard(Condition):
    """`*` matches any run of characters. The literal runs between the stars are found left to
    right, each at its first place after the previous one: taking the earliest place never
    loses a match, so a test costs at most one scan of the value per run, never backtracking."""

    text: str
    segments: tuple[str, ...] = dataclasses.field(compare=False, hash=False)
    """The literal runs around the stars: one more than there are stars."""
    rank: ClassVar[int] = 3

    @property
    def stars(self) -> int:
        return len(self.segments) - 1

    def test(self, value: Any) -> bool:
        if type(value) is not str:
            return False
        segments = self.segments
        first, last = segments[0], segments[-1]
        if len(segments) == 1:
            return value == first
        end = len(value) - len(last)
        if end < len(first) or not value.startswith(first) or not value.endswith(last):
            return False
        position = len(first)
        for middle in segments[1:-1]:
            found = value.find(middle, position, end)
            if found < 0:
                return False
            position = found + len(middle)
        return True


@dataclasses.dataclass(frozen=True, slots=True)
class AnythingBut(Condition):
    """`anything-but` a value or list: any leaf value (null included) other than these."""

    strings: frozenset[str]
    numbers: frozenset[int | float]
    rank: ClassVar[int] = 4

    def test(self, value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value not in self.strings
        if kind is int or kind is float:
            return value not in self.numbers
        return value is not MISSING


@dataclasses.dataclass(frozen=True, slots=True)
class AnythingButMatching(Condition):
    """`anything-but` with prefix/suffix/equals-ignore-case/wildcard: any leaf value that is
    not a string those conditions accept (numbers, booleans and null always qualify)."""

    excluded: tuple[Prefix | Suffix | EqualsIgnoreCase | Wildcard, ...]
    rank: ClassVar[int] = 4

    def test(self, value: Any) -> bool:
        return not any(condition.test(value) for condition in self.excluded)


@dataclasses.dataclass(frozen=True, slots=True)
class Exists(Condition):
    present: bool
    rank: ClassVar[int] = 5

    def test(self, value: Any) -> bool:
        # Applied to values by `Leaf.accepts`; a value's mere presence satisfies exists: true.
        return self.present


def _tag(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return "s"
    if kind is bool:
        return "b"
    if kind is int or kind is float:
        return "n"
    if value is None:
        return "z"
    return "?"


def ip_number(value: Any) -> tuple[int, int] | None:
    """(IP version, address as an integer) for a string holding an IPv4 or IPv6 address
    (strict: no leading zeros, no zone), else None."""
    if type(value) is not str:
        return None
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        packed = socket.inet_pton(family, value)
    except (OSError, ValueError):
        return None
    return (6 if family == socket.AF_INET6 else 4), int.from_bytes(packed, "big")
