"""App: publishing, subscribing, payload decoding, context, filters, metrics, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest

from inmotion import Event
from inmotion.errors import InvalidConfig, UnknownTopic
from inmotion.log import Message, TopicConfig, connect
from inmotion.runtime import App, Context, TypeIs, TypePrefix, deadletter
from inmotion.runtime.fetcher import Fetcher
from inmotion.runtime.filters import FilterSpec
from inmotion.testing import eventually


@dataclasses.dataclass
class PlacedDC:
    order: str
    total: float


class PlacedModel(pydantic.BaseModel):
    order: str
    total: float


class PlacedStruct(msgspec.Struct):
    order: str
    total: float


@pytest.fixture(params=["memory", "sqlite"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'log.db'}"


def test_handlers_get_their_payload_decoded_into_their_annotation(broker: str) -> None:
    received: dict[str, list[Any]] = {"dc": [], "model": [], "struct": [], "dict": [], "event": [], "plain": []}

    async def scenario() -> None:
        with App("shop", broker) as app:

            @app.subscribe("orders", group="dc")
            async def as_dataclass(placed: PlacedDC) -> None:
                received["dc"].append(placed)

            @app.subscribe("orders", group="model")
            async def as_model(placed: PlacedModel) -> None:
                received["model"].append(placed)

            @app.subscribe("orders", group="struct")
            def as_struct(placed: PlacedStruct) -> None:  # a plain function runs in a thread
                assert threading.current_thread() is not threading.main_thread()
                received["struct"].append(placed)

            @app.subscribe("orders", group="dict")
            async def as_dict(placed: dict[str, Any]) -> None:
                received["dict"].append(placed)

            @app.subscribe("orders", group="event")
            async def as_event(event: Event) -> None:
                received["event"].append(event)

            @app.subscribe("orders", group="plain")
            async def unannotated(placed):  # type: ignore[no-untyped-def]
                received["plain"].append(placed)

            await app.start()
            await app.publish("orders", PlacedDC("o-1", 9.5), key="o-1", type="shop.order.placed", subject="o-1")
            await eventually(lambda: all(received.values()), what="every handler")
            await app.stop()

    asyncio.run(scenario())
    assert received["dc"] == [PlacedDC("o-1", 9.5)]
    assert received["model"] == [PlacedModel(order="o-1", total=9.5)]
    assert received["struct"] == [PlacedStruct("o-1", 9.5)]
    assert received["dict"] == [{"order": "o-1", "total": 9.5}]
    assert received["plain"] == [{"order": "o-1", "total": 9.5}]
    event = received["event"][0]
    assert (event.type, event.source, event.subject, event.key) == ("shop.order.placed", "shop", "o-1", "o-1")


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_context_publish_stamps_correlation_and_causation(broker: str) -> None:
    seen: list[tuple[Event, dict[str, str], int]] = []

    async def scenario() -> None:
        with App("billing", broker) as app:

            @app.subscribe("orders", group="billing")
            async def charge(order: dict[str, str], ctx: Context) -> None:
                await ctx.publish("payments", {"order": order["id"]}, type="billing.charged")

            @app.subscribe("payments", group="audit")
            async def audit(event: Event, ctx: Context) -> None:
                seen.append((event, ctx.headers, ctx.attempt))

            await app.start()
            first = await app.publish("orders", {"id": "a"}, headers={"tenant": "acme"})
            traced = {"correlationid": "flow-7", "traceparent": TRACEPARENT, "tracestate": "vendor=1"}
            second = await app.publish("orders", {"id": "b"}, extensions=traced)
            await eventually(lambda: len(seen) == 2)
            await app.stop()
            by_order = {e.data["order"]: e for e, _, _ in seen}
            assert by_order["a"].extensions["causationid"] == first.id
            assert by_order["a"].extensions["correlationid"] == first.id
            assert "traceparent" not in by_order["a"].extensions
            assert by_order["b"].extensions["causationid"] == second.id
            assert by_order["b"].extensions["correlationid"] == "flow-7"
            # the W3C trace context goes along (the CloudEvents distributed-tracing extension)
            assert by_order["b"].extensions["traceparent"] == TRACEPARENT
            assert by_order["b"].extensions["tracestate"] == "vendor=1"

    asyncio.run(scenario())
    assert all(attempt == 1 for _, _, attempt in seen)
    assert seen[0][1]["ce_type"] == "billing.charged"


def test_publish_headers_reach_the_handler(broker: str) -> None:
    headers: list[dict[str, str]] = []

    async def scenario() -> None:
        with App("shop", broker) as app:

            @app.subscribe("orders", group="g")
            async def handle(data: Any, ctx: Context) -> None:
                headers.append(ctx.headers)

            await app.start()
            await app.publish("orders", "x", headers={"tenant": "acme"})
            await eventually(lambda: bool(headers))
            await app.stop()

    asyncio.run(scenario())
    assert headers[0]["tenant"] == "acme"


def test_a_payload_only_handler_gets_json_whatever_the_order_and_spelling_of_the_headers() -> None:
    got: list[dict[str, int]] = []

    async def scenario() -> None:
        with App("shop", "memory://") as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, int]) -> None:
                got.append(order)

            await app.start()
            await app.publish("orders", {"n": 1})  # content-type is the last header
            await app.publish("orders", {"n": 2}, headers={"tenant": "acme"})  # a header after it
            ce = (("ce_specversion", b"1.0"), ("ce_id", b"x3"), ("ce_source", b"java"), ("ce_type", b"t"))
            json = b"application/json"
            app.log.append(
                "orders",
                [
                    Message(b'{"n": 3}', headers=(("content-type", b"application/json"), *ce)),  # first
                    Message(b'{"n": 4}', headers=(*ce, ("Content-Type", b"application/json"))),
                    # the redrive mark counts only in last place (where redrive puts it)
                    Message(b'{"n": 5}', headers=(*ce, (deadletter.FOR_GROUP, b"other"), ("content-type", json))),
                ],
            )
            await eventually(lambda: len(got) == 5)
            await app.stop()

    asyncio.run(scenario())
    assert got == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}]


def test_filters_by_exact_type_prefix_and_any_matcher() -> None:
    got: dict[str, list[str]] = {"exact": [], "prefix": [], "star": [], "matcher": [], "function": []}

    class SubjectIs:
        """Stands in for the router's pattern: anything with matches(event)."""

        def __init__(self, subject: str) -> None:
            self.subject = subject

        def matches(self, event: Event) -> bool:
            return event.subject == self.subject

    async def scenario() -> None:
        with App("shop", "memory://") as app:
            specs: list[tuple[str, FilterSpec]] = [
                ("exact", TypeIs("shop.order.placed")),
                ("prefix", TypePrefix("shop.order.")),
                ("star", "shop.*"),
                ("matcher", SubjectIs("vip")),
                ("function", lambda e: e.type.endswith("shipped")),
            ]
            for name, spec in specs:

                async def handle(event: Event, name: str = name) -> None:
                    got[name].append(event.type)

                app.subscribe("events", group=name, filter=spec)(handle)
            await app.start()
            for kind, subject in [("shop.order.placed", "vip"), ("shop.order.shipped", None), ("billing.paid", None)]:
                await app.publish("events", {}, type=kind, subject=subject)
            await eventually(lambda: app.metrics.value("inmotion_skipped_total") + sum(map(len, got.values())) == 15)
            await app.stop()

    asyncio.run(scenario())
    assert got == {
        "exact": ["shop.order.placed"],
        "prefix": ["shop.order.placed", "shop.order.shipped"],
        "star": ["shop.order.placed", "shop.order.shipped"],
        "matcher": ["shop.order.placed"],
        "function": ["shop.order.shipped"],
    }


