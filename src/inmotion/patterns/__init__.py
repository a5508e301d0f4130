"""EventBridge event patterns: the language, one pattern's reference matcher and the compiled
`Matcher` for many.

This is the pure half of routing, below the runtime: subscription filters use it, and so does
the router (`inmotion.routing`, above the runtime), which re-exports these names.
"""

from inmotion.patterns.matcher import Matcher
from inmotion.patterns.pattern import Pattern, event_document

__all__ = ["Matcher", "Pattern", "event_document"]
