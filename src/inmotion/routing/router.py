"""The router: events from source topics, matched against rules, sent to every target of every
matching rule, on the runtime's delivery pipeline.

A `Router` adds subscriptions to an `App`. Its group reads the source topics (membership,
leases, per-key order and commits are the runtime's) and matches each event once: topic
targets and the unmatched topic get it appended at once, while each handler or HTTP target
gets it through a delivery topic of its own (`<group>.<rule>.<n>`), which a subscription in a
group of the same name delivers from, with the target's `Retry`, dead-lettering to the
target's dead-letter topic (default `<group>.<rule>.<n>.dlq`) in the runtime's format. So a
slow or failing target holds up neither the other targets nor the source partitions, and
`inmotion dlq redrive` sends an entry back to its own target only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from inmotion.errors import InmotionError, InvalidConfig
from inmotion.events import Event
from inmotion.log import DEFAULT_SESSION_TIMEOUT, Log
from inmotion.log.base import check_group_name
from inmotion.patterns.matcher import Matcher
from inmotion.patterns.pattern import event_document
from inmotion.routing.http import DeliveryRejected, HttpClient
from inmotion.routing.rules import HandlerTarget, HttpTarget, Rule, RuleSet, TopicTarget, load_rules
from inmotion.runtime import App, Context, Retry
from inmotion.runtime.publisher import to_message

ROUTING_CONCURRENCY = 16
"""Events of different keys a source partition routes at once: their appends are gathered into
one write (the runtime's publisher batches concurrent sends), while one key's stay in order."""
DELIVERY_CONCURRENCY = 16
"""Keys a target's partition delivers at once (one key's events in order), and the threads a
target with a plain handler or an HTTP endpoint has: a slow endpoint then holds up only the
keys it is slow on."""

_METRICS = {
    "inmotion_router_routed_total": ("counter", "Events the router matched against its rules."),
    "inmotion_router_matched_total": ("counter", "Events that matched a rule, per rule."),
    "inmotion_router_unmatched_total": ("counter", "Events that matched no rule."),
    "inmotion_router_delivered_total": ("counter", "Events a target took, per rule and target."),
    "inmotion_router_dead_lettered_total": ("counter", "Events a target failed for good, per rule and target."),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """One append the router makes for an event: to target `index` of `rule` (its topic, or
    its delivery topic), or to the unmatched topic (`rule` empty, `index` -1)."""

    rule: str
    index: int
    topic: str
    event: Event


def delivery_topic(group: str, rule: str, index: int) -> str:
    """The topic (and consumer group) that delivers to target `index` of `rule`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}.{rule}.{index}")[:240]


