"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright
against `inmotion serve`. Pages load without console errors, a group's lag shows and follows
the group, a dead letter is redriven with its button, the live tail shows an event as it is
published, and the event's page draws its causal chain. Screenshots go to the test's output
directory (`INMOTION_TEST_OUTPUT`, else the test's tmp_path)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inmotion.events import Event
from inmotion.log import connect
from inmotion.runtime import deadletter
from inmotion.runtime.handler import CAUSATION_ID, CORRELATION_ID
from tests.gateway.conftest import Server, create_token

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        reason = "no chromium: apt-get install chromium (scripts/test installs it)"
        if os.environ.get("INMOTION_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_the_dashboard_shows_the_log_and_redrives_a_dead_letter(
    server: Server, broker: str, browser: object, tmp_path: Path
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    shots = Path(os.environ.get("INMOTION_TEST_OUTPUT", tmp_path)) / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    admin = create_token(broker, "dashboard", "--admin")
    placed = Event.create("shop.order.placed", {"order": "o-1"}, source="/shop", key="o-1")
    charged = Event.create(
        "shop.payment.charged",
        {"order": "o-1"},
        source="/billing",
        extensions={CORRELATION_ID: placed.id, CAUSATION_ID: placed.id},
    )
    with connect(broker) as log:
        position, *_ = log.append_events("orders", [placed, *[Event.create("t", n, source="/s") for n in range(6)]])
        log.append_events("shipments", [charged])
        log.commit("billing", "orders", {position.partition: 1})
        failed = log.read("orders", position.partition, position.offset, 1)[0]
        deadletter.ensure_topic(log, "billing.dlq")
        log.append("billing.dlq", [deadletter.dead_letter(failed, ValueError("card declined"), 3, "billing", 0.0)])

    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    expect(page.locator("#status")).to_contain_text("401")  # no token yet: the page says what to do
    errors.clear()  # the refused request is logged by the browser as a failed load
    page.fill("#token", admin)
    page.click("#token-form button")
    expect(page.locator("main table")).to_contain_text("orders")
    expect(page.locator("main table")).to_contain_text("billing.dlq")
    page.screenshot(path=str(shots / "topics.png"))

    page.goto(server.url + "/#/groups")
    expect(page.locator("main h1")).to_have_text("Consumer groups")  # not the topics page still shown
    page.click("main table a:text-is('billing')")
    expect(page.locator("#group-lag")).to_have_text("6")
    with connect(broker) as log:
        log.commit("billing", "orders", {p: log.latest_offset("orders", p) for p in range(3)})
    expect(page.locator("#group-lag")).to_have_text("0", timeout=10_000)  # it refreshes itself
    page.screenshot(path=str(shots / "group.png"))

    page.goto(server.url + "/#/dlq")
    expect(page.locator("main")).to_contain_text("card declined")
    page.screenshot(path=str(shots / "dead-letters.png"))
    page.click("button.redrive")
    expect(page.locator("#status")).to_contain_text("redrove 1 event(s) from billing.dlq to orders")
    with connect(broker) as log:
        records = [r for p in range(3) for r in log.read("orders", p, 0, 100)]
    assert [r.event().id for r in records].count(placed.id) == 2  # the original and the redriven copy

    page.goto(server.url + "/#/tail/shipments")
    page.fill("#tail-pattern", json.dumps({"type": ["shop.shipment.created"]}))
    page.click("#tail-start")
    expect(page.locator("#status")).to_contain_text("tailing shipments")
    for kind in ("shop.shipment.ignored", "shop.shipment.created"):
        answer = httpx.post(
            f"{server.url}/topics/shipments/events",
            json={"specversion": "1.0", "id": f"{kind}-1", "source": "/ship", "type": kind},
            headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202
    expect(page.locator("#tail-events")).to_contain_text("shop.shipment.created")
    expect(page.locator("#tail-events")).not_to_contain_text("shop.shipment.ignored")
    page.screenshot(path=str(shots / "tail.png"))

    page.goto(f"{server.url}/#/trace/{charged.id}")
    expect(page.locator(".tree")).to_contain_text("shop.order.placed")
    expect(page.locator(".tree")).to_contain_text("└─ shop.payment.charged")
    page.screenshot(path=str(shots / "trace.png"))

    page.goto(server.url + "/#/rules")
    page.click("#rule-test")
    expect(page.locator("#rule-verdict")).to_contain_text("match")
    page.screenshot(path=str(shots / "rules.png"))
    assert errors == []
