"""The compiled Matcher agrees with the reference `Pattern.matches` on random patterns and events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inmotion.errors import InvalidPattern
from inmotion.routing import Matcher, Pattern

KEYS = ["a", "b", "c", "a.b", "b.c"]
"""Field names; the dotted ones name the same fields as nested objects do."""
STRINGS = ["", "x", "X", "xy", "Xy", "yx", "a*b", "a\\b", "10.0.0.7", "10.0.1.7", "::1", "2001:db8::5"]
NUMBERS = [0, 1, 1.0, 2.5, -3, 300, 300.0, 5_000_000_001]
SCALARS: list[Any] = [*STRINGS, *NUMBERS, True, False, None]

scalar = st.sampled_from(SCALARS)
text = st.sampled_from(["", "x", "X", "xy", "y", "Y", "10.", ":"])
pattern_number = st.sampled_from([0, 1, 2.5, -3, 300, 300.0])

condition = st.one_of(
    st.sampled_from([v for v in SCALARS if v != 5_000_000_001]),
    st.builds(lambda t: {"prefix": t}, text),
    st.builds(lambda t: {"suffix": t}, text),
    st.builds(lambda t: {"prefix": {"equals-ignore-case": t}}, text),
    st.builds(lambda t: {"suffix": {"equals-ignore-case": t}}, text),
    st.builds(lambda t: {"equals-ignore-case": t}, text),
    st.builds(lambda t: {"wildcard": t}, st.sampled_from(["*", "x*", "*y", "x*y", "*\\**", "a\\\\b", ""])),
    st.builds(lambda v: {"anything-but": v}, st.sampled_from(["x", "", 1, 300.0, ["x", "xy"], [0, 2.5]])),
    st.builds(
        lambda op, t: {"anything-but": {op: t}}, st.sampled_from(["prefix", "suffix"]), st.sampled_from(["x", "y"])
    ),
    st.builds(lambda t: {"anything-but": {"equals-ignore-case": t}}, st.sampled_from(["x", ["X", "xy"]])),
    st.builds(lambda t: {"anything-but": {"wildcard": t}}, st.sampled_from(["x*", ["*y", "a*"]])),
    st.builds(lambda n: {"numeric": ["=", n]}, pattern_number),
    st.builds(lambda op, n: {"numeric": [op, n]}, st.sampled_from(["<", "<=", ">", ">="]), pattern_number),
    st.builds(
        lambda lo, hi, a, b: {"numeric": [a, min(lo, hi), b, max(lo, hi) + 1]},
        pattern_number,
        pattern_number,
        st.sampled_from([">", ">="]),
        st.sampled_from(["<", "<="]),
    ),
    st.builds(lambda c: {"cidr": c}, st.sampled_from(["10.0.0.0/24", "10.0.0.0/8", "::/0", "2001:db8::/32"])),
    st.builds(lambda b: {"exists": b}, st.booleans()),
)
leaf = st.lists(condition, min_size=1, max_size=3)


def fields(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    value: st.SearchStrategy[Any] = leaf if depth == 0 else st.one_of(leaf, leaf, fields(depth - 1))
    base = st.dictionaries(st.sampled_from(KEYS), value, min_size=1, max_size=3)
    if depth == 0:
        return base
    alternatives = st.lists(fields(depth - 1), min_size=2, max_size=3)
    return st.one_of(base, st.builds(with_alternatives, base, alternatives))


def top_keys(obj: dict[str, Any]) -> set[str]:
    keys = set(obj) - {"$or"}
    for alternative in obj.get("$or", []):
        keys |= top_keys(alternative)
    return keys


def with_alternatives(base: dict[str, Any], alternatives: list[dict[str, Any]]) -> dict[str, Any]:
    """`base` AND one of `alternatives`, without a field in both (EventBridge rejects that)."""
    taken = set().union(*(top_keys(alternative) for alternative in alternatives))
    return {**{k: v for k, v in base.items() if k not in taken}, "$or": alternatives}


patterns = fields(2)


def documents(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalar
    inner = documents(depth - 1)
    return st.one_of(
        scalar,
        st.lists(st.one_of(scalar, inner), max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    )


events = st.dictionaries(st.sampled_from(KEYS), documents(3), max_size=3)


def valid(raw: dict[str, Any]) -> Pattern:
    try:
        return Pattern(raw)
    except InvalidPattern:
        assume(False)
        raise


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(patterns, min_size=1, max_size=6), docs=st.lists(events, min_size=1, max_size=5))
def test_compiled_matcher_agrees_with_reference(raws: list[dict[str, Any]], docs: list[dict[str, Any]]) -> None:
    compiled = [valid(raw) for raw in raws]
    matcher = Matcher()
    for number, pattern in enumerate(compiled):
        matcher.add(f"r{number}", pattern)
    for doc in docs:
        expected = [f"r{number}" for number, pattern in enumerate(compiled) if pattern.matches(doc)]
        assert matcher.match(doc) == expected, (doc, [p.source for p in compiled])


@settings(max_examples=150, deadline=None)
@given(raw=patterns, doc=events)
def test_pattern_survives_a_json_round_trip(raw: dict[str, Any], doc: dict[str, Any]) -> None:
    import json

    pattern = valid(raw)
    assert Pattern(json.dumps(raw)).matches(doc) == pattern.matches(doc)


glob = st.lists(st.sampled_from(["a", "b", "ab", "*", "\\*"]), max_size=8).map("".join)


@settings(max_examples=500, deadline=None)
@given(
    text=glob.filter(lambda t: "**" not in t and t.count("*") - t.count("\\*") <= 5), value=st.text("ab*", max_size=10)
)
def test_wildcard_agrees_with_a_regex(text: str, value: str) -> None:
    """The segment search gives a backtracking regex's answer (fine on short strings)."""
    import re

    regex = "".join(
        ".*" if part == "*" else re.escape(part.lstrip("\\")) for part in re.findall(r"\\\*|\*|[^*\\]", text)
    )
    expected = re.fullmatch(regex, value, re.DOTALL) is not None
    assert Pattern({"f": [{"wildcard": text}]}).matches({"f": value}) is expected
    assert Matcher({"r": {"f": [{"wildcard": text}]}}).match({"f": value}) == (["r"] if expected else [])


@pytest.mark.parametrize("count", [1, 50])
def test_removing_rules_forgets_them(count: int) -> None:
    matcher = Matcher({f"r{n}": {"a": [n]} for n in range(count)})
    assert matcher.match({"a": 0}) == ["r0"]
    matcher.remove("r0")
    assert matcher.match({"a": 0}) == []
    assert len(matcher) == count - 1