class Router:
    """Routes the events of the rules' source topics (or `sources`) as the consumer group
    `group` of `app`: `app.run()` (or `start`) runs it.

    `retry` applies to the router's own appends (topic targets, delivery topics, the unmatched
    topic); events whose appends fail every try go to `<group>.dlq`."""

    def __init__(
        self,
        app: App,
        rules: RuleSet | Iterable[Rule],
        *,
        group: str = "inmotion-router",
        sources: Iterable[str] | None = None,
        retry: Retry | None = None,
    ) -> None:
        rule_set = rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
        self.app = app
        self.group = check_group_name(group)
        self.rule_set = rule_set
        self._rules = {rule.name: rule for rule in rule_set.rules}
        self._matcher = Matcher({rule.name: rule.pattern for rule in rule_set.rules})
        named = {source for rule in rule_set.rules for source in rule.sources}
        self.sources: tuple[str, ...] = tuple(sorted(set(sources) if sources is not None else named))
        if not self.sources:
            raise InvalidConfig("the router has no source topics: name them in the rules or pass sources=")
        self._topics: dict[tuple[str, int], str] = {}
        """Where each target of each rule gets its events: its topic, or its delivery topic."""
        self.deliveries: dict[str, tuple[str, HandlerTarget | HttpTarget]] = {}
        """The delivery topics (each also its subscription's group): rule and target."""
        for rule in rule_set.rules:
            for index, target in enumerate(rule.targets):
                if isinstance(target, TopicTarget):
                    self._topics[rule.name, index] = target.topic
                    continue
                topic = self._topics[rule.name, index] = delivery_topic(group, rule.name, index)
                if topic in self.deliveries or topic in self.sources:
                    raise InvalidConfig(f"rule {rule.name!r} gives a delivery topic a name already used: {topic}")
                self.deliveries[topic] = (rule.name, target)
        metrics = app.metrics
        for name, (kind, text) in _METRICS.items():
            metrics.describe(name, kind, text)
        self._routed = metrics.counter("inmotion_router_routed_total", group=group)
        self._unmatched = metrics.counter("inmotion_router_unmatched_total", group=group)
        self._matched = {
            rule.name: metrics.counter("inmotion_router_matched_total", group=group, rule=rule.name)
            for rule in rule_set.rules
        }
        self._appended = {  # topic targets: the router's append is their delivery
            (rule.name, index): metrics.counter(
                "inmotion_router_delivered_total", group=group, rule=rule.name, target=target.describe()
            )
            for rule in rule_set.rules
            for index, target in enumerate(rule.targets)
            if isinstance(target, TopicTarget)
        }
        self._http = HttpClient()
        self._threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        app.subscribe(self.sources, group=group, retry=retry, concurrency=ROUTING_CONCURRENCY)(self._route)
        for topic, (rule_name, target) in self.deliveries.items():
            self._subscribe_target(rule_name, topic, target)

    # --- routing --------------------------------------------------------------------------
    def route(self, event: Event, topic: str | None = None) -> list[Forward]:
        """The appends that route `event` (read from `topic`, if any): one per target of every
        matching rule (the event transformed by the rule's input transform), or one to the
        unmatched topic; nothing when it matches no rule and there is no unmatched topic."""
        forwards: list[Forward] = []
        for name in self._matcher.match(event_document(event)):
            rule = self._rules[name]
            if rule.sources and topic is not None and topic not in rule.sources:
                continue
            outgoing = rule.transform.apply(event, name) if rule.transform is not None else event
            forwards.extend(
                Forward(name, index, self._topics[name, index], outgoing) for index in range(len(rule.targets))
            )
        if not forwards and self.rule_set.unmatched is not None:
            return [Forward("", -1, self.rule_set.unmatched, event)]
        return forwards

    async def _route(self, event: Event, ctx: Context) -> None:
        forwards = self.route(event, ctx.topic)
        send = self.app.publisher.send
        if len(forwards) == 1:
            await send(forwards[0].topic, to_message(forwards[0].event, None))
        elif forwards:
            await asyncio.gather(*(send(f.topic, to_message(f.event, None)) for f in forwards))
        self._routed.add()
        if not forwards or not forwards[0].rule:
            self._unmatched.add()
            return
        rule = ""
        for forward in forwards:
            if forward.rule != rule:
                rule = forward.rule
                self._matched[rule].add()
            appended = self._appended.get((rule, forward.index))
            if appended is not None:
                appended.add()

    # --- delivering -----------------------------------------------------------------------
    def _subscribe_target(self, rule: str, topic: str, target: HandlerTarget | HttpTarget) -> None:
        retry = dataclasses.replace(target.retry, give_up_on=(*target.retry.give_up_on, DeliveryRejected))
        send = self._sender(topic, target)
        labels = {"group": self.group, "rule": rule, "target": target.describe()}
        metrics = self.app.metrics
        delivered = metrics.counter("inmotion_router_delivered_total", **labels)
        dead_lettered = metrics.counter("inmotion_router_dead_lettered_total", **labels)

        async def deliver(event: Event, ctx: Context) -> None:
            try:
                await send(event)
            except Exception as error:
                if not retry.should_retry(error, ctx.attempt):
                    dead_lettered.add()
                raise
            delivered.add()

        self.app.subscribe(
            topic,
            group=topic,
            retry=retry,
            dead_letter=target.dead_letter or True,
            concurrency=DELIVERY_CONCURRENCY,
        )(deliver)

    def _sender(self, topic: str, target: HandlerTarget | HttpTarget) -> Callable[[Event], Awaitable[object]]:
        """How the target takes an event: an async handler on the loop; a plain handler or an
        HTTP request in threads of the target's own, so a slow target ties up none of another's."""
        if isinstance(target, HandlerTarget) and inspect.iscoroutinefunction(target.handler):
            return target.handler
        call: Callable[[Event], object] = (
            target.handler
            if isinstance(target, HandlerTarget)
            else functools.partial(
                self._http.post, target.url, mode=target.mode, headers=dict(target.headers), timeout=target.timeout
            )
        )
        threads = self._threads[topic] = concurrent.futures.ThreadPoolExecutor(
            DELIVERY_CONCURRENCY, thread_name_prefix=f"inmotion-target:{topic}"
        )

        async def send(event: Event) -> None:
            await asyncio.get_running_loop().run_in_executor(threads, call, event)

        return send

    # --- inspection -----------------------------------------------------------------------
    def caught_up(self, log: Log) -> bool:
        """Has every subscription of the router (its own group and each target's) committed
        everything in its topics? The router's group first: its commit comes after its
        appends to the delivery topics, which are then read."""
        groups = [(self.group, self.sources), *((topic, (topic,)) for topic in self.deliveries)]
        for group, topics in groups:
            for topic in topics:
                if topic not in log.list_topics():
                    continue
                committed = log.committed(group, topic)
                for partition in range(log.partition_count(topic)):
                    end = log.latest_offset(topic, partition)
                    if committed.get(partition, log.earliest_offset(topic, partition)) < end:
                        return False
        return True

    def close(self) -> None:
        """Close the targets' threads and HTTP connections (after `app.stop()`)."""
        for threads in self._threads.values():
            threads.shutdown(wait=True)
        self._http.close()


