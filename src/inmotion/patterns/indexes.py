"""The matcher's trie states and their indexes: the leaves leaving a state on one path, by value
(exact values in hash maps, prefixes and suffixes by length, CIDR blocks by prefix length,
numeric ranges by elementary interval), each with the step that probes it for an event's values.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from inmotion.patterns.conditions import (
    AnythingBut,
    AnythingButMatching,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Prefix,
    Suffix,
    Wildcard,
    ip_number,
)
from inmotion.patterns.model import Leaf
from inmotion.patterns.pattern import Pattern


@dataclasses.dataclass(slots=True)
class Rule:
    name: str
    pattern: Pattern
    order: int
    needs_structure: bool
    """Could two of a branch's fields sit in one array of objects? Then confirm by reference."""


class State:
    __slots__ = ("children", "fields", "rules")

    def __init__(self) -> None:
        self.rules: tuple[Rule, ...] = ()
        self.children: dict[tuple[int, Leaf], State] = {}
        self.fields: tuple[tuple[int, Callable[[list[Any]], Iterable[State] | None]], ...] = ()


_TRUE: Any = object()
_FALSE: Any = object()


class FieldIndex:
    """The leaves leaving one trie state on one path, indexed by value.

    Exact values share one hash map (booleans under their own keys, since True == 1 in
    Python); string operators and numeric ranges are probes run only when present.
    """

    __slots__ = ("absent", "exact", "present", "ranges", "step", "tested", "text_probes")

    def __init__(self, entries: list[tuple[Leaf, State]]) -> None:
        self.absent: list[State] = []
        self.present: list[State] = []
        self.exact: dict[Any, list[State]] = {}
        ignore_case: dict[str, list[State]] = {}
        prefix, prefix_ic, suffix, suffix_ic = _Affixes(), _Affixes(), _Affixes(), _Affixes()
        cidr = _CidrIndex()
        ranges: list[tuple[Numeric, State]] = []
        self.tested: list[tuple[Condition, State]] = []
        for leaf, state in entries:
            for condition in leaf.conditions:
                if isinstance(condition, Exact):
                    value = condition.value
                    key = (_TRUE if value else _FALSE) if condition.tag == "b" else value
                    _put(self.exact, key, state)
                elif isinstance(condition, Exists):
                    _append(self.present if condition.present else self.absent, state)
                elif isinstance(condition, EqualsIgnoreCase):
                    _put(ignore_case, condition.lowered, state)
                elif isinstance(condition, Prefix):
                    (prefix_ic if condition.ignore_case else prefix).add(condition.text, state)
                elif isinstance(condition, Suffix):
                    (suffix_ic if condition.ignore_case else suffix).add(condition.text, state)
                elif isinstance(condition, Cidr):
                    cidr.add(condition, state)
                elif isinstance(condition, Numeric):
                    ranges.append((condition, state))
                else:
                    assert isinstance(condition, Wildcard | AnythingBut | AnythingButMatching)
                    self.tested.append((condition, state))
        self.ranges = _RangeIndex(ranges) if ranges else None
        probes: list[Callable[[str, list[State]], None]] = []
        if prefix.by_text:
            probes.append(prefix.probe(at_end=False))
        if suffix.by_text:
            probes.append(suffix.probe(at_end=True))
        if ignore_case or prefix_ic.by_text or suffix_ic.by_text:
            probes.append(_lowered_probe(ignore_case, prefix_ic, suffix_ic))
        if cidr.blocks:
            probes.append(cidr.containing)
        self.text_probes = tuple(probes)
        self.step: Callable[[list[Any]], Iterable[State] | None] = self._step
        if not (self.present or self.ranges or self.tested):
            self.step = _text_step(self) if self.text_probes else _exact_step(self)
            affixes = [(affix, at_end) for affix, at_end in ((prefix, False), (suffix, True)) if affix.by_text]
            if len(probes) == 1 and len(affixes) == 1 and len(affixes[0][0].lengths) == 1 and not self.exact:
                self.step = _affix_step(*affixes[0], self._step)
        elif not (self.present or self.text_probes or self.exact):
            self.step = _value_step(self)

    def _step(self, values: list[Any]) -> Iterable[State] | None:
        if not values:
            return self.absent
        out: list[State] = list(self.present) if self.present else []
        exact, ranges = self.exact, self.ranges
        for value in values:
            kind = type(value)
            hit = exact.get((_TRUE if value else _FALSE) if kind is bool else value)
            if hit:
                out.extend(hit)
            if kind is str:
                for probe in self.text_probes:
                    probe(value, out)
            elif ranges is not None and (kind is int or kind is float) and value == value:  # NaN is no number
                out.extend(ranges.lookup(value))
            for condition, state in self.tested:
                if condition.test(value):
                    out.append(state)
        if len(out) > 1:
            return dict.fromkeys(out)
        return out


