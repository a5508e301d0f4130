"""The compiled matcher: every rule's pattern in one trie, so matching cost follows the event,
not the number of rules.

Each pattern is multiplied out into branches (conjunctions of `(path, leaf)`); each branch's
leaves are sorted cheap-and-selective first (exact values, then prefix/suffix/ignore-case/cidr,
numeric ranges, wildcards, anything-but, exists) and inserted into a trie that shares common
leading leaves between rules. A state indexes its outgoing leaves per path: exact strings and
numbers in hash maps, prefixes and suffixes by length, CIDR blocks by prefix length, numeric
ranges by elementary interval; only wildcards and anything-but are tested one by one.

Matching walks the trie from the root with the event's leaf values: one generated function
fetches the root's paths in a single walk of the document, deeper paths are fetched when a
state first needs them. The walk sees all leaf values of a path at once, across array elements; a branch whose fields
went through an array holding several objects is then confirmed by the reference matcher, so
fields from different elements of one array never combine into a match. A path met through an
array or a dotted key of the event is read by the general `resolve`.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.patterns.conditions import (
    MISSING,
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
from inmotion.patterns.pattern import (
    Branch,
    Leaf,
    Path,
    Pattern,
    as_document,
    flatten,
    nested_too_deeply,
    resolve,
)

_UNSEEN: Any = object()


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
        try:
            return compiled.match(document if type(document) is dict else as_document(document))
        except RecursionError:
            raise nested_too_deeply() from None

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
        self.fields: tuple[tuple[int, Callable[[list[Any]], Iterable[_State] | None]], ...] = ()


class _Compiled:
    def __init__(self, rules: list[_Rule]) -> None:
        self.paths: list[Path] = []
        path_ids: dict[Path, int] = {}
        variety: dict[tuple[Path, object], set[Condition]] = {}
        for rule in rules:
            for branch in rule.pattern.branches:
                for path, leaf in branch:
                    for condition in leaf.conditions:
                        variety.setdefault((path, _kind(condition)), set()).add(condition)
        self.root = _State()
        for rule in rules:
            for branch in rule.pattern.branches:
                state = self.root
                for path, leaf in _ordered(branch, variety):
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
        self.getters = [_extractor([(path_id, path)]) for path_id, path in enumerate(self.paths)]
        self.unseen: list[Any] = [_UNSEEN] * len(self.paths)
        self.extract_root = _extractor([(path_id, self.paths[path_id]) for path_id, _ in self.root.fields])

    def match(self, document: dict[str, Any]) -> list[str]:
        paths, getters = self.paths, self.getters
        found = self.unseen.copy()
        self.extract_root(document, found)
        crossed = False
        reached: list[tuple[_Rule, ...]] = []
        stack = [self.root]
        pop, extend, unseen = stack.pop, stack.extend, _UNSEEN
        while stack:
            state = pop()
            if state.rules:
                reached.append(state.rules)
            for path_id, step in state.fields:
                values = found[path_id]
                if values is unseen:
                    getters[path_id](document, found)
                    values = found[path_id]
                if values is None:
                    values, through_array = resolve(document, paths[path_id])
                    crossed = crossed or through_array
                    found[path_id] = values
                targets = step(values)
                if targets:
                    extend(targets)
        if not reached:
            return []
        if len(reached) == 1 and len(reached[0]) == 1:
            rules: Iterable[_Rule] = reached[0]
        else:
            rules = sorted({rule.order: rule for group in reached for rule in group}.values(), key=_by_order)
        if crossed:
            return [rule.name for rule in rules if not rule.needs_structure or rule.pattern.matches(document)]
        return [rule.name for rule in rules]


def _by_order(rule: _Rule) -> int:
    return rule.order


def _extractor(paths: list[tuple[int, Path]]) -> Callable[[dict[str, Any], list[Any]], None]:
    """A function, generated for some paths, that fetches all their leaf values in one walk
    sharing common prefixes: `found[path_id]` becomes the values, or None where an array stands
    in the middle of the path or a dotted key reaches it (the caller then uses the general
    `resolve`)."""
    tree: dict[str, Any] = {}
    for path_id, path in paths:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, ({}, []))[0]
        node.setdefault(path[-1], ({}, []))[1].append(path_id)
    lines = ["def extract(document, found):"]
    names = iter(range(1_000_000))

    def below(node: dict[str, Any]) -> list[int]:
        return [pid for children, ends in node.values() for pid in [*ends, *below(children)]]

    def remainders(node: dict[str, Any]) -> list[tuple[tuple[str, ...], int]]:
        """(the rest of the path from this node, its id) for every path below the node."""
        rests: list[tuple[tuple[str, ...], int]] = []
        for key, (children, ends) in node.items():
            rests.extend(((key,), pid) for pid in ends)
            rests.extend(((key, *rest), pid) for rest, pid in remainders(children))
        return rests

    def emit(parent: str, node: dict[str, Any], indent: str) -> None:
        emit_keys(parent, node, indent)
        # A dotted key ("b.c" for the rest b, c of a path) also reaches the path: then the
        # general resolve reads it, merging what each way reaches.
        dotted: dict[str, list[int]] = {}
        for rest, path_id in remainders(node):
            for end in range(2, len(rest) + 1):
                dotted.setdefault(".".join(rest[:end]), []).append(path_id)
        for key, path_ids in dotted.items():
            lines.append(f"{indent}if {key!r} in {parent}: {' = '.join(f'found[{pid}]' for pid in path_ids)} = None")

    def emit_keys(parent: str, node: dict[str, Any], indent: str) -> None:
        for key, (children, ends) in node.items():
            name = f"n{next(names)}"
            lines.append(f"{indent}{name} = {parent}.get({key!r}, MISSING)")
            lines.append(f"{indent}kind = type({name})")
            for path_id in ends:
                lines.append(f"{indent}if kind is dict or {name} is MISSING: found[{path_id}] = EMPTY")
                lines.append(f"{indent}elif kind is list: found[{path_id}] = LEAF_LIST({name})")
                lines.append(f"{indent}else: found[{path_id}] = [{name}]")
            if children:
                lines.append(f"{indent}if kind is dict:")
                emit(name, children, indent + "    ")
                lines.append(f"{indent}else:")
                for path_id in below(children):
                    lines.append(f"{indent}    found[{path_id}] = None if kind is list else EMPTY")

    emit("document", tree, "    ")
    lines.append("    return None")
    namespace: dict[str, Any] = {"MISSING": MISSING, "EMPTY": [], "LEAF_LIST": _leaf_list}
    exec("\n".join(lines), namespace)
    extract: Callable[[dict[str, Any], list[Any]], None] = namespace["extract"]
    return extract


def _kind(condition: Condition) -> object:
    return type(condition), getattr(condition, "ignore_case", False)


def _leaf_list(items: list[Any]) -> list[Any]:
    """The leaf values of an array at the end of a path: its scalars, nested arrays flattened,
    objects left out (they are no leaves)."""
    for item in items:
        kind = type(item)
        if kind is dict or kind is list:
            break
    else:
        return items
    return [item for item in flatten(items) if type(item) is not dict]


def _ordered(branch: Branch, variety: dict[tuple[Path, object], set[Condition]]) -> list[tuple[Path, Leaf]]:
    """The branch's leaves, most selective first, so that few trie states are visited: indexable
    conditions before ranges, wildcards, anything-but and exists; among those, the leaf whose
    conditions are of a kind that rules vary most on that path (one of many event types or
    e-mail addresses rather than one of twelve countries or the one common e-mail suffix)."""

    def selectivity(item: tuple[Path, Leaf]) -> tuple[int, float, Path]:
        path, leaf = item
        weakest = min(len(variety[path, _kind(condition)]) for condition in leaf.conditions)
        return (max(0, leaf.rank - 1), -weakest / len(leaf.conditions), path)

    return sorted(branch, key=selectivity)


def _finish(root: _State) -> None:
    pending = [root]
    while pending:
        state = pending.pop()
        by_path: dict[int, list[tuple[Leaf, _State]]] = {}
        for (path_id, leaf), child in state.children.items():
            by_path.setdefault(path_id, []).append((leaf, child))
            pending.append(child)
        state.fields = tuple((path_id, _FieldIndex(entries).step) for path_id, entries in sorted(by_path.items()))
        state.children = {}


# --- one path's outgoing leaves -------------------------------------------------------------


_TRUE: Any = object()
_FALSE: Any = object()


class _FieldIndex:
    """The leaves leaving one trie state on one path, indexed by value.

    Exact values share one hash map (booleans under their own keys, since True == 1 in
    Python); string operators and numeric ranges are probes run only when present.
    """

    __slots__ = ("absent", "exact", "present", "ranges", "step", "tested", "text_probes")

    def __init__(self, entries: list[tuple[Leaf, _State]]) -> None:
        self.absent: list[_State] = []
        self.present: list[_State] = []
        self.exact: dict[Any, list[_State]] = {}
        ignore_case: dict[str, list[_State]] = {}
        prefix, prefix_ic, suffix, suffix_ic = _Affixes(), _Affixes(), _Affixes(), _Affixes()
        cidr = _CidrIndex()
        ranges: list[tuple[Numeric, _State]] = []
        self.tested: list[tuple[Condition, _State]] = []
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
        probes: list[Callable[[str, list[_State]], None]] = []
        if prefix.by_text:
            probes.append(prefix.probe(at_end=False))
        if suffix.by_text:
            probes.append(suffix.probe(at_end=True))
        if ignore_case or prefix_ic.by_text or suffix_ic.by_text:
            probes.append(_lowered_probe(ignore_case, prefix_ic, suffix_ic))
        if cidr.blocks:
            probes.append(cidr.containing)
        self.text_probes = tuple(probes)
        self.step: Callable[[list[Any]], Iterable[_State] | None] = self._step
        if not (self.present or self.ranges or self.tested):
            self.step = _text_step(self) if self.text_probes else _exact_step(self)
            affixes = [(affix, at_end) for affix, at_end in ((prefix, False), (suffix, True)) if affix.by_text]
            if len(probes) == 1 and len(affixes) == 1 and len(affixes[0][0].lengths) == 1 and not self.exact:
                self.step = _affix_step(*affixes[0], self._step)
        elif not (self.present or self.text_probes or self.exact):
            self.step = _value_step(self)

    def _step(self, values: list[Any]) -> Iterable[_State] | None:
        if not values:
            return self.absent
        out: list[_State] = list(self.present) if self.present else []
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


def _exact_step(index: _FieldIndex) -> Callable[[list[Any]], Iterable[_State] | None]:
    """Only exact values leave the state (the common case): one hash lookup for one value."""
    exact, absent, general = index.exact, index.absent, index._step

    def step(values: list[Any]) -> Iterable[_State] | None:
        if len(values) == 1:
            value = values[0]
            if value is True or value is False:
                value = _TRUE if value else _FALSE
            return exact.get(value)
        return general(values) if values else absent

    return step


def _text_step(index: _FieldIndex) -> Callable[[list[Any]], Iterable[_State] | None]:
    """Exact values and string operators only: for one string value, no type dispatch."""
    exact, probes, general = index.exact, index.text_probes, index._step
    (only,) = probes if len(probes) == 1 else (None,)

    def step(values: list[Any]) -> Iterable[_State] | None:
        if len(values) != 1 or type(values[0]) is not str:
            return general(values)
        value = values[0]
        out: list[_State] = []
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
    affixes: _Affixes, at_end: bool, general: Callable[[list[Any]], Iterable[_State] | None]
) -> Callable[[list[Any]], Iterable[_State] | None]:
    """Only prefixes (or suffixes) of one length leave the state, say order-id prefixes: for
    one string value, one slice and one hash lookup."""
    by_text = affixes.by_text
    (length,) = affixes.lengths

    def step(values: list[Any]) -> Iterable[_State] | None:
        if len(values) == 1:
            value = values[0]
            if type(value) is str:
                size = len(value)
                if size < length:
                    return None
                return by_text.get(value[size - length :] if at_end else value[:length])
        return general(values)

    return step


def _value_step(index: _FieldIndex) -> Callable[[list[Any]], Iterable[_State] | None]:
    """Only numeric ranges, wildcards and anything-but leave the state: for one value, no
    hash lookups and no list unless something matches."""
    ranges, tested, absent, general = index.ranges, index.tested, index.absent, index._step

    def step(values: list[Any]) -> Iterable[_State] | None:
        if len(values) != 1:
            return general(values) if values else absent
        value = values[0]
        kind = type(value)
        found: Iterable[_State] | None = None
        if ranges is not None and (kind is int or kind is float) and value == value:  # NaN is no number
            found = ranges.lookup(value)
        if not tested:
            return found
        out = [state for condition, state in tested if condition.test(value)]
        if found:
            out.extend(found)
        return dict.fromkeys(out) if len(out) > 1 else out

    return step


def _append(states: list[_State], state: _State) -> None:
    if state not in states:
        states.append(state)


def _put(index: dict[Any, list[_State]], key: Any, state: _State) -> None:
    _append(index.setdefault(key, []), state)


def _lowered_probe(
    ignore_case: dict[str, list[_State]], prefix: _Affixes, suffix: _Affixes
) -> Callable[[str, list[_State]], None]:
    """One probe for the case-insensitive operators: the value is lowered once."""
    probes = [
        *([prefix.probe(at_end=False)] if prefix.by_text else []),
        *([suffix.probe(at_end=True)] if suffix.by_text else []),
    ]

    def probe(value: str, out: list[_State]) -> None:
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
        self.by_text: dict[str, list[_State]] = {}
        self.lengths: list[int] = []

    def add(self, text: str, state: _State) -> None:
        _put(self.by_text, text, state)
        if len(text) not in self.lengths:
            bisect.insort(self.lengths, len(text))

    def probe(self, *, at_end: bool) -> Callable[[str, list[_State]], None]:
        """A function adding the states of the prefixes (or suffixes) that a value has."""
        by_text, lengths = self.by_text, tuple(self.lengths)
        if len(lengths) == 1:
            (length,) = lengths

            def one_length(value: str, out: list[_State]) -> None:
                size = len(value)
                if size >= length:
                    hit = by_text.get(value[size - length :] if at_end else value[:length])
                    if hit:
                        out.extend(hit)

            return one_length

        def every_length(value: str, out: list[_State]) -> None:
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
        self.blocks: dict[tuple[int, int], dict[int, list[_State]]] = {}

    def add(self, condition: Cidr, state: _State) -> None:
        network = condition.network
        shift = network.max_prefixlen - network.prefixlen
        by_bits = self.blocks.setdefault((network.version, network.prefixlen), {})
        _put(by_bits, int(network.network_address) >> shift, state)

    def containing(self, value: str, out: list[_State]) -> None:
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
