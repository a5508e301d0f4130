"""Routing: rules, targets and the router, above the runtime; the pattern language and its
compiled matcher live below it, in `inmotion.patterns`, and are re-exported here.

`Pattern(p).matches(document)` is the reference matcher for one pattern; `Matcher` compiles many
named patterns into one structure whose matching cost does not grow with the number of rules.
`Rule`s send matching events to targets (topics, in-process handlers, HTTP endpoints);
`Router(app, rules)` routes the rules' source topics on the app's delivery pipeline (consumer
groups, retries, dead letters, metrics), and `Router.route(event)` says where an event goes.
"""

from inmotion.patterns.matcher import Matcher
from inmotion.patterns.pattern import Pattern, event_document
from inmotion.routing.http import DeliveryFailed, DeliveryRejected
from inmotion.routing.router import Forward, Router, route_file
from inmotion.routing.rules import (
    HandlerTarget,
    HttpTarget,
    InputTransform,
    Rule,
    RuleSet,
    Target,
    TopicTarget,
    load_rules,
    parse_rules,
)

__all__ = [
    "DeliveryFailed",
    "DeliveryRejected",
    "Forward",
    "HandlerTarget",
    "HttpTarget",
    "InputTransform",
    "Matcher",
    "Pattern",
    "Router",
    "Rule",
    "RuleSet",
    "Target",
    "TopicTarget",
    "event_document",
    "load_rules",
    "parse_rules",
    "route_file",
]