def _exact_step(index: FieldIndex) -> Callable[[list[Any]], Iterable[State] | None]:
    """Only exact values leave the state (the common case): one hash lookup for one value."""
    exact, absent, general = index.exact, index.absent, index._step

    def step(values: list[Any]) -> Iterable[State] | None:
        if len(values) == 1:
            value = values[0]
            if value is True or value is False:
                value = _TRUE if value else _FALSE
            return exact.get(value)
        return general(values) if values else absent

    return step


def _text_step(index: FieldIndex) -> Callable[[list[Any]], Iterable[State] | None]:
    """Exact values and string operators only: for one string value, no type dispatch."""
    exact, probes, general = index.exact, index.text_probes, index._step
    (only,) = probes if len(probes) == 1 else (None,)

    def step(values: list[Any]) -> Iterable[State] | None:
        if len(values) != 1 or type(values[0]) is not str:
            return general(values)
        value = values[0]
        out: list[State] = []
        hit = exact.get(value)
        if hit:
            out.extend(hit)
        if only is not None:
            only(value, out)
        else:
            for probe in probes:
                probe(value, out)
        if len(out) > 1:
            return dict.fromkeys(out)
        return out

    return step


def _affix_step(
    affixes: _Affixes, at_end: bool, general: Callable[[list[Any]], Iterable[State] | None]
) -> Callable[[list[Any]], Iterable[State] | None]:
    """Only prefixes (or suffixes) of one length leave the state, say order-id prefixes: for
    one string value, one slice and one hash lookup."""
    by_text = affixes.by_text
    (length,) = affixes.lengths

    def step(values: list[Any]) -> Iterable[State] | None:
        if len(values) == 1:
            value = values[0]
            if type(value) is str:
                size = len(value)
                if size < length:
                    return None
                return by_text.get(value[size - length :] if at_end else value[:length])
        return general(values)

    return step


def _value_step(index: FieldIndex) -> Callable[[list[Any]], Iterable[State] | None]:
    """Only numeric ranges, wildcards and anything-but leave the state: for one value, no
    hash lookups and no list unless something matches."""
    ranges, tested, absent, general = index.ranges, index.tested, index.absent, index._step

    def step(values: list[Any]) -> Iterable[State] | None:
        if len(values) != 1:
            return general(values) if values else absent
        value = values[0]
        kind = type(value)
        found: Iterable[State] | None = None
        if ranges is not None and (kind is int or kind is float) and value == value:  # NaN is no number
            found = ranges.lookup(value)
        if not tested:
            return found
        out = [state for condition, state in tested if condition.test(value)]
        if found:
            out.extend(found)
        return dict.fromkeys(out) if len(out) > 1 else out

    return step


def _append(states: list[State], state: State) -> None:
    if state not in states:
        states.append(state)


def _put(index: dict[Any, list[State]], key: Any, state: State) -> None:
    _append(index.setdefault(key, []), state)


