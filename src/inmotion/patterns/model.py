"""The pattern model: the tree a pattern parses into (`Fields` objects whose leaves are `Leaf`
arrays of conditions), its branches once `$or` is multiplied out, the result of checking one
field against a document, and the language's limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeAlias

from inmotion.patterns.conditions import Condition, Exists

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
Path: TypeAlias = tuple[str, ...]


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
