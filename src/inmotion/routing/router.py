"""The router: events from source topics, matched against rules, delivered to every target of
every matching rule.

`Router.route(event, topic)` is the per-event function (match, transform, deliver with retries,
dead-letter) and knows nothing of consumer loops, so the runtime can drive it. `Router.poll()`
and `Router.run()` are a simple loop over the `Log` contract for one consumer group: read from
the committed offsets, route, and commit a batch only after every target of every event in it
is done (delivered or dead-lettered): at-least-once, restart-safe.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Literal

from inmotion.errors import InmotionError, InvalidConfig, InvalidEvent, UnknownTopic
from inmotion.events import STRUCTURED_CONTENT_TYPE, Event, to_binary, to_json
from inmotion.log import Log
from inmotion.log.base import check_group_name
from inmotion.patterns.matcher import Matcher
from inmotion.patterns.pattern import event_document
from inmotion.routing.rules import HandlerTarget, HttpTarget, Rule, RuleSet, Target, TopicTarget, load_rules

Status = Literal["delivered", "dead-lettered", "failed"]
_RETRIED_CLIENT_ERRORS = frozenset({408, 429})


Assigned = Mapping[str, Iterable[int]]
"""Partitions per topic that this member of the router's group owns."""


class DeliveryFailed(InmotionError):
    """A target failed every try and has no dead-letter topic; the event stays uncommitted."""


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one event at one target."""

    rule: str
    target: str
    status: Status
    attempts: int
    error: str | None = None


class _Permanent(Exception):
    """A failure that another try will not fix (an HTTP 4xx, an unknown topic)."""


class Router:
    """Routes events through a rule set. `sleep` waits between retries (tests pass a fake)."""

    def __init__(
        self,
        log: Log,
        rules: RuleSet | Iterable[Rule],
        *,
        group: str = "inmotion-router",
        sources: Iterable[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        rule_set = rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
        self.log = log
        self.group = check_group_name(group)
        self.unmatched_topic = rule_set.unmatched
        self._rules = {rule.name: rule for rule in rule_set.rules}
        self._matcher = Matcher({rule.name: rule.pattern for rule in rule_set.rules})
        self._sleep = sleep
        named = {source for rule in rule_set.rules for source in rule.sources}
        self.sources: tuple[str, ...] = tuple(sorted(set(sources) if sources is not None else named))
        self.routed = 0
        self.unmatched = 0
        self.undecodable = 0

    # --- one event ------------------------------------------------------------------------
    def route(self, event: Event, topic: str | None = None) -> list[Delivery]:
        """Deliver `event` (read from `topic`, if any) to the targets of every matching rule."""
        self.routed += 1
        rules = [
            rule
            for name in self._matcher.match(event_document(event))
            if not (rule := self._rules[name]).sources or topic is None or topic in rule.sources
        ]
        if not rules:
            self.unmatched += 1
            if self.unmatched_topic is None:
                return []
            catch_all = TopicTarget(topic=self.unmatched_topic)
            return [self._deliver("", catch_all, event)]
        deliveries: list[Delivery] = []
        for rule in rules:
            outgoing = rule.transform.apply(event, rule.name) if rule.transform else event
            deliveries.extend(self._deliver(rule.name, target, outgoing) for target in rule.targets)
        return deliveries

    def _deliver(self, rule: str, target: Target, event: Event) -> Delivery:
        policy = target.retry
        error = ""
        for attempt in range(1, policy.attempts + 1):
            try:
                self._send(target, event)
                return Delivery(rule, target.describe(), "delivered", attempt)
            except _Permanent as exc:
                return self._dead_letter(rule, target, event, str(exc), attempt)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < policy.attempts:
                self._sleep(policy.delay(attempt))
        return self._dead_letter(rule, target, event, error, policy.attempts)

    def _send(self, target: Target, event: Event) -> None:
        if isinstance(target, TopicTarget):
            try:
                self.log.append_events(target.topic, [event])
            except UnknownTopic as exc:
                raise _Permanent(str(exc)) from exc
        elif isinstance(target, HandlerTarget):
            target.handler(event)
        else:
            post(target, event)

    def _dead_letter(self, rule: str, target: Target, event: Event, reason: str, attempts: int) -> Delivery:
        if target.dead_letter is None:
            return Delivery(rule, target.describe(), "failed", attempts, reason)
        letter = event.with_extensions(deadletterrule=rule or "-", deadletterreason=reason[:500] or "unknown")
        self.log.append_events(target.dead_letter, [letter])
        return Delivery(rule, target.describe(), "dead-lettered", attempts, reason)

    # --- the loop -------------------------------------------------------------------------
    def poll(self, limit: int = 500, assigned: Assigned | None = None) -> int:
        """Route what is available on the source topics, committing batch by batch; returns how
        many records were routed. Raises DeliveryFailed, with everything before the failing
        event committed, when a target without a dead-letter topic fails.

        `assigned` (topic -> partitions) limits the work to the partitions this member of the
        group owns, when several routers share it; None means every partition."""
        if not self.sources:
            raise InvalidConfig("the router has no source topics: name them in the rules or pass sources=")
        handled = 0
        for topic in self.sources:
            committed = self.log.committed(self.group, topic)
            for partition in self._partitions(topic, assigned):
                offset = committed.get(partition, self.log.earliest_offset(topic, partition))
                records = self.log.read(topic, partition, offset, limit)
                for record in records:
                    try:
                        event = record.event()
                    except InvalidEvent:
                        self.undecodable += 1
                        continue
                    failed = [d for d in self.route(event, topic) if d.status == "failed"]
                    if failed:
                        self.log.commit(self.group, topic, {partition: record.offset})
                        first = failed[0]
                        raise DeliveryFailed(
                            f"{topic}[{partition}]@{record.offset}: rule {first.rule!r} could not deliver to "
                            f"{first.target} after {first.attempts} tries ({first.error}) and has no dead-letter topic"
                        )
                handled += len(records)
                if records:
                    self.log.commit(self.group, topic, {partition: records[-1].offset + 1})
        return handled

    def run(self, stop: threading.Event, wait: float = 1.0) -> None:
        """Poll until `stop` is set, waiting up to `wait` seconds for new records between polls."""
        while not stop.is_set():
            if not self.poll():
                self.wait(wait)

    def wait(self, timeout: float, assigned: Assigned | None = None) -> bool:
        """Block until a source topic has records past the group's position (True) or `timeout`
        seconds passed (False); the time is shared between the source topics."""
        share = timeout / max(1, len(self.sources))
        waited = False
        for topic in self.sources:
            committed = self.log.committed(self.group, topic)
            positions = {
                partition: committed.get(partition, self.log.earliest_offset(topic, partition))
                for partition in self._partitions(topic, assigned)
            }
            if positions:
                waited = True
                if self.log.wait(topic, positions, share):
                    return True
        if not waited:  # nothing assigned to this member: idle for the whole time
            time.sleep(timeout)
        return False

    def _partitions(self, topic: str, assigned: Assigned | None) -> list[int]:
        if assigned is None:
            return list(range(self.log.partition_count(topic)))
        return sorted(assigned.get(topic, ()))


@dataclasses.dataclass(slots=True)
class RouteTotals:
    routed: int = 0
    unmatched: int = 0
    reloads: int = 0


def route_file(
    log: Log,
    path: str | Path,
    stop: threading.Event,
    *,
    group: str = "inmotion-router",
    once: bool = False,
    wait: float = 1.0,
    say: Callable[[str], None] = lambda line: None,
    assignment: Callable[[tuple[str, ...]], Assigned] | None = None,
) -> RouteTotals:
    """Run a router on the rules in `path` until `stop` is set (or, with `once`, until nothing is
    left to route). A changed file is reloaded between batches: offsets are committed per batch,
    so no event is lost or skipped across a reload; a file that fails to load keeps the old rules.

    `assignment(sources)` is asked before every batch which partitions this member owns (a
    consumer-group heartbeat); it may hand over partitions then, since every batch is committed."""
    rule_set = load_rules(path)
    stamp = _stamp(path)
    router = Router(log, rule_set, group=group)
    say(f"routing {', '.join(router.sources) or 'nothing'} with {len(rule_set.rules)} rules")
    totals = RouteTotals()
    try:
        while not stop.is_set():
            assigned = None if assignment is None else assignment(router.sources)
            handled = router.poll(assigned=assigned)
            if once and not handled:
                break
            if not handled:
                router.wait(wait, assigned)
            current = _stamp(path)
            if current == stamp:
                continue
            stamp = current
            try:
                rule_set = load_rules(path)
            except InmotionError as error:
                say(f"error: keeping the previous rules: {error}")
                continue
            totals.routed, totals.unmatched = totals.routed + router.routed, totals.unmatched + router.unmatched
            router = Router(log, rule_set, group=group)
            totals.reloads += 1
            say(f"reloaded {path}: {len(rule_set.rules)} rules")
    finally:
        totals.routed, totals.unmatched = totals.routed + router.routed, totals.unmatched + router.unmatched
    return totals


def _stamp(path: str | Path) -> tuple[int, int]:
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0)
    return status.st_mtime_ns, status.st_size


def post(target: HttpTarget, event: Event) -> None:
    """POST the CloudEvent (HTTP binding, binary or structured mode). 2xx returns; 5xx, 408, 429,
    timeouts and connection errors raise a retryable error; any other status a permanent one."""
    headers = dict(target.headers)
    if target.mode == "structured":
        body: bytes = to_json(event)
        headers["Content-Type"] = STRUCTURED_CONTENT_TYPE
    else:
        key, attributes, value = to_binary(event)
        for name, raw in attributes:
            header = "Content-Type" if name == "content-type" else "ce-" + name.removeprefix("ce_")
            headers[header] = raw.decode()
        if key is not None:
            headers["ce-partitionkey"] = key.decode()
        body = value or b""
    request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=target.timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500 or exc.code in _RETRIED_CLIENT_ERRORS:
            raise ConnectionError(f"HTTP {exc.code}") from None
        raise _Permanent(f"HTTP {exc.code}") from None