@pytest.mark.parametrize("linger", [0.0, 0.005])
def test_concurrent_publishes_are_batched_into_few_appends(tmp_path: Path, linger: float) -> None:
    appends: list[int] = []

    async def scenario() -> None:
        with App("shop", f"sqlite:///{tmp_path / 'log.db'}", linger=linger) as app:
            app.log.create_topic("orders", TopicConfig(partitions=4))
            original, original_now = app.log.append, app.log.append_now

            def counting(topic: str, messages: Any) -> Any:
                appends.append(len(messages))
                return original(topic, messages)

            def counting_now(topic: str, messages: Any, *, records: bool = True) -> Any:
                done = original_now(topic, messages, records=records)
                if done is not None:  # written on the event loop
                    appends.append(len(messages))
                return done

            app.log.append = counting  # type: ignore[method-assign]
            app.log.append_now = counting_now  # type: ignore[method-assign]
            events = await asyncio.gather(*(app.publish("orders", {"n": n}, key=str(n)) for n in range(2000)))
            assert len({e.id for e in events}) == 2000
            total = sum(p.latest for p in app.log.describe_topic("orders").partitions)
            assert total == 2000

    asyncio.run(scenario())
    assert sum(appends) == 2000
    assert len(appends) <= 10


def test_publish_sync_works_without_an_event_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with App("script", url) as app:
        event = app.publish_sync("orders", {"n": 1}, key="k", type="shop.order.placed")
    with connect(url) as log:
        records = [r for p in range(log.partition_count("orders")) for r in log.read("orders", p, 0)]
    assert [r.event().id for r in records] == [event.id]
    assert records[0].event().type == "shop.order.placed"


