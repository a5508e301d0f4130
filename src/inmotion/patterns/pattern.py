"""EventBridge event patterns: `Pattern`, the reference matcher, and the documents it reads.

A pattern is a JSON object whose leaves are non-empty arrays of conditions. Values in one
array are OR'd, fields are AND'd, `$or` lists alternatives. `Pattern.matches` walks the
pattern and the document side by side; it is the specification that the compiled
`Matcher` must agree with. The pattern's tree is in `model`, its parsing and validation in
`parse`.

Semantics, as EventBridge (the `aws/event-ruler` engine) defines them:
- an event array matches when any of its elements matches; objects inside one array element
  are matched together, so fields of different elements never combine into a match;
- `null` differs from a missing field and from `""`; `anything-but` needs a value (null
  counts) and never matches a missing field;
- `exists` looks at leaves only: a field that holds an object has no leaf value there.
  `exists: false` holds when the event has no leaf at that path anywhere;
- `numeric` compares JSON numbers only (not strings, not booleans) within -5e9..5e9, and
  300 equals 300.0; an exact number matches by value too.

Known differences from event-ruler: numbers compare exactly (event-ruler keeps six decimal
places); an exact string that spells an IP address is compared as text (event-ruler compares
addresses, which only matters for unusual IPv6 spellings); `$or` is always the operator, never a
field name.

Dotted keys: event-ruler names a field by its keys joined with dots, so in events and patterns
alike `{"a.b": ...}` and `{"a": {"b": ...}}` are the same field (its README documents this and
calls it subject to change). A pattern's dotted key is split into nested objects when parsed;
an event's dotted keys are read as paths as the walk reaches them (`expanded`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from inmotion.errors import InvalidEvent
from inmotion.events import Event, to_dict
from inmotion.patterns.conditions import MISSING
from inmotion.patterns.model import Branch, FieldCheck, Fields, Leaf, Path
from inmotion.patterns.parse import load, parse


class Pattern:
    """An EventBridge event pattern. `Pattern(p).matches(document)`.

    `pattern` is a dict or JSON text. Documents are JSON values (dicts, lists, strings,
    numbers, booleans, None); an `inmotion.Event` is matched as its CloudEvents JSON form,
    attributes at the top level and the payload under `data`.
    """

    __slots__ = ("_branches", "_root", "source")

    def __init__(self, pattern: Mapping[str, Any] | str | bytes) -> None:
        self.source: dict[str, Any] = load(pattern)
        self._root, self._branches = parse(self.source)

    @property
    def branches(self) -> tuple[Branch, ...]:
        return self._branches

    def matches(self, document: Mapping[str, Any] | Event) -> bool:
        root = as_document(document)
        try:
            return _fields_match(self._root, root, root, ())
        except RecursionError:
            raise nested_too_deeply() from None

    def explain(self, document: Mapping[str, Any] | Event) -> list[str]:
        """Human-readable lines saying why the document matches or not, field by field."""
        several = len(self._branches) > 1
        lines: list[str] = []
        for check in self.check_fields(document):
            if several and check.first:
                lines.append(f"alternative {check.alternative} of {len(self._branches)}:")
            verdict = "ok  " if check.ok else "FAIL"
            found = ", ".join(json.dumps(v) for v in check.values) if check.values else "no value"
            lines.append(f"{'  ' if several else ''}{verdict} {check.field}: {found} against {check.condition}")
        return lines

    def check_fields(self, document: Mapping[str, Any] | Event) -> list[FieldCheck]:
        """Each field of each alternative (`$or` multiplied out) checked against all the values
        the document has there, across array elements: fields that all pass can still fail to
        match together when they sit in different elements of one array."""
        root = as_document(document)
        checks: list[FieldCheck] = []
        try:
            for number, branch in enumerate(self._branches, 1):
                for index, (path, leaf) in enumerate(branch):
                    values, _ = resolve(root, path)
                    checks.append(FieldCheck(number, index == 0, dotted(path), values, leaf.text, leaf.accepts(values)))
        except RecursionError:
            raise nested_too_deeply() from None
        return checks

    def __repr__(self) -> str:
        return f"Pattern({json.dumps(self.source)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and other.source == self.source

    def __hash__(self) -> int:
        return hash(json.dumps(self.source, sort_keys=True))


def as_document(document: Mapping[str, Any] | Event) -> dict[str, Any]:
    """The JSON object a pattern is matched against; an Event becomes its CloudEvents JSON."""
    if type(document) is dict:
        return document
    if isinstance(document, Event):
        return event_document(document)
    if isinstance(document, Mapping):
        return dict(document)
    raise InvalidEvent("<event>", f"an event is a JSON object, got {type(document).__name__}")


def event_document(event: Event) -> dict[str, Any]:
    """The event as patterns see it: CloudEvents attributes at the top level, payload under `data`."""
    return to_dict(event)


def nested_too_deeply() -> InvalidEvent:
    """The error for an event that exhausts the stack: matching walks the pattern recursively
    (its depth is bounded) and the event in loops, but an event crafted to nest where dotted
    keys merge can still go too deep."""
    return InvalidEvent("<event>", "nested too deeply to match")


def dotted(path: Path) -> str:
    return ".".join(path) or "<root>"


# --- documents -----------------------------------------------------------------------------


def resolve(document: Any, path: Path) -> tuple[list[Any], bool]:
    """The leaf values at `path` across all array elements, and whether the walk went through an
    array holding more than one object (where fields of different elements could mix)."""
    nodes = [document]
    values: list[Any] = []
    crossed = False
    last = len(path) - 1
    for depth, key in enumerate(path):
        following: list[Any] = []
        for node in nodes:
            child = expanded(node).get(key, MISSING) if type(node) is dict else MISSING
            if child is MISSING:
                continue
            if type(child) is list:
                items = list(flatten(child))
                if depth == last:
                    values.extend(item for item in items if type(item) is not dict)
                else:
                    objects = [item for item in items if type(item) is dict]
                    crossed = crossed or len(objects) > 1
                    following.extend(objects)
            elif depth < last:
                following.append(child)
            elif type(child) is not dict:
                values.append(child)
        nodes = following
    return values, crossed


def flatten(items: list[Any]) -> Iterator[Any]:
    """The items of an array, nested arrays flattened (iteratively: an event may nest deeply)."""
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def expanded(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its dotted keys read as paths: EventBridge names a field by the keys on
    its way joined with dots, so `{"a.b": 1}` holds the field that `{"a": {"b": 1}}` does. A
    key "a.b" becomes {"a": {"b": ...}} merged with what "a" holds (one level at a time)."""
    for key in obj:
        if type(key) is str and "." in key:
            break
    else:
        return obj
    result: dict[str, Any] = {}
    for key, value in obj.items():
        if type(key) is str and "." in key:
            key, _, rest = key.partition(".")
            value = {rest: value}
        result[key] = _merge(result[key], value) if key in result else value
    return result


