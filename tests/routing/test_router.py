"""The router on the runtime's delivery pipeline: where events go (`Router.route`), topic,
handler and HTTP targets (against real local servers), retries on the app's clock, dead letters
in the runtime's format, a failing target that delays no other, metrics, and reloads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inmotion import Event
from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig
from inmotion.events import from_json
from inmotion.events.http import encode_header
from inmotion.log import Log, TopicConfig, connect
from inmotion.routing import (
    HandlerTarget,
    HttpTarget,
    InputTransform,
    Pattern,
    Router,
    Rule,
    RuleSet,
    TopicTarget,
    parse_rules,
    route_file,
)
from inmotion.routing.http import DeliveryRejected, HttpClient, request_of
from inmotion.runtime import App, DeadLetter, Retry
from inmotion.testing import eventually

Answer = int | str
"""What an Endpoint answers a request: a status code, "hang" (hold it until the test ends, so
the client's timeout fires) or "redirect <url>" (302 with that Location)."""


class Endpoint:
    """A real HTTP/1.1 server on 127.0.0.1 answering from a script (200 once it runs out) and
    recording each request's headers, body and client port."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.ports: list[int] = []
        self.delay = 0.0
        """Seconds to take over each answer (a slow endpoint)."""
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_POST(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                endpoint.ports.append(self.client_address[1])
                endpoint.release.wait(endpoint.delay)
                answer = endpoint.script.pop(0) if endpoint.script else 200
                if answer == "hang":
                    endpoint.release.wait(10)
                    return
                if isinstance(answer, str):
                    self.send_response(302)
                    self.send_header("Location", answer.removeprefix("redirect "))
                else:
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


def order(amount: float, number: int = 1, subject: str | None = None) -> Event:
    return Event.create(
        "com.acme.order.created",
        {"id": f"o-{number}", "amount": amount},
        source="/shop",
        key=f"o-{number}",
        subject=subject,
    )


def events_in(log: Log, topic: str) -> list[Event]:
    return [
        record.event()
        for partition in range(log.partition_count(topic))
        for record in log.read(topic, partition, log.earliest_offset(topic, partition))
    ]


def dead_letters(log: Log, topic: str) -> list[DeadLetter]:
    if topic not in log.list_topics():
        return []
    return [
        DeadLetter.from_record(record)
        for partition in range(log.partition_count(topic))
        for record in log.read(topic, partition, log.earliest_offset(topic, partition))
    ]


BIG = Pattern({"type": ["com.acme.order.created"], "data": {"amount": [{"numeric": [">=", 100]}]}})
NO_JITTER = Retry(attempts=4, backoff=0.5, max_backoff=1.5, jitter=False)


def routing(
    log: Log,
    rules: RuleSet | list[Rule],
    scenario: Callable[[App, Router], Awaitable[None]],
    clock: FakeClock | None = None,
) -> App:
    """Run `scenario` while a router with `rules` runs on an app over `log`; returns the app
    (stopped) for its metrics."""

    async def main() -> App:
        app = App("router", log, clock=clock or FakeClock(), commit_interval=0.05)
        router = Router(app, rules)
        await app.start()
        try:
            await scenario(app, router)
        finally:
            await app.stop()
            router.close()
            app.close()
        return app

    return asyncio.run(main())


def publish(app: App, *events: Event) -> Awaitable[object]:
    return app.publish_many("orders", list(events))


def rule(*targets: Any, **options: Any) -> Rule:
    return Rule(name="big", pattern=BIG, targets=targets, sources=("orders",), **options)


# --- where events go -------------------------------------------------------------------------


def test_route_names_the_appends_for_every_target_of_every_matching_rule(log: Log) -> None:
    rules = RuleSet(
        (
            Rule(
                name="big",
                pattern=BIG,
                targets=(TopicTarget(topic="big"), HandlerTarget(handler=print)),
                sources=("orders",),
            ),
            Rule(
                name="all orders",
                pattern=Pattern({"type": [{"prefix": "com.acme.order."}]}),
                targets=(TopicTarget(topic="big"),),
            ),
        ),
        unmatched="unmatched",
    )
    router = Router(App("r", log), rules)
    forwards = router.route(order(250), "orders")
    assert [(f.rule, f.index, f.topic) for f in forwards] == [
        ("big", 0, "big"),
        ("big", 1, "inmotion-router.big.1"),
        ("all orders", 0, "big"),
    ]
    assert [(f.rule, f.topic) for f in router.route(order(250), "elsewhere")] == [("all orders", "big")]
    assert [(f.rule, f.topic) for f in router.route(Event.create("other", 1, source="/x"))] == [("", "unmatched")]
    assert router.sources == ("orders",)
    assert list(router.deliveries) == ["inmotion-router.big.1"]


def test_input_transform_builds_the_delivered_data(log: Log) -> None:
    transform = InputTransform(
        {"id": "$.data.id", "amount": "$.data.amount", "missing": "$.data.nope"},
        '{"text": "Order <id> of <amount>", "amount": <amount>, "none": <missing>, "rule": "<aws.events.rule-name>"}',
    )
    router = Router(App("r", log), [rule(TopicTarget(topic="big"), transform=transform)])
    (forward,) = router.route(order(250.5))
    assert forward.event.data == {"text": "Order o-1 of 250.5", "amount": 250.5, "none": None, "rule": "big"}
    assert forward.event.type == "com.acme.order.created"
    plain = InputTransform({"id": "$.data.id"}, "order <id> is big")
    assert plain.apply(order(1), "r").data == "order o-1 is big"


def test_a_router_needs_source_topics(log: Log) -> None:
    with pytest.raises(InvalidConfig, match="no source topics"):
        Router(App("r", log), [Rule(name="r", pattern=BIG, targets=(TopicTarget(topic="big"),))])


# --- on the pipeline ---------------------------------------------------------------------------


def test_topic_targets_and_the_unmatched_topic_with_metrics(log: Log) -> None:
    seen: list[Event] = []
    rules = RuleSet((rule(TopicTarget(topic="big"), HandlerTarget(handler=seen.append)),), "unmatched")

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500, 1), order(5, 2), order(700, 3))
        await eventually(lambda: len(seen) == 2 and len(events_in(log, "unmatched")) == 1)

    app = routing(log, rules, scenario)
    assert sorted(e.data["amount"] for e in events_in(log, "big")) == [500, 700]
    assert [e.data["amount"] for e in events_in(log, "unmatched")] == [5]
    assert {e.id for e in seen} == {e.id for e in events_in(log, "big")}  # forwarded intact
    metrics = app.prometheus()
    for line in (
        'inmotion_router_routed_total{group="inmotion-router"} 3',
        'inmotion_router_matched_total{group="inmotion-router",rule="big"} 2',
        'inmotion_router_unmatched_total{group="inmotion-router"} 1',
        'inmotion_router_delivered_total{group="inmotion-router",rule="big",target="topic big"} 2',
        'inmotion_router_delivered_total{group="inmotion-router",rule="big",target="handler list.append"} 2',
        'inmotion_router_dead_lettered_total{group="inmotion-router",rule="big",target="handler list.append"} 0',
        "# TYPE inmotion_router_delivered_total counter",
    ):
        assert line in metrics.splitlines(), line


def test_handler_failures_are_retried_on_the_app_clock_then_dead_lettered_in_the_runtime_format(log: Log) -> None:
    calls: list[Event] = []

    def flaky(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("downstream is sulking")

    clock = FakeClock()
    target = HandlerTarget(handler=flaky, retry=NO_JITTER, dead_letter="dlq")

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500))
        await eventually(lambda: len(dead_letters(log, "dlq")) == 1)

    app = routing(log, [rule(target)], scenario, clock)
    assert clock.sleeps == [0.5, 1.0, 1.5]
    assert len(calls) == 4
    (letter,) = dead_letters(log, "dlq")
    assert letter.error["error_message"] == "downstream is sulking"
    assert (letter.error["attempts"], letter.original_topic, letter.error["group"]) == (
        "4",
        "inmotion-router.big.0",
        "inmotion-router.big.0",
    )
    assert letter.event().data == {"id": "o-1", "amount": 500}
    assert app.metrics.value("inmotion_router_dead_lettered_total", rule="big") == 1


def test_a_failing_http_target_does_not_delay_another_target(log: Log, endpoint: Endpoint) -> None:
    """The review's case: one endpoint answering 503 held an SMS to another target back by its
    backoffs. Here the clock stands still, so the failing target stays in its first backoff
    while the other target receives every event."""
    endpoint.script = [503] * 100
    sms: list[Event] = []
    clock = FakeClock(autojump=False)
    rules = [rule(HttpTarget(url=endpoint.url, retry=Retry(backoff=10)), HandlerTarget(handler=sms.append))]

    async def scenario(app: App, router: Router) -> None:
        await publish(app, *(order(100 + n, n) for n in range(6)))
        await eventually(lambda: len(sms) == 6, what="the other target's deliveries")
        await eventually(lambda: clock.sleeping > 0, what="the failing target's backoff")

    routing(log, rules, scenario, clock)
    assert sorted(e.data["amount"] for e in sms) == [100, 101, 102, 103, 104, 105]
    assert 1 <= len(endpoint.requests) <= 6


# --- HTTP ---------------------------------------------------------------------------------------


def test_http_binary_mode_delivers_on_2xx_over_one_kept_alive_connection(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = [202, 200, 200]
    target = HttpTarget(url=endpoint.url, headers={"X-Token": "t"})
    clock = FakeClock()

    async def scenario(app: App, router: Router) -> None:
        for n in range(3):  # one after the other: each may reuse the connection
            await publish(app, order(500 + n, n))
            await eventually(lambda: len(endpoint.requests) == n + 1)  # noqa: B023 (awaited at once)

    app = routing(log, [rule(target)], scenario, clock)
    headers, body = endpoint.requests[0]
    assert headers["ce-type"] == "com.acme.order.created"
    assert headers["ce-source"] == "/shop"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-partitionkey"] == "o-0"
    assert headers["content-type"] == "application/json"
    assert headers["x-token"] == "t"
    assert json.loads(body) == {"id": "o-0", "amount": 500}
    assert len(set(endpoint.ports)) < 3  # a connection carried more than one request
    assert app.metrics.value("inmotion_router_delivered_total", rule="big") == 3


def test_http_structured_mode(log: Log, endpoint: Endpoint) -> None:
    event = order(500)

    async def scenario(app: App, router: Router) -> None:
        await publish(app, event)
        await eventually(lambda: len(endpoint.requests) == 1)

    routing(log, [rule(HttpTarget(url=endpoint.url, mode="structured"))], scenario)
    ((headers, body),) = endpoint.requests
    assert headers["content-type"] == "application/cloudevents+json"
    assert from_json(body).id == event.id


def test_binary_mode_percent_encodes_ce_headers_and_they_decode_back(log: Log, endpoint: Endpoint) -> None:
    subjects = ["日本", "für Jürgen", 'line\r\nInjected: "x" 100%', "plain/ascii-_~"]
    events = [order(500, n, subject=subject) for n, subject in enumerate(subjects)]

    async def scenario(app: App, router: Router) -> None:
        await publish(app, *events)
        await eventually(lambda: len(endpoint.requests) == len(subjects))

    routing(log, [rule(HttpTarget(url=endpoint.url))], scenario)
    received = {headers["ce-id"]: headers for headers, _ in endpoint.requests}
    for event in events:
        headers = received[event.id]
        raw = headers["ce-subject"]
        assert all(0x21 <= ord(char) <= 0x7E and char != '"' for char in raw), raw
        assert urllib.parse.unquote(raw, errors="strict") == event.subject
        assert "injected" not in headers
    assert encode_header("Euro € 😀") == "Euro%20%E2%82%AC%20%F0%9F%98%80"  # the binding's example


def test_binary_mode_sends_the_content_type_as_it_is(log: Log, endpoint: Endpoint) -> None:
    event = order(500).replace(datacontenttype="application/json; charset=utf-8")

    async def scenario(app: App, router: Router) -> None:
        await publish(app, event)
        await eventually(lambda: len(endpoint.requests) == 1)

    routing(log, [rule(HttpTarget(url=endpoint.url))], scenario)
    ((headers, body),) = endpoint.requests
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"id": "o-1", "amount": 500}
    with pytest.raises(DeliveryRejected, match="cannot be sent as an HTTP header"):
        request_of(order(1).replace(datacontenttype="text/plain\r\nInjected: 1"), "binary")


def test_http_5xx_is_retried_until_it_succeeds_and_labelled_as_what_it_is(
    log: Log, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.script = [500, 503, 200]
    clock = FakeClock()
    target = HttpTarget(url=endpoint.url, retry=Retry(attempts=5, backoff=0.1, jitter=False))

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500))
        await eventually(lambda: app.metrics.value("inmotion_router_delivered_total") == 1)

    routing(log, [rule(target)], scenario, clock)
    assert clock.sleeps == [0.1, 0.2]
    assert len(endpoint.requests) == 3
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("handler failed")]
    assert failures == [
        f"handler failed (attempt 1, will retry): DeliveryFailed: HTTP 500 Internal Server Error from {endpoint.url}",
        f"handler failed (attempt 2, will retry): DeliveryFailed: HTTP 503 Service Unavailable from {endpoint.url}",
    ]


def test_http_4xx_is_dead_lettered_at_once(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = [404]
    clock = FakeClock()

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500))
        await eventually(lambda: len(dead_letters(log, "dlq")) == 1)

    routing(log, [rule(HttpTarget(url=endpoint.url, retry=Retry(attempts=5), dead_letter="dlq"))], scenario, clock)
    (letter,) = dead_letters(log, "dlq")
    assert (letter.error["attempts"], letter.error["error_type"]) == ("1", "inmotion.routing.http.DeliveryRejected")
    assert letter.error["error_message"] == f"HTTP 404 Not Found from {endpoint.url}"
    assert clock.sleeps == []
    assert len(endpoint.requests) == 1


def test_a_redirect_is_not_followed_but_retried_then_dead_lettered(log: Log, endpoint: Endpoint) -> None:
    elsewhere = Endpoint()
    try:
        endpoint.script = [f"redirect {elsewhere.url}"] * 3
        target = HttpTarget(url=endpoint.url, headers={"Authorization": "Bearer secret"}, retry=Retry(attempts=3))

        async def scenario(app: App, router: Router) -> None:
            await publish(app, order(500))
            await eventually(lambda: len(dead_letters(log, "inmotion-router.big.0.dlq")) == 1)

        routing(log, [rule(target)], scenario)
    finally:
        elsewhere.close()
    assert elsewhere.requests == []
    assert len(endpoint.requests) == 3
    (letter,) = dead_letters(log, "inmotion-router.big.0.dlq")
    assert letter.error["error_message"] == f"HTTP 302 Found from {endpoint.url}: redirects are not followed"
    assert letter.error["attempts"] == "3"


def test_http_timeouts_are_retried(log: Log, endpoint: Endpoint) -> None:
    endpoint.script = ["hang", 200]
    clock = FakeClock()
    target = HttpTarget(url=endpoint.url, timeout=0.2, retry=Retry(attempts=3, backoff=0.1, jitter=False))

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500))
        await eventually(lambda: app.metrics.value("inmotion_router_delivered_total") == 1)

    routing(log, [rule(target)], scenario, clock)
    assert clock.sleeps == [0.1]


def test_http_server_down_is_retried_then_dead_lettered(log: Log) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = HttpTarget(url=f"http://127.0.0.1:{port}/hook", retry=Retry(attempts=3), dead_letter="dlq")

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500))
        await eventually(lambda: len(dead_letters(log, "dlq")) == 1)

    routing(log, [rule(target)], scenario)
    (letter,) = dead_letters(log, "dlq")
    assert letter.error["error_type"] == "builtins.ConnectionRefusedError"
    assert letter.error["attempts"] == "3"


def test_http_target_headers_may_not_carry_line_breaks() -> None:
    with pytest.raises(InvalidConfig, match="no CR or LF"):
        HttpTarget(url="http://127.0.0.1:9/x", headers={"X-A": "a\r\nInjected: 1"})


# --- rules files -----------------------------------------------------------------------------


def test_rules_from_yaml_route_events(log: Log) -> None:
    rule_set = parse_rules(
        """
unmatched: unmatched
rules:
  - name: big
    sources: [orders]
    pattern: {data: {amount: [{numeric: [">=", 100]}]}}
    targets:
      - topic: big
      - handler: json:dumps
        retry: {attempts: 2, backoff: 0.5, multiplier: 3, max_backoff: 10}
"""
    )
    (_, handler) = rule_set.rules[0].targets
    assert isinstance(handler, HandlerTarget)
    assert handler.retry == Retry(attempts=2, backoff=0.5, multiplier=3, max_backoff=10)
    assert [dataclasses.replace(handler.retry, jitter=False).delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]

    async def scenario(app: App, router: Router) -> None:
        await publish(app, order(500, 1), order(1, 2))
        await eventually(lambda: len(events_in(log, "big")) + len(events_in(log, "unmatched")) == 2)

    routing(log, rule_set, scenario)
    assert [e.data["amount"] for e in events_in(log, "big")] == [500]
    assert [e.data["amount"] for e in events_in(log, "unmatched")] == [1]


def test_route_file_reloads_edited_rules_without_losing_events(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: big\n    sources: [orders]\n"
        "    pattern: {data: {amount: [{numeric: ['>', 100]}]}}\n    targets: [{topic: big}]\n"
    )
    lines: list[str] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(route_file(log, path, group="file", until=stop, check_every=0.05, say=lines.append))
        log.append_events("orders", [order(500, 1)])
        await eventually(lambda: len(events_in(log, "big")) == 1)
        path.write_text(path.read_text().replace("{topic: big}", "{topic: dlq}"))
        stamp = os.stat(path).st_mtime_ns + 1_000_000_000
        os.utime(path, ns=(stamp, stamp))
        await eventually(lambda: any(line.startswith("reloaded") for line in lines))
        log.append_events("orders", [order(600, 2)])
        await eventually(lambda: len(events_in(log, "dlq")) == 1)
        stop.set()
        totals = await task
        assert (totals.routed, totals.reloads) == (2, 1)

    asyncio.run(scenario())
    assert [e.data["amount"] for e in events_in(log, "big")] == [500]
    assert [e.data["amount"] for e in events_in(log, "dlq")] == [600]
    assert lines[0] == "routing orders with 1 rules"


def test_route_file_names_every_missing_topic(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "unmatched: not-there-yet\nrules:\n  - name: r\n    sources: [orders, absent-source]\n"
        "    pattern: {a: [1]}\n    targets: [{topic: absent-target}, {topic: big}, {handler: 'json:dumps'}]\n"
    )
    with pytest.raises(InvalidConfig, match="missing topics: absent-source, absent-target"):
        asyncio.run(route_file(log, path))


def test_a_kept_alive_connection_that_the_server_closed_is_replaced_once() -> None:
    """A server may close an idle kept-alive connection without saying so; the next request
    on it fails before any answer, and is sent again on a fresh connection."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()
            self.close_connection = True  # without "Connection: close": the client keeps it

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = HttpClient()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        for n in range(3):
            client.post(url, order(500, n))
    finally:
        client.close()
        server.shutdown()
        server.server_close()