def test_topics_are_created_on_first_use_unless_disabled() -> None:
    with App("a", "memory://", topic_config=TopicConfig(partitions=3)) as app:
        app.publish_sync("fresh", 1)
        assert app.log.partition_count("fresh") == 3
    with App("b", "memory://", topic_config=None) as app, pytest.raises(UnknownTopic):
        app.publish_sync("fresh", 1)


def test_metrics_are_readable_in_prometheus_text() -> None:
    async def scenario() -> str:
        with App("shop", "memory://") as app:

            @app.subscribe("orders", group="g")
            async def handle(data: Any) -> None:
                pass

            await app.start()
            for n in range(3):
                await app.publish("orders", n)
            await eventually(lambda: app.metrics.value("inmotion_consumed_total") == 3)
            await app.stop()
            return app.prometheus()

    text = asyncio.run(scenario())
    assert 'inmotion_published_total{topic="orders"} 3' in text
    assert 'inmotion_consumed_total{group="g",topic="orders"} 3' in text
    assert "# TYPE inmotion_lag gauge" in text
    assert "# TYPE inmotion_dead_lettered_total counter" in text


def test_bad_subscriptions_are_refused_with_a_clear_error() -> None:
    with App("shop", "memory://") as app:
        with pytest.raises(InvalidConfig, match="first parameter"):
            app.subscribe("orders")(lambda: None)
        with pytest.raises(InvalidConfig, match="concurrency"):
            app.subscribe("orders", concurrency=0)(lambda data: None)
        with pytest.raises(InvalidConfig, match="invalid topic name"):
            app.subscribe("bad topic!")(lambda data: None)
        with pytest.raises(InvalidConfig, match="filter"):
            app.subscribe("orders", filter=42)(lambda data: None)  # type: ignore[arg-type]

        def handler(data: Any, ctx: Context) -> None:
            pass

        app.subscribe("orders", group="g")(handler)
        with pytest.raises(InvalidConfig, match="already has a subscription"):
            app.subscribe("other", group="g")(handler)

        def two_payloads(data: Any, other: int) -> None:
            pass

        with pytest.raises(InvalidConfig, match="neither the payload nor a Context"):
            app.subscribe("orders")(two_payloads)

    async def scenario() -> None:
        with App("x", "memory://") as app:
            app.subscribe("orders", transaction=True)(lambda data: None)
            await app.run(asyncio.Event())

    with pytest.raises(
        InvalidConfig, match="transaction=True is not supported by MemoryCoordinator: use the sqlite backend"
    ):
        asyncio.run(scenario())
    with pytest.raises(InvalidConfig, match="unknown broker URL"):
        App("x", "nope://")
    with pytest.raises(InvalidConfig, match="linger"):
        App("x", "memory://", linger=-1)


def test_the_filter_runs_before_the_payload_is_decoded() -> None:
    got: list[PlacedDC] = []

    async def scenario() -> None:
        with App("shop", "memory://") as app:

            @app.subscribe("orders", group="g", filter="shop.order.placed")
            async def handle(placed: PlacedDC) -> None:
                got.append(placed)

            await app.start()
            await app.publish("orders", {"reason": "no stock"}, type="shop.order.rejected")
            await app.publish("orders", PlacedDC("o-1", 1.0), type="shop.order.placed")
            await eventually(lambda: len(got) == 1)
            await app.stop()
            assert app.metrics.value("inmotion_skipped_total") == 1
            assert app.metrics.value("inmotion_dead_lettered_total") == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("as_dict", [False, True], ids=["Pattern", "dict"])
