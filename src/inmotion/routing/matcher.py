"""The compiled matcher: every rule's pattern in one trie, so matching cost follows the event,
not the number of rules.

Each pattern is multiplied out into branches (conjunctions of `(path, leaf)`); each branch's
leaves are sorted cheap-and-selective first (exact values, then prefix/suffix/ignore-case/cidr,
numeric ranges, wildcards, anything-but, exists) and inserted into a trie that shares common
leading leaves between rules. A state indexes its outgoing leaves per path: exact strings and
numbers in hash maps, prefixes and suffixes by length, CIDR blocks by prefix length, numeric
ranges by elementary interval; only wildcards and anything-but are tested one by one.

Matching walks the trie from the root with the event's leaf values, looked up lazily per path.
The walk sees all leaf values of a path at once, across array elements; a branch whose fields
went through an array holding several objects is then confirmed by the reference matcher, so
fields from different elements of one array never combine into a match.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.routing.pattern import (
    AnythingBut,
    AnythingButMatching,
    Branch,
    Cidr,
    Condition,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Leaf,
    Numeric,
    Path,
    Pattern,
    Prefix,
    Suffix,
    Wildcard,
    as_document,
    parse_ip,
    resolve,
)

_MISSING: Any = object()


@dataclasses.dataclass(slots=True)
class _Rule:
    name: str
    pattern: Pattern
    order: int
    needs_structure: bool
    """Could two of a branch's fields sit in one array of objects? Then confirm by reference."""


class Matcher:
    """A set of named patterns compiled into one structure.

    `add(name, pattern)`, `remove(name)`, `match(document) -> [names]` (in the order the rules
    were added). The structure is rebuilt lazily on the first match after a change; matching
    is thread-safe.
    """

    def __init__(self, rules: Mapping[str, Pattern | Mapping[str, Any] | str] | None = None) -> None:
        self._rules: dict[str, _Rule] = {}
        self._counter = 0
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()
        for name, pattern in (rules or {}).items():
            self.add(name, pattern)

    def add(self, name: str, pattern: Pattern | Mapping[str, Any] | str) -> None:
        """Add a rule; raises InvalidPattern for a bad pattern, InvalidConfig for a taken name."""
        if not isinstance(name, str) or not name:
            raise InvalidConfig(f"a rule name is a non-empty string, got {name!r}")
        compiled = pattern if isinstance(pattern, Pattern) else Pattern(pattern)
        with self._lock:
            if name in self._rules:
                raise InvalidConfig(f"there is already a rule named {name!r}")
            self._counter += 1
            self._rules[name] = _Rule(name, compiled, self._counter, _needs_structure(compiled))
            self._compiled = None

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._rules:
                raise KeyError(name)
            del self._rules[name]
            self._compiled = None

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def names(self) -> list[str]:
        return list(self._rules)

    def pattern(self, name: str) -> Pattern:
        return self._rules[name].pattern

    def match(self, document: Mapping[str, Any] | Event) -> list[str]:
        """The names of the rules whose patterns match the document."""
        compiled = self._compiled or self._compile()
        return compiled.match(document if type(document) is dict else as_document(document))

    def _compile(self) -> _Compiled:
        with self._lock:
            if self._compiled is None:
                self._compiled = _Compiled(list(self._rules.values()))
            return self._compiled


def _needs_structure(pattern: Pattern) -> bool:
    for branch in pattern.branches:
        positive = [path for path, leaf in branch if leaf.positive]
        for index, first in enumerate(positive):
            for second in positive[index + 1 :]:
                if len(first) > 1 and len(second) > 1 and first[0] == second[0]:
                    return True
    return False


# --- the trie -----------------------------------------------------------------------------


class _State:
    __slots__ = ("children", "fields", "rules")

    def __init__(self) -> None:
        self.rules: tuple[_Rule, ...] = ()
        self.children: dict[tuple[int, Leaf], _State] = {}
        self.fields: tuple[tuple[int, _FieldIndex], ...] = ()


