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

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.patterns.conditions import MISSING, Condition
from inmotion.patterns.indexes import FieldIndex, Rule, State
from inmotion.patterns.model import Branch, Leaf, Path
from inmotion.patterns.pattern import Pattern, as_document, flatten, nested_too_deeply, resolve

_UNSEEN: Any = object()


class Matcher:
    """A set of named patterns compiled into one structure.

    `add(name, pattern)`, `remove(name)`, `match(document) -> [names]` (in the order the rules
    were added). The structure is rebuilt lazily on the first match after a change; matching
    is thread-safe.
    """

    def __init__(self, rules: Mapping[str, Pattern | Mapping[str, Any] | str] | None = None) -> None:
        self._rules: dict[str, Rule] = {}
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
            self._rules[name] = Rule(name, compiled, self._counter, _needs_structure(compiled))
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


class _Compiled:
    def __init__(self, rules: list[Rule]) -> None:
        self.paths: list[Path] = []
        path_ids: dict[Path, int] = {}
        variety: dict[tuple[Path, object], set[Condition]] = {}
        for rule in rules:
            for branch in rule.pattern.branches:
                for path, leaf in branch:
                    for condition in leaf.conditions:
                        variety.setdefault((path, _kind(condition)), set()).add(condition)
        self.root = State()
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
                        child = state.children[key] = State()
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
        reached: list[tuple[Rule, ...]] = []
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
            rules: Iterable[Rule] = reached[0]
        else:
            rules = sorted({rule.order: rule for group in reached for rule in group}.values(), key=_by_order)
        if crossed:
            return [rule.name for rule in rules if not rule.needs_structure or rule.pattern.matches(document)]
        return [rule.name for rule in rules]


def _by_order(rule: Rule) -> int:
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


def _finish(root: State) -> None:
    pending = [root]
    while pending:
        state = pending.pop()
        by_path: dict[int, list[tuple[Leaf, State]]] = {}
        for (path_id, leaf), child in state.children.items():
            by_path.setdefault(path_id, []).append((leaf, child))
            pending.append(child)
        state.fields = tuple((path_id, FieldIndex(entries).step) for path_id, entries in sorted(by_path.items()))
        state.children = {}


# --- one path's outgoing leaves -------------------------------------------------------------