def _lowered_probe(
    ignore_case: dict[str, list[State]], prefix: _Affixes, suffix: _Affixes
) -> Callable[[str, list[State]], None]:
    """One probe for the case-insensitive operators: the value is lowered once."""
    probes = [
        *([prefix.probe(at_end=False)] if prefix.by_text else []),
        *([suffix.probe(at_end=True)] if suffix.by_text else []),
    ]

    def probe(value: str, out: list[State]) -> None:
        lowered = value.lower()
        hit = ignore_case.get(lowered)
        if hit:
            out.extend(hit)
        for affix in probes:
            affix(lowered, out)

    return probe


class _Affixes:
    """Prefixes (or suffixes) by text, probed once per distinct length."""

    __slots__ = ("by_text", "lengths")

    def __init__(self) -> None:
        self.by_text: dict[str, list[State]] = {}
        self.lengths: list[int] = []

    def add(self, text: str, state: State) -> None:
        _put(self.by_text, text, state)
        if len(text) not in self.lengths:
            bisect.insort(self.lengths, len(text))

    def probe(self, *, at_end: bool) -> Callable[[str, list[State]], None]:
        """A function adding the states of the prefixes (or suffixes) that a value has."""
        by_text, lengths = self.by_text, tuple(self.lengths)
        if len(lengths) == 1:
            (length,) = lengths

            def one_length(value: str, out: list[State]) -> None:
                size = len(value)
                if size >= length:
                    hit = by_text.get(value[size - length :] if at_end else value[:length])
                    if hit:
                        out.extend(hit)

            return one_length

        def every_length(value: str, out: list[State]) -> None:
            size = len(value)
            for length in lengths:
                if length > size:
                    break
                hit = by_text.get(value[size - length :] if at_end else value[:length])
                if hit:
                    out.extend(hit)

        return every_length


class _CidrIndex:
    """CIDR blocks keyed by (IP version, prefix length) and the network bits."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        self.blocks: dict[tuple[int, int], dict[int, list[State]]] = {}

    def add(self, condition: Cidr, state: State) -> None:
        network = condition.network
        shift = network.max_prefixlen - network.prefixlen
        by_bits = self.blocks.setdefault((network.version, network.prefixlen), {})
        _put(by_bits, int(network.network_address) >> shift, state)

    def containing(self, value: str, out: list[State]) -> None:
        address = ip_number(value)
        if address is None:
            return
        version, number = address
        bits = 32 if version == 4 else 128
        for (block_version, prefixlen), by_bits in self.blocks.items():
            if block_version == version:
                hit = by_bits.get(number >> (bits - prefixlen))
                if hit:
                    out.extend(hit)


class _RangeIndex:
    """Numeric ranges cut into elementary intervals: one bisect finds every range holding a value.

    With the sorted distinct bounds e0 < e1 < ..., segment 2i+1 is the point e_i and segment 2i
    the open interval below it; each segment lists the states of the ranges covering it.
    """

    __slots__ = ("bounds", "segments")

    def __init__(self, ranges: list[tuple[Numeric, State]]) -> None:
        self.bounds: list[float] = sorted({bound for numeric, _ in ranges for bound in (numeric.low, numeric.high)})
        position = {bound: index for index, bound in enumerate(self.bounds)}
        segments: list[list[State]] = [[] for _ in range(2 * len(self.bounds) + 1)]
        for numeric, state in ranges:
            first = 2 * position[numeric.low] + (1 if numeric.low_inclusive else 2)
            last = 2 * position[numeric.high] + (1 if numeric.high_inclusive else 0)
            for segment in range(first, last + 1):
                segments[segment].append(state)
        self.segments = [tuple(segment) for segment in segments]

    def lookup(self, value: float) -> tuple[State, ...]:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds) and self.bounds[index] == value:
            return self.segments[2 * index + 1]
        return self.segments[2 * index]