def _merge(first: Any, second: Any) -> Any:
    """Two values found for one field. Objects merge field by field. Otherwise the field holds
    both, as an array would; two groups of objects combine pairwise, since no array holds both
    groups (fields of different elements of one array must not meet, fields of two arrays may)."""
    if type(first) is dict and type(second) is dict:
        merged = dict(first)
        for key, value in second.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    items = [list(flatten(value)) if type(value) is list else [value] for value in (first, second)]
    objects = [[item for item in group if type(item) is dict] for group in items]
    leaves = [item for group in items for item in group if type(item) is not dict]
    if objects[0] and objects[1]:
        return [*leaves, *(_merge(one, other) for one in objects[0] for other in objects[1])]
    return [*leaves, *objects[0], *objects[1]]


def _fields_match(node: Fields, value: Any, root: dict[str, Any], path: Path) -> bool:
    if type(value) is list:
        elements = list(flatten(value)) or [MISSING]
        return any(_fields_match(node, element, root, path) for element in elements)
    obj = expanded(value) if type(value) is dict else {}
    for key, child in node.fields:
        here = (*path, key)
        if isinstance(child, Fields):
            if not _fields_match(child, obj.get(key, MISSING), root, here):
                return False
        elif not _leaf_match(child, obj.get(key, MISSING), root, here):
            return False
    return all(
        any(_fields_match(alternative, value, root, path) for alternative in group) for group in node.alternatives
    )


def _leaf_match(leaf: Leaf, value: Any, root: dict[str, Any], path: Path) -> bool:
    if value is MISSING or type(value) is dict:
        values = []
    elif type(value) is list:
        values = [item for item in flatten(value) if type(item) is not dict]
    else:
        values = [value]
    if values:
        return leaf.accepts_values(values)
    # exists: false asks whether the whole event lacks the field, not just this array element.
    return leaf.absent_ok and not resolve(root, path)[0]
