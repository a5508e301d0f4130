"""The router: rules, targets (topic, handler, HTTP against a real local server), retries, dead
letters, input transforms, unmatched events, and the consumer loop over the memory log."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inmotion import Event
from inmotion.events import from_json
from inmotion.log import Log, TopicConfig, connect
from inmotion.routing import (
    DeliveryFailed,
    HandlerTarget,
    HttpTarget,
    InputTransform,
    Pattern,
    RetryPolicy,
    Router,
    Rule,
    RuleSet,
    TopicTarget,
    parse_rules,
)
from inmotion.routing.router import route_file


class Endpoint:
    """A real HTTP server on 127.0.0.1 answering from a script: a status code, or "hang" to
    hold the request until the test ends (the client's timeout fires)."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                answer = endpoint.script.pop(0) if endpoint.script else 200
                if answer == "hang":
                    endpoint.release.wait(10)
                    return
                assert isinstance(answer, int)
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def log() -> Iterator[Log]:
    with connect("memory://") as memory:
        for topic in ("orders", "big", "dlq", "unmatched"):
            memory.create_topic(topic, TopicConfig(partitions=2))
        yield memory


def order(amount: float, number: int = 1) -> Event:
    return Event.create(
        "com.acme.order.created", {"id": f"o-{number}", "amount": amount}, source="/shop", key=f"o-{number}"
    )


def events_in(log: Log, topic: str) -> list[Event]:
    return [
        record.event()
        for partition in range(log.partition_count(topic))
        for record in log.read(topic, partition, log.earliest_offset(topic, partition))
    ]


BIG = Pattern({"type": ["com.acme.order.created"], "data": {"amount": [{"numeric": [">=", 100]}]}})


class Sleeps(list[float]):
    """A fake sleep: records the backoff delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_matching_event_goes_to_every_target_of_every_matching_rule(log: Log) -> None:
    seen: list[Event] = []
    rules = [
        Rule(name="big", pattern=BIG, targets=(TopicTarget(topic="big"), HandlerTarget(handler=seen.append))),
        Rule(
            name="all-orders",
            pattern=Pattern({"type": [{"prefix": "com.acme.order."}]}),
            targets=(HandlerTarget(handler=seen.append),),
        ),
    ]
    router = Router(log, rules)
    deliveries = router.route(order(250))
    assert [(d.rule, d.status) for d in deliveries] == [
        ("big", "delivered"),
        ("big", "delivered"),
        ("all-orders", "delivered"),
    ]
    assert [e.data["amount"] for e in events_in(log, "big")] == [250]
    assert len(seen) == 2
    assert [(d.rule, d.status) for d in router.route(order(5))] == [("all-orders", "delivered")]
    assert events_in(log, "big")[0].key == "o-1"


def test_unmatched_events_are_counted_and_forwarded_to_the_catch_all(log: Log) -> None:
    router = Router(log, RuleSet((Rule(name="big", pattern=BIG, targets=(TopicTarget(topic="big"),)),), "unmatched"))
    assert router.route(order(5))[0].target == "topic unmatched"
    assert router.route(order(500))
    assert router.unmatched == 1
    assert [e.data["amount"] for e in events_in(log, "unmatched")] == [5]


def test_source_topics_restrict_a_rule(log: Log) -> None:
    seen: list[Event] = []
    rule = Rule(name="r", pattern=BIG, targets=(HandlerTarget(handler=seen.append),), sources=("orders",))
    router = Router(log, [rule])
    assert router.route(order(500), topic="elsewhere") == []
    assert len(router.route(order(500), topic="orders")) == 1


def test_input_transform_builds_the_delivered_data(log: Log) -> None:
    seen: list[Event] = []
    transform = InputTransform(
        {"id": "$.data.id", "amount": "$.data.amount", "missing": "$.data.nope"},
        '{"text": "Order <id> of <amount>", "amount": <amount>, "none": <missing>, "rule": "<aws.events.rule-name>"}',
    )
    rule = Rule(name="big", pattern=BIG, targets=(HandlerTarget(handler=seen.append),), transform=transform)
    Router(log, [rule]).route(order(250.5))
    (delivered,) = seen
    assert delivered.data == {"text": "Order o-1 of 250.5", "amount": 250.5, "none": None, "rule": "big"}
    assert delivered.type == "com.acme.order.created"
    plain = InputTransform({"id": "$.data.id"}, "order <id> is big")
    assert plain.apply(order(1), "r").data == "order o-1 is big"


def test_handler_failures_are_retried_with_backoff_then_dead_lettered(log: Log) -> None:
    calls: list[Event] = []

    def flaky(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("downstream is sulking")

    policy = RetryPolicy(attempts=4, backoff=0.5, multiplier=2, max_backoff=1.5)
    target = HandlerTarget(handler=flaky, retry=policy, dead_letter="dlq")
    sleeps = Sleeps()
    (delivery,) = Router(log, [Rule(name="big", pattern=BIG, targets=(target,))], sleep=sleeps).route(order(500))
    assert (delivery.status, delivery.attempts) == ("dead-lettered", 4)
    assert sleeps == [0.5, 1.0, 1.5]
    assert len(calls) == 4
    (letter,) = events_in(log, "dlq")
    assert letter.extensions["deadletterrule"] == "big"
    assert "downstream is sulking" in str(letter.extensions["deadletterreason"])


def test_http_binary_mode_delivers_on_2xx(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = [202]
    rule = Rule(name="big", pattern=BIG, targets=(HttpTarget(url=endpoint.url, headers={"X-Token": "t"}),))
    (delivery,) = Router(log, [rule]).route(order(500))
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    ((headers, body),) = endpoint.requests
    assert headers["ce-type"] == "com.acme.order.created"
    assert headers["ce-source"] == "/shop"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-partitionkey"] == "o-1"
    assert headers["content-type"] == "application/json"
    assert headers["x-token"] == "t"
    assert json.loads(body) == {"id": "o-1", "amount": 500}


def test_http_structured_mode(log: Log, endpoint: Endpoint) -> None:
    rule = Rule(name="big", pattern=BIG, targets=(HttpTarget(url=endpoint.url, mode="structured"),))
    event = order(500)
    Router(log, [rule]).route(event)
    ((headers, body),) = endpoint.requests
    assert headers["content-type"] == "application/cloudevents+json"
    assert from_json(body).id == event.id


def test_http_5xx_is_retried_until_it_succeeds(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = [500, 503, 200]
    sleeps = Sleeps()
    target = HttpTarget(url=endpoint.url, retry=RetryPolicy(attempts=5, backoff=0.1), dead_letter="dlq")
    (delivery,) = Router(log, [Rule(name="big", pattern=BIG, targets=(target,))], sleep=sleeps).route(order(500))
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert sleeps == [0.1, 0.2]
    assert events_in(log, "dlq") == []


def test_http_4xx_goes_straight_to_the_dead_letter_topic(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = [404]
    sleeps = Sleeps()
    target = HttpTarget(url=endpoint.url, retry=RetryPolicy(attempts=5), dead_letter="dlq")
    (delivery,) = Router(log, [Rule(name="big", pattern=BIG, targets=(target,))], sleep=sleeps).route(order(500))
    assert (delivery.status, delivery.attempts, delivery.error) == ("dead-lettered", 1, "HTTP 404")
    assert sleeps == []
    assert len(endpoint.requests) == 1
    assert events_in(log, "dlq")[0].extensions["deadletterreason"] == "HTTP 404"


def test_http_timeouts_are_retried(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = ["hang", 200]
    sleeps = Sleeps()
    target = HttpTarget(url=endpoint.url, timeout=0.2, retry=RetryPolicy(attempts=3, backoff=0.1), dead_letter="dlq")
    (delivery,) = Router(log, [Rule(name="big", pattern=BIG, targets=(target,))], sleep=sleeps).route(order(500))
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert sleeps == [0.1]


def test_http_server_down_is_retried_then_dead_lettered(log: Log) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = HttpTarget(url=f"http://127.0.0.1:{port}/hook", retry=RetryPolicy(attempts=3), dead_letter="dlq")
    sleeps = Sleeps()
    (delivery,) = Router(log, [Rule(name="big", pattern=BIG, targets=(target,))], sleep=sleeps).route(order(500))
    assert (delivery.status, delivery.attempts) == ("dead-lettered", 3)
    assert "refused" in (delivery.error or "").lower()
    assert len(events_in(log, "dlq")) == 1


def test_the_loop_commits_after_delivery_and_resumes(log: Log) -> None:
    seen: list[Event] = []
    rules = [Rule(name="big", pattern=BIG, targets=(HandlerTarget(handler=seen.append),), sources=("orders",))]
    log.append_events("orders", [order(amount, n) for n, amount in enumerate([500, 5, 700, 900])])
    router = Router(log, rules, group="g")
    assert router.poll() == 4
    assert sorted(e.data["amount"] for e in seen) == [500, 700, 900]
    assert router.unmatched == 1
    assert sum(log.committed("g", "orders").values()) == 4
    assert Router(log, rules, group="g").poll() == 0
    log.append_events("orders", [order(1000, 9)])
    assert Router(log, rules, group="g").poll() == 1
    assert len(seen) == 4


def test_a_failed_delivery_without_dead_letter_stops_before_the_event(log: Log) -> None:
    outcomes = [RuntimeError("down"), None, None]
    seen: list[Event] = []

    def handler(event: Event) -> None:
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome
        seen.append(event)

    target = HandlerTarget(handler=handler, retry=RetryPolicy(attempts=1))
    rules = [Rule(name="big", pattern=BIG, targets=(target,), sources=("orders",))]
    log.append_events("orders", [order(500, 1).replace(extensions={})])
    with pytest.raises(DeliveryFailed, match="no dead-letter topic"):
        Router(log, rules, group="g").poll()
    assert log.committed("g", "orders") in ({}, {0: 0}, {1: 0}, {0: 0, 1: 0})
    assert Router(log, rules, group="g").poll() == 1
    assert len(seen) == 1


def test_run_stops_when_asked(log: Log) -> None:
    seen: list[Event] = []
    stop = threading.Event()

    def handler_then_stop(event: Event) -> None:
        seen.append(event)
        stop.set()

    router = Router(
        log,
        [Rule(name="big", pattern=BIG, targets=(HandlerTarget(handler=handler_then_stop),), sources=("orders",))],
    )
    worker = threading.Thread(target=router.run, args=(stop, 0.05))
    worker.start()
    log.append_events("orders", [order(500)])
    worker.join(10)
    assert not worker.is_alive()
    assert len(seen) == 1


def test_rules_from_yaml_route_events(log: Log) -> None:
    rule_set = parse_rules(
        """
unmatched: unmatched
rules:
  - name: big
    sources: [orders]
    pattern: {data: {amount: [{numeric: [">=", 100]}]}}
    targets: [{topic: big}]
"""
    )
    log.append_events("orders", [order(500, 1), order(1, 2)])
    router = Router(log, rule_set, group="yaml")
    assert router.poll() == 2
    assert [e.data["amount"] for e in events_in(log, "big")] == [500]
    assert [e.data["amount"] for e in events_in(log, "unmatched")] == [1]


def test_route_file_reloads_edited_rules_without_losing_events(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: big\n    sources: [orders]\n"
        "    pattern: {data: {amount: [{numeric: ['>', 100]}]}}\n    targets: [{topic: big}]\n"
    )
    reloaded = threading.Event()
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("reloaded"):
            reloaded.set()

    stop = threading.Event()
    totals = []
    worker = threading.Thread(
        target=lambda: totals.append(route_file(log, path, stop, group="file", wait=0.05, say=say))
    )
    worker.start()
    log.append_events("orders", [order(500, 1)])
    assert log.wait("big", {0: 0, 1: 0}, timeout=10)
    path.write_text(path.read_text().replace("{topic: big}", "{topic: dlq}"))
    stamp = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))
    assert reloaded.wait(10)
    log.append_events("orders", [order(600, 2)])
    assert log.wait("dlq", {0: 0, 1: 0}, timeout=10)
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert [e.data["amount"] for e in events_in(log, "big")] == [500]
    assert [e.data["amount"] for e in events_in(log, "dlq")] == [600]
    (result,) = totals
    assert (result.routed, result.reloads) == (2, 1)
    assert lines[0] == "routing orders with 1 rules"
