"""Rules kept in the log itself (the compacted topic `inmotion.rules`, the newest entry per rule
name, a tombstone for a deleted rule), managed through the gateway's admin API and followed by
`inmotion route --rules-from-log`: push subscriptions (rules with HTTP targets) that need no
file on the router's machine.

An entry is a rule as a rules file writes it (name, sources, pattern, targets, transform,
description), validated by the same parser. Only topic and HTTP targets: a handler target
names code to import, which the API must not let a caller choose."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec

from inmotion.errors import InvalidConfig, TopicExists, UnknownTopic
from inmotion.log import Log, Message, TopicConfig
from inmotion.log.scan import newest_by_key
from inmotion.routing.router import missing_topics
from inmotion.routing.rules import Rule, RuleSet, parse_rules

RULES_TOPIC = "inmotion.rules"


class RuleStore:
    """The log's rules; a `RulesSource` for `route` (it reloads when a rule is put or deleted)."""

    def __init__(self, log: Log) -> None:
        self.log = log

    @property
    def describe(self) -> str:
        return f"log:{RULES_TOPIC}"

    def load(self) -> RuleSet:
        rule_set = self.rule_set()
        if not rule_set.rules:
            raise InvalidConfig(f"no rules in {self.describe} yet (PUT /rules/NAME through the gateway)")
        return rule_set

    def entries(self) -> dict[str, dict[str, Any]]:
        """The stored rules by name, as their documents."""
        if RULES_TOPIC not in self.log.list_topics():
            return {}
        return {
            key.decode(): msgspec.json.decode(record.value)
            for key, record in newest_by_key(self.log, RULES_TOPIC).items()
            if record.value is not None
        }

    def rule_set(self) -> RuleSet:
        return _parse(list(self.entries().values()))

    def stamp(self) -> int:
        """A number that changes whenever a rule is put or deleted."""
        if RULES_TOPIC not in self.log.list_topics():
            return 0
        return self.log.latest_offset(RULES_TOPIC, 0)

    @staticmethod
    def check(entry: dict[str, Any]) -> RuleSet:
        """The one rule `entry` describes; InvalidConfig or InvalidPattern for one the parser
        refuses, or one with a handler target."""
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise InvalidConfig("a rule is a JSON object with a 'name'")
        targets = entry.get("targets")
        if isinstance(targets, list) and any(isinstance(t, dict) and "handler" in t for t in targets):
            raise InvalidConfig("rules stored in the log take topic and http targets only (handlers: a rules file)")
        return _parse([entry])

    def put(self, entry: dict[str, Any]) -> Rule:
        """Store (or replace) the rule `entry` describes (see `check`); UnknownTopic for a topic
        it names that the log lacks (a router would not load it)."""
        [rule] = self.check(entry).rules
        missing = missing_topics(self.log, RuleSet((rule,)))
        if missing:
            raise UnknownTopic(missing[0])
        with contextlib.suppress(TopicExists):
            self.log.create_topic(RULES_TOPIC, TopicConfig(partitions=1, compact=True))
        self.log.append(RULES_TOPIC, [Message(msgspec.json.encode(entry), rule.name.encode())])
        return rule

    def delete(self, name: str) -> None:
        if name not in self.entries():
            raise InvalidConfig(f"no rule named {name!r}")
        self.log.append(RULES_TOPIC, [Message(None, name.encode())])


def _parse(entries: list[dict[str, Any]]) -> RuleSet:
    return parse_rules(json.dumps({"rules": entries}), f"log:{RULES_TOPIC}")