class _Compiled:
    def __init__(self, rules: list[_Rule]) -> None:
        self.paths: list[Path] = []
        path_ids: dict[Path, int] = {}
        frequency: Counter[Path] = Counter(
            path for rule in rules for branch in rule.pattern.branches for path, _ in branch
        )
        self.root = _State()
        for rule in rules:
            for branch in rule.pattern.branches:
                state = self.root
                for path, leaf in _ordered(branch, frequency):
                    path_id = path_ids.get(path)
                    if path_id is None:
                        path_id = path_ids[path] = len(self.paths)
                        self.paths.append(path)
                    key = (path_id, leaf)
                    child = state.children.get(key)
                    if child is None:
                        child = state.children[key] = _State()
                    state = child
                if rule not in state.rules:
                    state.rules = (*state.rules, rule)
        _finish(self.root)

    def match(self, document: dict[str, Any]) -> list[str]:
        paths = self.paths
        found: dict[int, list[Any]] = {}
        crossed = False
        matched: set[int] = set()
        rules: dict[int, _Rule] = {}
        stack = [self.root]
        while stack:
            state = stack.pop()
            for rule in state.rules:
                if rule.order not in matched:
                    matched.add(rule.order)
                    rules[rule.order] = rule
            for path_id, index in state.fields:
                values = found.get(path_id)
                if values is None:
                    values = _values(document, paths[path_id])
                    if values is None:
                        values, through_array = resolve(document, paths[path_id])
                        crossed = crossed or through_array
                    found[path_id] = values
                targets = index.step(values)
                if targets:
                    stack.extend(targets)
        if not matched:
            return []
        result = sorted(matched)
        if crossed:
            return [
                rules[order].name
                for order in result
                if not rules[order].needs_structure or rules[order].pattern.matches(document)
            ]
        return [rules[order].name for order in result]


def _values(document: dict[str, Any], path: Path) -> list[Any] | None:
    """The leaf values at `path` when the walk meets no array on the way (the common case);
    None sends the caller to the general `resolve`."""
    node: Any = document
    for key in path:
        if type(node) is dict:
            node = node.get(key, _MISSING)
        elif type(node) is list:
            return None
        else:
            return []
    kind = type(node)
    if kind is dict or node is _MISSING:
        return []
    if kind is list:
        return None
    return [node]


def _ordered(branch: Branch, frequency: Counter[Path]) -> list[tuple[Path, Leaf]]:
    return sorted(branch, key=lambda item: (item[1].rank, -frequency[item[0]], item[0]))


def _finish(root: _State) -> None:
    pending = [root]
    while pending:
        state = pending.pop()
        by_path: dict[int, list[tuple[Leaf, _State]]] = {}
        for (path_id, leaf), child in state.children.items():
            by_path.setdefault(path_id, []).append((leaf, child))
            pending.append(child)
        state.fields = tuple((path_id, _FieldIndex(entries)) for path_id, entries in sorted(by_path.items()))
        state.children = {}


# --- one path's outgoing leaves -------------------------------------------------------------


class _FieldIndex:
    """The leaves leaving one trie state on one path, indexed by value."""

    __slots__ = (
        "absent",
        "cidr",
        "exact_false",
        "exact_null",
        "exact_true",
        "ignore_case",
        "numbers",
        "prefix",
        "prefix_ic",
        "present",
        "ranges",
        "strings",
        "suffix",
        "suffix_ic",
        "tested",
        "text_ops",
    )

    def __init__(self, entries: list[tuple[Leaf, _State]]) -> None:
        self.absent: list[_State] = []
        self.present: list[_State] = []
        self.strings: dict[str, list[_State]] = {}
        self.numbers: dict[int | float, list[_State]] = {}
        self.exact_true: list[_State] = []
        self.exact_false: list[_State] = []
        self.exact_null: list[_State] = []
        self.ignore_case: dict[str, list[_State]] = {}
        self.prefix = _Affixes()
        self.prefix_ic = _Affixes()
        self.suffix = _Affixes()
        self.suffix_ic = _Affixes()
        self.cidr = _CidrIndex()
        ranges: list[tuple[Numeric, _State]] = []
        self.tested: list[tuple[Condition, _State]] = []
        for leaf, state in entries:
            for condition in leaf.conditions:
                self._add(condition, state, ranges)
        self.ranges = _RangeIndex(ranges) if ranges else None
        self.text_ops = bool(
            self.ignore_case or self.prefix or self.prefix_ic or self.suffix or self.suffix_ic or self.cidr
        )

    def _add(self, condition: Condition, state: _State, ranges: list[tuple[Numeric, _State]]) -> None:
        kind = type(condition)
        if kind is Exact:
            assert isinstance(condition, Exact)
            value = condition.value
            if condition.tag == "s":
                assert isinstance(value, str)
                self.strings.setdefault(value, []).append(state)
            elif condition.tag == "n":
                assert isinstance(value, int | float)
                self.numbers.setdefault(value, []).append(state)
            elif value is None:
                self.exact_null.append(state)
            elif value:
                self.exact_true.append(state)
            else:
                self.exact_false.append(state)
        elif kind is Exists:
            assert isinstance(condition, Exists)
            (self.present if condition.present else self.absent).append(state)
        elif kind is EqualsIgnoreCase:
            assert isinstance(condition, EqualsIgnoreCase)
            self.ignore_case.setdefault(condition.lowered, []).append(state)
        elif kind is Prefix:
            assert isinstance(condition, Prefix)
            (self.prefix_ic if condition.ignore_case else self.prefix).add(condition.text, state)
        elif kind is Suffix:
            assert isinstance(condition, Suffix)
            (self.suffix_ic if condition.ignore_case else self.suffix).add(condition.text, state)
        elif kind is Cidr:
            assert isinstance(condition, Cidr)
            self.cidr.add(condition, state)
        elif kind is Numeric:
            assert isinstance(condition, Numeric)
            ranges.append((condition, state))
        else:
            assert isinstance(condition, Wildcard | AnythingBut | AnythingButMatching)
            self.tested.append((condition, state))

    def step(self, values: list[Any]) -> Iterable[_State]:
        """The states this path's values lead to (each at most once)."""
        if not values:
            return self.absent
        out: list[_State] = list(self.present)
        for value in values:
            kind = type(value)
            if kind is str:
                hit = self.strings.get(value)
                if hit:
                    out.extend(hit)
                if self.text_ops:
                    self._text(value, out)
            elif kind is int or kind is float:
                hit = self.numbers.get(value)
                if hit:
                    out.extend(hit)
                if self.ranges is not None:
                    out.extend(self.ranges.lookup(value))
            elif kind is bool:
                out.extend(self.exact_true if value else self.exact_false)
            elif value is None:
                out.extend(self.exact_null)
            for condition, state in self.tested:
                if condition.test(value):
                    out.append(state)
        if len(out) > 1:
            return dict.fromkeys(out)
        return out

    def _text(self, value: str, out: list[_State]) -> None:
        if self.prefix:
            self.prefix.starting(value, out)
        if self.suffix:
            self.suffix.ending(value, out)
        if self.ignore_case or self.prefix_ic or self.suffix_ic:
            lowered = value.lower()
            hit = self.ignore_case.get(lowered)
            if hit:
                out.extend(hit)
            if self.prefix_ic:
                self.prefix_ic.starting(lowered, out)
            if self.suffix_ic:
                self.suffix_ic.ending(lowered, out)
        if self.cidr:
            self.cidr.containing(value, out)


