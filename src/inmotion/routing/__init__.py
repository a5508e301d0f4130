"""Routing: EventBridge event patterns, the compiled matcher, rules and targets.

`Pattern(p).matches(document)` is the reference matcher for one pattern; `Matcher` compiles many
named patterns into one structure whose matching cost does not grow with the number of rules.
"""

from inmotion.routing.matcher import Matcher
from inmotion.routing.pattern import Pattern, event_document

__all__ = ["Matcher", "Pattern", "event_document"]
