"""Parsing an event pattern: its JSON, a dict or text, into the model's tree of `Fields` and
`Leaf` conditions, checked against the language's limits; an `InvalidPattern` says where and why."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from inmotion.errors import InvalidPattern
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
)
from inmotion.patterns.model import (
    MAX_BRANCHES,
    MAX_DEPTH,
    MAX_FIELD_WILDCARDS,
    MAX_WILDCARDS,
    NUMERIC_LIMIT,
    OR,
    Branch,
    Fields,
    Leaf,
    Path,
)

_OPERATORS = frozenset(
    {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "cidr", "exists"}
)


def parse(source: Mapping[str, Any]) -> tuple[Fields, tuple[Branch, ...]]:
    """The tree of a loaded pattern, its wildcards checked, and its branches (`$or` multiplied out)."""
    root = _parse_fields(source, ())
    _check_wildcards(root)
    return root, _expand(root, ())


def load(pattern: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """The pattern's JSON object, from a mapping or from JSON text."""
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
