"""Generated input never crashes pattern parsing, matching or rules-file parsing: the answer is a
result or one of the documented errors (InvalidPattern, InvalidEvent, InvalidConfig), and the
two matchers agree on every pattern that parses."""

from __future__ import annotations

import contextlib
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inmotion.errors import InvalidConfig, InvalidPattern
from inmotion.routing import Matcher, Pattern
from inmotion.routing.rules import RuleSet, parse_rules

OPERATORS = ["prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "cidr", "exists"]
NAMES = st.sampled_from(["a", "b", "a.b", "b.c", ".", "", "$or", *OPERATORS])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**10), 10**10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "a", "a*b", "*", "\\*", "10.0.0.0/8", ">", "<=", "=", "x.y"])
)
json_values = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4), max_leaves=25
)
objects = st.dictionaries(NAMES, json_values, min_size=1, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(objects, min_size=1, max_size=4), events=st.lists(objects, min_size=1, max_size=4))
def test_any_json_pattern_parses_or_is_invalid_and_both_matchers_agree(
    raws: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    patterns = []
    for raw in raws:
        try:
            patterns.append(Pattern(raw))
        except InvalidPattern:
            continue
    matcher = Matcher({f"r{n}": pattern for n, pattern in enumerate(patterns)})
    for event in events:
        expected = [f"r{n}" for n, pattern in enumerate(patterns) if pattern.matches(event)]
        assert matcher.match(event) == expected, (event, [p.source for p in patterns])
        for pattern in patterns:
            pattern.explain(event)


TARGETS = st.one_of(
    st.fixed_dictionaries(
        {"topic": st.sampled_from(["t", "bad name", "", 5])},
        optional={"retry": json_values, "dead_letter": st.sampled_from(["dlq", "bad name", None])},
    ),
    st.fixed_dictionaries(
        {"http": st.sampled_from(["http://127.0.0.1:9/h", "ftp://x", 7])},
        optional={
            "mode": st.sampled_from(["binary", "structured", "other"]),
            "timeout": SCALARS,
            "headers": st.dictionaries(NAMES | st.sampled_from(["X-A", "X B"]), SCALARS | json_values, max_size=3),
            "retry": st.dictionaries(st.sampled_from(["attempts", "backoff", "max_backoff", "jitter"]), SCALARS),
        },
    ),
    st.fixed_dictionaries({"handler": st.sampled_from(["json:dumps", "nope.nothing:f", "json:nothing", "x", 5])}),
    json_values,
)
RULES = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["r", "s", "", 5]),
        "sources": st.sampled_from(["orders", ["orders", "bad name"], [], 5]),
        "pattern": objects | json_values,
        "targets": st.lists(TARGETS, max_size=3) | json_values,
        "transform": st.fixed_dictionaries(
            {},
            optional={"paths": st.dictionaries(NAMES, st.sampled_from(["$.a", "a", "$[0]", 5])), "template": SCALARS},
        )
        | json_values,
        "description": json_values,
    },
)
FILES = st.fixed_dictionaries(
    {"rules": st.lists(RULES, max_size=3) | json_values},
    optional={"unmatched": st.sampled_from(["rest", "bad name", 5]), "other": json_values},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=FILES)
def test_any_rules_document_parses_or_is_invalid(document: dict[str, Any]) -> None:
    try:
        text = yaml.safe_dump(document)
    except (yaml.YAMLError, ValueError):
        return
    with contextlib.suppress(InvalidConfig, InvalidPattern):
        assert isinstance(parse_rules(text), RuleSet)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("rules:-[]{}&*!<>|'\"#\n\t .,?abx0\r\\")), max_size=60))
def test_any_text_is_a_rules_file_or_invalid(text: str) -> None:
    with contextlib.suppress(InvalidConfig, InvalidPattern):
        parse_rules(text)