def test_the_routers_event_patterns_plug_in_as_filters(as_dict: bool) -> None:
    from inmotion.routing import Pattern

    big: list[float] = []
    pattern = {"type": ["shop.order.placed"], "data": {"total": [{"numeric": [">", 100]}]}}

    async def scenario() -> None:
        with App("shop", "memory://") as app:

            @app.subscribe(
                "orders",
                group="big-orders",
                filter=pattern if as_dict else Pattern(pattern),
            )
            async def handle(placed: PlacedDC) -> None:
                big.append(placed.total)

            await app.start()
            for total in (50.0, 150.0, 99.0, 101.0):
                await app.publish("orders", PlacedDC("o", total), type="shop.order.placed")
            await app.publish("orders", PlacedDC("o", 500.0), type="shop.order.cancelled")
            await eventually(lambda: app.metrics.value("inmotion_skipped_total") == 3)
            await eventually(lambda: len(big) == 2)
            await app.stop()

    asyncio.run(scenario())
    assert sorted(big) == [101.0, 150.0]


def test_a_fault_in_the_fetch_loop_ends_run_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetch loop handles the log's errors itself; anything else is a fault that `run`
    (and so `inmotion run`) ends with, instead of a member that holds partitions it no longer
    reads."""

    async def broken_read(self: Fetcher, positions: object, announced: bool) -> None:
        raise RuntimeError("a bug in the fetch loop")

    monkeypatch.setattr(Fetcher, "read", broken_read)

    async def scenario() -> None:
        with App("shop", "memory://", session_timeout=1.0) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, int]) -> None:
                pass

            with pytest.raises(RuntimeError, match="a bug in the fetch loop"):
                await asyncio.wait_for(app.run(), 30)

    asyncio.run(scenario())


def test_a_topic_deleted_and_created_again_is_consumed_from_its_start(broker: str) -> None:
    """The running consumer's workers held positions in the old topic: they start over on the
    new one (from its committed offsets, gone with the old topic), so no new event is skipped;
    the error is logged once, not at every fetch."""
    seen: list[int] = []

    async def scenario() -> None:
        with App("shop", broker, session_timeout=1.0) as app:
            app.log.create_topic("orders", TopicConfig(partitions=2))

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, int]) -> None:
                seen.append(order["n"])

            await app.start()
            for n in range(30):
                await app.publish("orders", {"n": n}, key=str(n))
            await eventually(lambda: len(seen) == 30, what="the old topic's events")
            app.log.delete_topic("orders")
            app.log.create_topic("orders", TopicConfig(partitions=2))
            for n in range(100, 150):
                await app.publish("orders", {"n": n}, key=str(n))
            await eventually(lambda: set(range(100, 150)) <= set(seen), what="the new topic's events")
            await app.stop()
            assert app.log.committed("g", "orders") == {
                p.partition: p.latest for p in app.log.describe_topic("orders").partitions
            }

    asyncio.run(scenario())
    assert sorted(seen[:30]) == list(range(30))


def test_a_transactional_group_starts_a_topic_created_again_from_its_start(tmp_path: Path) -> None:
    """Its positions went with the deleted topic (they are the group's committed offsets)."""
    handled: list[int] = []
    broker = f"sqlite:///{tmp_path / 'log.db'}"

    async def run_until(count: int) -> None:
        with App("ledger", broker) as app:
            done = asyncio.Event()

            @app.subscribe("payments", group="ledger", idempotent=True, transaction=True)
            async def book(payment: dict[str, int], ctx: Context) -> None:
                handled.append(payment["n"])
                if len(handled) == count:
                    done.set()

            await app.run(until=done)

    with connect(broker) as log:
        log.create_topic("payments", TopicConfig(partitions=1))
        log.append_events("payments", [Event.create("pay", {"n": n}, source="/t") for n in range(20)])
    asyncio.run(run_until(20))
    with connect(broker) as log:
        log.delete_topic("payments")
        log.create_topic("payments", TopicConfig(partitions=1))
        log.append_events("payments", [Event.create("pay", {"n": n}, source="/t") for n in range(100, 110)])
    asyncio.run(run_until(30))
    assert handled[20:] == list(range(100, 110))
