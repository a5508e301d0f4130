"""EventBridge event patterns: parsing, validation and the reference matcher.

A pattern is a JSON object whose leaves are non-empty arrays of conditions. Values in one
array are OR'd, fields are AND'd, `$or` lists alternatives. `Pattern.matches` walks the
pattern and the document side by side; it is the specification that the compiled
`Matcher` must agree with.

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

import dataclasses
import ipaddress
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from inmotion.errors import InvalidEvent, InvalidPattern
from inmotion.events import Event, to_dict
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
)

NUMERIC_LIMIT = 5e9
"""EventBridge compares numbers between -5.0e9 and +5.0e9 inclusive."""
MAX_BRANCHES = 1024
"""How many alternatives `$or` may multiply into; EventBridge limits pattern complexity too."""
MAX_DEPTH = 100
"""Objects a pattern may nest. EventBridge bounds a pattern by its size (2,048 characters, 4,096
at most); what matters here is depth, which parsing and matching recurse on."""
MAX_WILDCARDS = 5
"""`*` characters in one wildcard value. EventBridge refuses a rule whose wildcards one value
could keep alive at once beyond a complexity limit it does not publish ("Rule is too complex -
try using fewer wildcard characters..."); LocalStack's emulation refuses, with that message, a
value with more than five."""
MAX_FIELD_WILDCARDS = 10
"""`*` characters over all the wildcards of one field in one pattern (anything-but's included):
together they bound how many wildcard prefixes one value can keep alive, the measure EventBridge
limits (event-ruler's MachineComplexityEvaluator)."""

OR = "$or"
_OPERATORS = frozenset(
    {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "cidr", "exists"}
)
Path: TypeAlias = tuple[str, ...]


# --- the pattern tree ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf array: the field matches when any condition does."""

    conditions: tuple[Condition, ...]
    text: str = dataclasses.field(compare=False, hash=False, default="")
    """The leaf as the pattern wrote it (JSON), for explanations."""

    @property
    def rank(self) -> int:
        return max(condition.rank for condition in self.conditions)

    @property
    def absent_ok(self) -> bool:
        """Does a path without any leaf value satisfy this leaf (`exists: false`)?"""
        return any(type(c) is Exists and not c.present for c in self.conditions)

    @property
    def positive(self) -> bool:
        """Does this leaf ever need a value to be satisfied?"""
        return any(not (type(c) is Exists and not c.present) for c in self.conditions)

    def accepts(self, values: Sequence[Any]) -> bool:
        """Whether all the leaf values found at one path in an event satisfy this leaf."""
        if not values:
            return self.absent_ok
        return self.accepts_values(values)

    def accepts_values(self, values: Sequence[Any]) -> bool:
        """Whether some condition that needs a value accepts one of these (non-empty) values."""
        for condition in self.conditions:
            if type(condition) is Exists:
                if condition.present:
                    return True
                continue
            if any(condition.test(value) for value in values):
                return True
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Fields:
    """An object in the pattern: every field must match, and one alternative of every `$or`."""

    fields: tuple[tuple[str, Leaf | Fields], ...]
    alternatives: tuple[tuple[Fields, ...], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class FieldCheck:
    """One field of one alternative of a pattern, checked against a document."""

    alternative: int
    """The alternative's number, from 1 (a pattern without `$or` has one)."""
    first: bool
    """Is this the alternative's first field?"""
    field: str
    values: list[Any]
    """The field's leaf values in the document, across array elements."""
    condition: str
    """The leaf as the pattern wrote it (JSON)."""
    ok: bool


Branch: TypeAlias = tuple[tuple[Path, Leaf], ...]
"""One way to satisfy a pattern once `$or` is multiplied out: (path, leaf) pairs, all required."""


class Pattern:
    """An EventBridge event pattern. `Pattern(p).matches(document)`.

    `pattern` is a dict or JSON text. Documents are JSON values (dicts, lists, strings,
    numbers, booleans, None); an `inmotion.Event` is matched as its CloudEvents JSON form,
    attributes at the top level and the payload under `data`.
    """

    __slots__ = ("_branches", "_root", "source")

    def __init__(self, pattern: Mapping[str, Any] | str | bytes) -> None:
        self.source: dict[str, Any] = _load(pattern)
        self._root = _parse_fields(self.source, ())
        _check_wildcards(self._root)
        self._branches = _expand(self._root, ())

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


# --- parsing -------------------------------------------------------------------------------


def _load(pattern: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    if isinstance(pattern, str | bytes | bytearray):
        try:
            loaded = json.loads(pattern, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise InvalidPattern("", f"malformed JSON: {exc}") from exc
        except ValueError as exc:
            raise InvalidPattern("", str(exc)) from exc
        except RecursionError:
            raise InvalidPattern("", f"nested too deeply: patterns nest at most {MAX_DEPTH} objects deep") from None
    elif isinstance(pattern, Mapping):
        loaded = dict(pattern)
    else:
        raise InvalidPattern("", f"a pattern is a JSON object or its text, got {type(pattern).__name__}")
    if not isinstance(loaded, dict):
        raise InvalidPattern("", f"a pattern is a JSON object, got {_json_type(loaded)}")
    return loaded


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"field {key!r} appears twice in one object")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__} (not JSON)"


def _at(path: Path, index: int | None = None) -> str:
    text = ".".join(path)
    return text if index is None else f"{text}[{index}]"


def _parse_fields(obj: Mapping[str, Any], path: Path, *, in_or: bool = False, depth: int = 1) -> Fields:
    if not obj:
        raise InvalidPattern(_at(path), "empty objects are not allowed")
    if depth > MAX_DEPTH:
        raise InvalidPattern(_at(path), f"nested too deeply: patterns nest at most {MAX_DEPTH} objects deep")
    fields: list[tuple[str, Leaf | Fields]] = []
    alternatives: list[tuple[Fields, ...]] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InvalidPattern(_at(path), f"field names are strings, got {key!r}")
        here = (*path, key)
        if key == OR:
            alternatives.append(_parse_or(value, here, depth + 1))
            continue
        if in_or and key in _OPERATORS:
            raise InvalidPattern(_at(here), f"{key!r} is an operator and cannot be a field name inside $or")
        head, dot, rest = key.partition(".")
        if dot:  # "a.b": [...] names the field that {"a": {"b": [...]}} does
            _add_field(fields, head, _parse_fields({rest: value}, (*path, head), in_or=in_or, depth=depth + 1), here)
        elif isinstance(value, Mapping):
            _add_field(fields, key, _parse_fields(value, here, in_or=in_or, depth=depth + 1), here)
        elif isinstance(value, list | tuple):
            _add_field(fields, key, _parse_leaf(value, here), here)
        else:
            raise InvalidPattern(_at(here), f"must be an object or a non-empty array, got {_json_type(value)}")
    return Fields(tuple(fields), tuple(alternatives))


def _add_field(fields: list[tuple[str, Leaf | Fields]], key: str, child: Leaf | Fields, here: Path) -> None:
    """Add a field, merging it with an object already given for the same key (through a dotted
    key): both sets of fields then apply to the same object of the event."""
    for index, (known, existing) in enumerate(fields):
        if known != key or isinstance(existing, Leaf) != isinstance(child, Leaf):
            continue
        if isinstance(existing, Leaf):
            raise InvalidPattern(_at(here), "the field appears twice (a dotted key names the field of nested objects)")
        assert isinstance(child, Fields)
        merged = list(existing.fields)
        for inner_key, inner in child.fields:
            _add_field(merged, inner_key, inner, (*here, inner_key))
        fields[index] = (key, Fields(tuple(merged), existing.alternatives + child.alternatives))
        return
    fields.append((key, child))


def _parse_or(value: Any, path: Path, depth: int) -> tuple[Fields, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidPattern(_at(path), f"$or takes an array of objects, got {_json_type(value)}")
    if len(value) < 2:
        raise InvalidPattern(_at(path), "$or needs at least 2 objects")
    parent = path[:-1]
    alternatives = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InvalidPattern(_at(path, index), f"$or takes only objects, got {_json_type(item)}")
        if not item:
            raise InvalidPattern(_at(path, index), "empty objects are not allowed")
        alternatives.append(_parse_fields(item, parent, in_or=True, depth=depth))
    return tuple(alternatives)


def _parse_leaf(items: Sequence[Any], path: Path) -> Leaf:
    if not items:
        raise InvalidPattern(_at(path), "empty arrays are not allowed: a leaf lists at least one value")
    conditions = tuple(_parse_condition(item, path, index) for index, item in enumerate(items))
    return Leaf(conditions, json.dumps(list(items)))


def _parse_condition(item: Any, path: Path, index: int) -> Condition:
    where = _at(path, index)
    if item is None or isinstance(item, str | bool):
        return Exact.of(item)
    if isinstance(item, int | float):
        return Exact.of(_finite(item, where))
    if not isinstance(item, Mapping):
        raise InvalidPattern(
            where, f"values are strings, numbers, true, false, null or objects, got {_json_type(item)}"
        )
    if len(item) != 1:
        raise InvalidPattern(where, f"a condition object has exactly one operator, got {len(item)}")
    ((operator, operand),) = item.items()
    where = f"{where}.{operator}"
    if operator == "prefix":
        return _parse_affix(Prefix, operand, where)
    if operator == "suffix":
        return _parse_affix(Suffix, operand, where)
    if operator == "equals-ignore-case":
        return EqualsIgnoreCase(_string(operand, where).lower())
    if operator == "wildcard":
        return wildcard(_string(operand, where), where)
    if operator == "anything-but":
        return _parse_anything_but(operand, where)
    if operator == "numeric":
        return _parse_numeric(operand, where)
    if operator == "cidr":
        return _parse_cidr(operand, where)
    if operator == "exists":
        if not isinstance(operand, bool):
            raise InvalidPattern(where, f"exists takes true or false, got {_json_type(operand)}")
        return Exists(operand)
    raise InvalidPattern(where, f"unknown operator {operator!r}")


def _string(operand: Any, where: str) -> str:
    if not isinstance(operand, str):
        raise InvalidPattern(where, f"takes a string, got {_json_type(operand)}")
    return operand


def _finite(number: int | float, where: str) -> int | float:
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidPattern(where, "numbers must be finite")
    return number


def _parse_affix(kind: type[Prefix] | type[Suffix], operand: Any, where: str) -> Prefix | Suffix:
    if isinstance(operand, Mapping):
        if len(operand) != 1 or "equals-ignore-case" not in operand:
            raise InvalidPattern(where, 'the only operator allowed inside is "equals-ignore-case"')
        text = _string(operand["equals-ignore-case"], f"{where}.equals-ignore-case")
        return kind(text.lower(), ignore_case=True)
    return kind(_string(operand, where))


def wildcard(text: str, where: str) -> Wildcard:
    """A wildcard condition: `*` matches any run of characters, `\\*` a star, `\\\\` a backslash."""
    segments: list[str] = []
    run: list[str] = []
    previous_star = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise InvalidPattern(where, "a backslash may escape only '*' or '\\'")
            run.append(following)
            previous_star = False
            index += 2
            continue
        if char == "*":
            if previous_star:
                raise InvalidPattern(where, "consecutive wildcard characters ('**') are not allowed")
            segments.append("".join(run))
            run = []
            previous_star = True
        else:
            run.append(char)
            previous_star = False
        index += 1
    segments.append("".join(run))
    if len(segments) - 1 > MAX_WILDCARDS:
        raise InvalidPattern(
            where,
            f"rule is too complex: at most {MAX_WILDCARDS} wildcard characters in one value, got {len(segments) - 1}",
        )
    return Wildcard(text, tuple(segments))


def _parse_anything_but(operand: Any, where: str) -> Condition:
    if isinstance(operand, Mapping):
        if len(operand) != 1:
            raise InvalidPattern(where, "anything-but takes one operator object")
        ((operator, inner),) = operand.items()
        if operator not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            raise InvalidPattern(
                where, f"anything-but supports prefix, suffix, equals-ignore-case and wildcard, not {operator!r}"
            )
        inner_where = f"{where}.{operator}"
        texts = [inner] if isinstance(inner, str) else inner
        if not isinstance(texts, list | tuple) or not texts:
            raise InvalidPattern(inner_where, "takes a string or a non-empty array of strings")
        patterns = [_string(text, f"{inner_where}[{i}]") for i, text in enumerate(texts)]
        excluded: list[Prefix | Suffix | EqualsIgnoreCase | Wildcard]
        if operator in ("prefix", "suffix"):
            if any(not text for text in patterns):
                raise InvalidPattern(inner_where, f"an empty {operator} is not allowed inside anything-but")
            affix = Prefix if operator == "prefix" else Suffix
            excluded = [affix(text) for text in patterns]
        elif operator == "equals-ignore-case":
            excluded = [EqualsIgnoreCase(text.lower()) for text in patterns]
        else:
            excluded = [wildcard(text, inner_where) for text in patterns]
        return AnythingButMatching(tuple(excluded))
    values = operand if isinstance(operand, list | tuple) else [operand]
    if not values:
        raise InvalidPattern(where, "anything-but takes a value or a non-empty array")
    strings: set[str] = set()
    numbers: set[int | float] = set()
    for index, value in enumerate(values):
        if isinstance(value, str):
            strings.add(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers.add(_in_numeric_range(value, where))
        else:
            raise InvalidPattern(
                f"{where}[{index}]" if operand is values else where,
                f"anything-but takes strings or numbers, got {_json_type(value)}",
            )
    if strings and numbers:
        raise InvalidPattern(where, "an anything-but list holds only strings or only numbers, not both")
    return AnythingBut(frozenset(strings), frozenset(numbers))


def _in_numeric_range(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPattern(where, f"takes numbers, got {_json_type(value)}")
    _finite(value, where)
    if not -NUMERIC_LIMIT <= value <= NUMERIC_LIMIT:
        raise InvalidPattern(where, f"numbers must lie between -5e9 and 5e9, got {value}")
    return value


def _parse_numeric(operand: Any, where: str) -> Numeric:
    if not isinstance(operand, list | tuple) or not operand:
        raise InvalidPattern(where, 'numeric takes an array such as [">", 0, "<=", 5] or ["=", 3]')
    if len(operand) not in (2, 4):
        raise InvalidPattern(where, f"numeric takes one or two comparisons, got {len(operand)} elements")
    first, value = operand[0], operand[1]
    if first == "=":
        if len(operand) != 2:
            raise InvalidPattern(where, '"=" stands alone in a numeric condition')
        number = _in_numeric_range(value, where)
        return Numeric(number, True, number, True)
    low, low_inclusive, high, high_inclusive = -NUMERIC_LIMIT, True, NUMERIC_LIMIT, True
    if first in (">", ">="):
        low, low_inclusive = _in_numeric_range(value, where), first == ">="
        if len(operand) == 4:
            second = operand[2]
            if second not in ("<", "<="):
                raise InvalidPattern(where, f'a lower bound is followed by "<" or "<=", got {second!r}')
            high, high_inclusive = _in_numeric_range(operand[3], where), second == "<="
            if high <= low:
                raise InvalidPattern(where, "the lower bound must be less than the upper bound")
    elif first in ("<", "<="):
        if len(operand) != 2:
            raise InvalidPattern(where, 'give the lower bound first: [">", low, "<", high]')
        high, high_inclusive = _in_numeric_range(value, where), first == "<="
    else:
        raise InvalidPattern(where, f'unknown numeric operator {first!r}: use "<", "<=", "=", ">=" or ">"')
    return Numeric(low, low_inclusive, high, high_inclusive)


def _parse_cidr(operand: Any, where: str) -> Cidr:
    text = _string(operand, where)
    if "/" not in text:
        raise InvalidPattern(where, f"a CIDR block is ADDRESS/PREFIX-LENGTH, got {text!r}")
    try:
        return Cidr(ipaddress.ip_network(text, strict=False))
    except ValueError as exc:
        raise InvalidPattern(where, f"not a CIDR block: {exc}") from exc


def _leaves(node: Fields, path: Path) -> Iterator[tuple[Path, Leaf]]:
    """Every leaf of the pattern once, `$or` alternatives included (not multiplied out)."""
    for key, child in node.fields:
        here = (*path, key)
        if isinstance(child, Leaf):
            yield here, child
        else:
            yield from _leaves(child, here)
    for group in node.alternatives:
        for alternative in group:
            yield from _leaves(alternative, path)


def _check_wildcards(root: Fields) -> None:
    stars: dict[Path, int] = {}
    for path, leaf in _leaves(root, ()):
        for condition in leaf.conditions:
            inner = condition.excluded if isinstance(condition, AnythingButMatching) else (condition,)
            stars[path] = stars.get(path, 0) + sum(c.stars for c in inner if isinstance(c, Wildcard))
    for path, count in stars.items():
        if count > MAX_FIELD_WILDCARDS:
            raise InvalidPattern(
                _at(path),
                f"rule is too complex: at most {MAX_FIELD_WILDCARDS} wildcard characters over one field's "
                f"wildcards, got {count}",
            )


def _expand(node: Fields, path: Path) -> tuple[Branch, ...]:
    """Multiply `$or` out into branches; a path may appear only once per branch."""
    branches: list[list[tuple[Path, Leaf]]] = [[]]
    for key, child in node.fields:
        here = (*path, key)
        if isinstance(child, Leaf):
            for branch in branches:
                branch.append((here, child))
        else:
            branches = _product(branches, _expand(child, here))
    for group in node.alternatives:
        options: list[Branch] = []
        for alternative in group:
            options.extend(_expand(alternative, path))
        branches = _product(branches, tuple(options))
    for branch in branches:
        seen: set[Path] = set()
        for leaf_path, _ in branch:
            if leaf_path in seen:
                raise InvalidPattern(".".join(leaf_path), "a field may appear only once in each $or alternative")
            seen.add(leaf_path)
    return tuple(tuple(branch) for branch in branches)


def _product(branches: list[list[tuple[Path, Leaf]]], options: tuple[Branch, ...]) -> list[list[tuple[Path, Leaf]]]:
    if len(branches) * len(options) > MAX_BRANCHES:
        raise InvalidPattern("$or", f"the pattern multiplies into more than {MAX_BRANCHES} alternatives")
    return [[*branch, *option] for branch in branches for option in options]