class _Affixes:
    """Prefixes (or suffixes) by text, probed once per distinct length."""

    __slots__ = ("by_text", "lengths")

    def __init__(self) -> None:
        self.by_text: dict[str, list[_State]] = {}
        self.lengths: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.by_text)

    def add(self, text: str, state: _State) -> None:
        self.by_text.setdefault(text, []).append(state)
        if len(text) not in self.lengths:
            bisect.insort(self.lengths, len(text))

    def starting(self, value: str, out: list[_State]) -> None:
        size = len(value)
        for length in self.lengths:
            if length > size:
                break
            hit = self.by_text.get(value[:length])
            if hit:
                out.extend(hit)

    def ending(self, value: str, out: list[_State]) -> None:
        size = len(value)
        for length in self.lengths:
            if length > size:
                break
            hit = self.by_text.get(value[size - length :])
            if hit:
                out.extend(hit)


class _CidrIndex:
    """CIDR blocks keyed by (IP version, prefix length) and the network bits."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        self.blocks: dict[tuple[int, int], dict[int, list[_State]]] = {}

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def add(self, condition: Cidr, state: _State) -> None:
        network = condition.network
        shift = network.max_prefixlen - network.prefixlen
        by_bits = self.blocks.setdefault((network.version, network.prefixlen), {})
        by_bits.setdefault(int(network.network_address) >> shift, []).append(state)

    def containing(self, value: str, out: list[_State]) -> None:
        address = parse_ip(value)
        if address is None:
            return
        number = int(address)
        for (version, prefixlen), by_bits in self.blocks.items():
            if version == address.version:
                hit = by_bits.get(number >> (address.max_prefixlen - prefixlen))
                if hit:
                    out.extend(hit)


class _RangeIndex:
    """Numeric ranges cut into elementary intervals: one bisect finds every range holding a value.

    With the sorted distinct bounds e0 < e1 < ..., segment 2i+1 is the point e_i and segment 2i
    the open interval below it; each segment lists the states of the ranges covering it.
    """

    __slots__ = ("bounds", "segments")

    def __init__(self, ranges: list[tuple[Numeric, _State]]) -> None:
        self.bounds: list[float] = sorted({bound for numeric, _ in ranges for bound in (numeric.low, numeric.high)})
        position = {bound: index for index, bound in enumerate(self.bounds)}
        segments: list[list[_State]] = [[] for _ in range(2 * len(self.bounds) + 1)]
        for numeric, state in ranges:
            first = 2 * position[numeric.low] + (1 if numeric.low_inclusive else 2)
            last = 2 * position[numeric.high] + (1 if numeric.high_inclusive else 0)
            for segment in range(first, last + 1):
                segments[segment].append(state)
        self.segments = [tuple(segment) for segment in segments]

    def lookup(self, value: float) -> tuple[_State, ...]:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds) and self.bounds[index] == value:
            return self.segments[2 * index + 1]
        return self.segments[2 * index]