def missing_topics(log: Log, rule_set: RuleSet) -> list[str]:
    """The topics that the rules name (sources and topic targets), which must exist before
    routing, and that the log does not have."""
    named = {source for rule in rule_set.rules for source in rule.sources}
    named.update(t.topic for rule in rule_set.rules for t in rule.targets if isinstance(t, TopicTarget))
    existing = set(log.list_topics())
    return sorted(named - existing)


@dataclasses.dataclass(slots=True)
class RouteTotals:
    routed: int = 0
    unmatched: int = 0
    reloads: int = 0


class RulesSource(Protocol):
    """Where a router's rules come from, and a stamp that changes when they do."""

    @property
    def describe(self) -> str: ...

    def load(self) -> RuleSet: ...

    def stamp(self) -> object: ...


@dataclasses.dataclass(frozen=True)
class RulesFile:
    path: str | Path

    @property
    def describe(self) -> str:
        return str(self.path)

    def load(self) -> RuleSet:
        return load_rules(self.path)

    def stamp(self) -> object:
        try:
            status = os.stat(self.path)
        except OSError:
            return (0, 0)
        return status.st_mtime_ns, status.st_size


async def route_file(log: Log, path: str | Path, **options: Any) -> RouteTotals:
    """`route` with the rules of a rules file (reloaded when the file changes)."""
    return await route(log, RulesFile(path), **options)


async def route(
    log: Log,
    source: RulesSource,
    *,
    group: str = "inmotion-router",
    once: bool = False,
    until: asyncio.Event | None = None,
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    check_every: float = 1.0,
    say: Callable[[str], None] = lambda line: None,
    on_app: Callable[[App], None] = lambda app: None,
) -> RouteTotals:
    """Route with the rules of `source` as the consumer group `group` until `until` is set,
    SIGTERM or SIGINT arrives, or, with `once`, everything there is has been delivered.

    Every `check_every` seconds the source's stamp is looked at: when it changed, the router
    stops (its subscriptions finish their events and commit) and starts again with the new
    rules, so no event is lost or skipped across a reload; rules that fail to load, or name a
    missing topic, keep the old ones. Topics the rules name must exist (InvalidConfig names the
    missing ones); dead-letter, unmatched and delivery topics are created as needed. `on_app`
    is told the app the router runs on, and the new one after each reload (its metrics)."""
    rule_set = source.load()
    stamp = source.stamp()
    stop = until or asyncio.Event()
    totals = RouteTotals()
    app, router = _router(log, rule_set, source.describe, group, session_timeout)
    say(f"routing {', '.join(router.sources)} with {len(rule_set.rules)} rules")
    while True:
        on_app(app)
        running = asyncio.Event()  # set by the watcher, or by the app on SIGTERM/SIGINT
        watcher = asyncio.create_task(_watch(router, source, stamp, stop, running, once, check_every))
        try:
            await app.run(running)
        finally:
            reload = watcher.done() and not watcher.cancelled() and watcher.result()
            watcher.cancel()
            totals.routed += int(app.metrics.value("inmotion_router_routed_total"))
            totals.unmatched += int(app.metrics.value("inmotion_router_unmatched_total"))
            router.close()
            app.close()
        if not reload:
            return totals
        stamp = source.stamp()
        previous = router.rule_set
        try:
            app, router = _router(log, source.load(), source.describe, group, session_timeout)
        except InmotionError as error:
            say(f"error: keeping the previous rules: {error}")
            app, router = _router(log, previous, source.describe, group, session_timeout)
            continue
        totals.reloads += 1
        say(f"reloaded {source.describe}: {len(router.rule_set.rules)} rules")


async def _watch(
    router: Router,
    source: RulesSource,
    stamp: object,
    stop: asyncio.Event,
    running: asyncio.Event,
    once: bool,
    every: float,
) -> bool:
    """Stop the router's run (`running`) when `stop` is set, when (with `once`) it has caught
    up, or when the rules changed; True in the last case."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set() or (once and await asyncio.to_thread(router.caught_up, router.app.log)):
            running.set()
            return False
        if await asyncio.to_thread(source.stamp) != stamp:
            running.set()
            return True


def _router(log: Log, rule_set: RuleSet, origin: str, group: str, session_timeout: float) -> tuple[App, Router]:
    """A router for `rule_set` on an app of its own; InvalidConfig if topics it names are missing."""
    app = App(group, log, session_timeout=session_timeout)
    try:
        router = Router(app, rule_set, group=group)
        missing = missing_topics(log, rule_set)
        if missing:
            raise InvalidConfig(f"{origin}: missing topics: {', '.join(missing)} (create them: inmotion topics create)")
        return app, router
    except BaseException:
        app.close()
        raise
