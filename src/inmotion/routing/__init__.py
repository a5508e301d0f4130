"""Routing: EventBridge event patterns, the compiled matcher, rules, targets and the router.

`Pattern(p).matches(document)` is the reference matcher for one pattern; `Matcher` compiles many
named patterns into one structure whose matching cost does not grow with the number of rules.
`Rule`s send matching events to targets (topics, in-process handlers, HTTP endpoints);
`Router.route(event)` delivers one event, `Router.run()` consumes source topics.
"""

from inmotion.routing.matcher import Matcher
from inmotion.routing.pattern import Pattern, event_document
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
