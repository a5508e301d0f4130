"""Routing: rules, targets and the router, above the runtime; the pattern language and its
compiled matcher live below it, in `inmotion.patterns`, and are re-exported here.

`Pattern(p).matches(document)` is the reference matcher for one pattern; `Matcher` compiles many
named patterns into one structure whose matching cost does not grow with the number of rules.
`Rule`s send matching events to targets (topics, in-process handlers, HTTP endpoints);
`Router.route(event)` delivers one event, `Router.run()` consumes source topics.
"""

from inmotion.patterns.matcher import Matcher
from inmotion.patterns.pattern import Pattern, event_document
from inmotion.routing.router import Delivery, DeliveryFailed, Router
from inmotion.routing.rules import (
    HandlerTarget,
    HttpTarget,
    InputTransform,
    RetryPolicy,
    Rule,
    RuleSet,
    Target,
    TopicTarget,
    load_rules,
    parse_rules,
)

__all__ = [
    "Delivery",
    "DeliveryFailed",
    "HandlerTarget",
    "HttpTarget",
    "InputTransform",
    "Matcher",
    "Pattern",
    "RetryPolicy",
    "Router",
    "Rule",
    "RuleSet",
    "Target",
    "TopicTarget",
    "event_document",
    "load_rules",
    "parse_rules",
]
