"""Choreography and `inmotion trace`: services that react to each other's events, with no
coordinator, leave a trail of correlation and causation ids that the command follows across
topics. The flow runs in an App on a real SQLite file; the command runs as a user runs it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from inmotion import Event
from inmotion.runtime import App, Context
from inmotion.testing import eventually
from tests.test_cli import run


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/trace.db"


def shop(broker: str) -> tuple[Event, Event]:
    """An order flows from service to service: placed -> stock reserved and a confirmation
    e-mail -> payment charged -> shipment created. Two orders, two flows."""
    shipped: list[str] = []

    async def scenario() -> tuple[Event, Event]:
        with App("shop", broker) as app:

            @app.subscribe("orders", group="inventory")
            async def reserve(order: dict[str, Any], ctx: Context) -> None:
                await ctx.publish("inventory", {"order": order["id"]}, type="shop.stock.reserved")

            @app.subscribe("orders", group="mailer")
            async def confirm(order: dict[str, Any], ctx: Context) -> None:
                await ctx.publish("emails", {"order": order["id"]}, type="shop.email.sent")

            @app.subscribe("inventory", group="billing")
            async def charge(reserved: dict[str, Any], ctx: Context) -> None:
                await ctx.publish("payments", reserved, type="shop.payment.charged")

            @app.subscribe("payments", group="shipping")
            async def ship(payment: dict[str, Any], ctx: Context) -> None:
                await ctx.publish("shipments", payment, type="shop.shipment.created")
                shipped.append(payment["order"])

            await app.start()
            first = await app.publish("orders", {"id": "o-1"}, key="o-1", type="shop.order.placed")
            second = await app.publish("orders", {"id": "o-2"}, key="o-2", type="shop.order.placed")
            await eventually(lambda: sorted(shipped) == ["o-1", "o-2"])
            await app.stop()
            return first, second

    return asyncio.run(scenario())


def traced(broker: str, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run(broker, "trace", *args, "--json").stdout.splitlines()]


def test_trace_prints_a_flows_events_each_under_its_cause(broker: str) -> None:
    first, second = shop(broker)
    events = traced(broker, first.id)
    assert [(e["type"], e["depth"]) for e in events] == [
        ("shop.order.placed", 0),
        ("shop.stock.reserved", 1),
        ("shop.payment.charged", 2),
        ("shop.shipment.created", 3),
        ("shop.email.sent", 1),
    ] or [(e["type"], e["depth"]) for e in events] == [
        ("shop.order.placed", 0),
        ("shop.email.sent", 1),
        ("shop.stock.reserved", 1),
        ("shop.payment.charged", 2),
        ("shop.shipment.created", 3),
    ]
    by_type = {e["type"]: e for e in events}
    assert by_type["shop.order.placed"]["id"] == first.id
    assert by_type["shop.order.placed"]["parent"] is None
    assert by_type["shop.payment.charged"]["parent"] == by_type["shop.stock.reserved"]["id"]
    assert by_type["shop.shipment.created"]["topic"] == "shipments"
    assert {e["data"]["order"] for e in events if e["type"] != "shop.order.placed"} == {"o-1"}
    assert {e.get("correlationid") for e in events[1:]} == {first.id}

    # any event of the flow names it, or the end of its id; the other order's flow is its own
    assert traced(broker, by_type["shop.payment.charged"]["id"]) == events
    assert traced(broker, by_type["shop.payment.charged"]["id"][-8:]) == events
    assert {e["data"].get("order", e["data"].get("id")) for e in traced(broker, second.id)} == {"o-2"}

    human = run(broker, "trace", first.id).stdout.splitlines()
    assert human[0] == f"correlation {first.id}: 5 events in 5 topics"
    assert human[1].startswith("shop.order.placed  orders ")
    drawn = [line.split(" id ")[0].rsplit("  ", 2)[0] for line in human[1:]]
    email_first = [
        "shop.order.placed",
        "├─ shop.email.sent",
        "└─ shop.stock.reserved",
        "   └─ shop.payment.charged",
        "      └─ shop.shipment.created",
    ]
    stock_first = [
        "shop.order.placed",
        "├─ shop.stock.reserved",
        "│  └─ shop.payment.charged",
        "│     └─ shop.shipment.created",
        "└─ shop.email.sent",
    ]
    assert drawn == (email_first if events[1]["type"] == "shop.email.sent" else stock_first)


def test_trace_within_some_topics_shows_an_event_whose_cause_is_elsewhere_as_a_root(broker: str) -> None:
    first, _ = shop(broker)
    events = traced(broker, first.id, "--topic", "orders", "--topic", "payments")
    assert [(e["type"], e["depth"], e["parent"]) for e in events] == [
        ("shop.order.placed", 0, None),
        ("shop.payment.charged", 0, None),
    ]
    human = run(broker, "trace", first.id, "--topic", "payments").stdout
    assert f"(caused by {events[1]['causationid']}, not found)" in human


def test_trace_of_an_unknown_id_or_topic_fails_clearly(broker: str) -> None:
    shop(broker)
    missing = run(broker, "trace", "no-such-id", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no event with id or correlation id 'no-such-id' in 9 topics (10 events)"
    assert missing.stdout == ""
    unknown = run(broker, "trace", "x", "--topic", "nope", check=False)
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: no such topic: nope")
    lines = "".join(
        # no generated id (hex digits) ends in "x77"; one in 256 ends in "77" (CI met one)
        json.dumps({"specversion": "1.0", "id": f"{n}-x77", "source": "/t", "type": "t.x", "data": n}) + "\n"
        for n in ("a", "b")
    )
    run(broker, "publish", "orders", "-", stdin=lines)
    ambiguous = run(broker, "trace", "x77", check=False)
    assert (ambiguous.returncode, ambiguous.stderr.strip()) == (
        1,
        "error: 'x77' is the end of 2 event ids (a-x77, b-x77, ...): give more of it",
    )
    assert run(broker, "trace", "b-x77").stdout.startswith("correlation b-x77: 1 event in 1 topic")
    empty = run(broker, "trace", "", check=False)
    assert (empty.returncode, empty.stderr.strip()) == (
        2,
        "error: give an event id, the end of one, or a correlation id",
    )
