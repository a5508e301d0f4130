"""Retries with backoff (on a fake clock), dead-letter topics and redrive."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig, StorageError
from inmotion.log import Message, Position, TopicConfig, partition_for_key
from inmotion.runtime import App, Context, DeadLetter, Retry
from inmotion.runtime.deadletter import entries, redrive

from .conftest import Eventually, Place

INMOTION = str(Path(sys.executable).with_name("inmotion"))


class Broken(Exception):
    pass


class Fatal(Exception):
    pass


def test_retry_policy_backoff_doubles_caps_and_jitters() -> None:
    policy = Retry(attempts=6, backoff=0.5, max_backoff=3, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3, 3]
    jittered = Retry(backoff=1.0, max_backoff=30)
    assert all(1.0 <= jittered.delay(2) <= 2.0 for _ in range(100))
    assert len({jittered.delay(3) for _ in range(20)}) > 1
    skip = Retry(attempts=3, give_up_on=(Fatal,))
    assert skip.should_retry(Broken(), 1)
    assert not skip.should_retry(Broken(), 3)
    assert not skip.should_retry(Fatal(), 1)
    assert [Retry(backoff=1, multiplier=3, jitter=False).delay(n) for n in (1, 2, 3)] == [1, 3, 9]
    bad_options: list[dict[str, Any]] = [
        {"attempts": 0},
        {"backoff": -1},
        {"backoff": "1"},
        {"multiplier": -2},
        {"max_backoff": True},
        {"give_up_on": (42,)},
    ]
    for bad in bad_options:
        with pytest.raises(InvalidConfig):
            Retry(**bad)


def test_a_poison_event_is_retried_with_backoff_then_dead_lettered_then_redriven(
    place: Place, eventually: Eventually
) -> None:
    url, topic, group = place.url, place.topic, place.group
    dlq = f"{group}.dlq"
    clock = FakeClock()
    fixed = False
    handled: list[tuple[str, int]] = []

    async def scenario() -> None:
        nonlocal fixed
        with App("billing", url, clock=clock) as app:
            app.log.create_topic(topic, TopicConfig(partitions=2))

            @app.subscribe(topic, group=group, retry=Retry(attempts=4, backoff=0.5, jitter=False))
            async def charge(order: dict[str, Any], ctx: Context) -> None:
                if order["poison"] and not fixed:
                    raise Broken(f"cannot charge {order['id']}")
                handled.append((order["id"], ctx.attempt))

            audited: list[str] = []

            @app.subscribe(topic, group=f"{group}-audit")
            async def audit(order: dict[str, Any]) -> None:
                audited.append(order["id"])

            await app.start()
            poison = await app.publish(topic, {"id": "bad", "poison": True}, key="k1", type="shop.order.placed")
            for n in range(5):
                await app.publish(topic, {"id": f"ok{n}", "poison": False}, key="k1")
            await eventually(lambda: len(handled) == 5, what="the good events")
            await app.stop()
            assert clock.sleeps == [0.5, 1.0, 2.0]
            assert app.metrics.value("inmotion_failed_total") == 4
            assert app.metrics.value("inmotion_retried_total") == 3
            assert app.metrics.value("inmotion_dead_lettered_total") == 1
            assert app.log.committed(group, topic) == {
                p: app.log.latest_offset(topic, p) for p in range(2) if app.log.latest_offset(topic, p)
            }

            [entry] = list(entries(app.log, dlq))
            assert entry.event() == poison.replace(
                data={"id": "bad", "poison": True}, datacontenttype="application/json"
            )
            assert entry.error["error_type"].endswith("test_retries.Broken")
            assert entry.error["error_message"] == "cannot charge bad"
            assert "raise Broken" in entry.error["error_traceback"]
            assert entry.error["attempts"] == "4"
            assert (entry.error["topic"], entry.error["group"]) == (topic, group)
            assert entry.error["offset"] == "0"
            assert entry.error["time"].endswith("Z")

            fixed = True
            result = await asyncio.to_thread(
                subprocess.run,
                [INMOTION, "dlq", "redrive", dlq, "--only-group", "--broker", url],
                capture_output=True,
                text=True,
                env={**os.environ, "INMOTION_BROKER": ""},
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert "redrove 1 event(s)" in result.stdout
            await app.start()
            await eventually(lambda: len(handled) == 6, what="the redriven event")
            await eventually(lambda: app.metrics.value("inmotion_skipped_total", group=f"{group}-audit") == 1)
            await app.stop()
            assert sorted(audited) == sorted(["bad"] + [f"ok{n}" for n in range(5)])  # not again
            assert redrive(app.log, dlq) == []  # each entry is redriven once

    asyncio.run(scenario())
    assert handled[-1] == ("bad", 1)
    assert [h[0] for h in handled[:5]] == [f"ok{n}" for n in range(5)]


def keys_in_different_partitions(partitions: int) -> tuple[str, str]:
    first = "key-0"
    other = next(
        k
        for k in (f"key-{n}" for n in range(1, 100))
        if partition_for_key(k.encode(), partitions) != partition_for_key(first.encode(), partitions)
    )
    return first, other


def test_a_backoff_holds_only_its_own_partition(eventually: Eventually) -> None:
    clock = FakeClock(autojump=False)
    handled: list[str] = []
    failures = 0
    slow, other = keys_in_different_partitions(2)

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:
            app.log.create_topic("orders", TopicConfig(partitions=2))

            @app.subscribe("orders", group="g", retry=Retry(attempts=3, backoff=10, jitter=False))
            async def charge(order: dict[str, str]) -> None:
                nonlocal failures
                if order["id"] == "bad" and failures < 1:
                    failures += 1
                    raise Broken("once")
                handled.append(order["id"])

            await app.start()
            await app.publish("orders", {"id": "bad"}, key=slow)
            await eventually(lambda: clock.sleeping == 1, what="the backoff to start")
            await app.publish("orders", {"id": "other"}, key=other)
            await app.publish("orders", {"id": "same-partition"}, key=slow)
            await eventually(lambda: handled == ["other"], what="the other partition")
            await asyncio.sleep(0.2)
            assert handled == ["other"]  # the failed event's partition waits, in order
            clock.advance(10)
            await eventually(lambda: handled == ["other", "bad", "same-partition"], what="the retry")
            await app.stop()

    asyncio.run(scenario())


def test_concurrency_lets_other_keys_pass_a_backoff_and_commits_only_the_finished_prefix(
    eventually: Eventually,
) -> None:
    clock = FakeClock(autojump=False)
    handled: list[str] = []

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock, commit_interval=0.01) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))
            failed: set[str] = set()

            @app.subscribe("orders", group="g", concurrency=8, retry=Retry(attempts=2, backoff=5, jitter=False))
            async def charge(order: dict[str, str]) -> None:
                if order["id"] == "bad" and "bad" not in failed:
                    failed.add("bad")
                    raise Broken("once")
                handled.append(order["id"])

            await app.start()
            await app.publish("orders", {"id": "bad"}, key="slow")
            await eventually(lambda: clock.sleeping == 1)
            for n in range(20):
                await app.publish("orders", {"id": f"k{n}"}, key=f"key-{n}")
            await app.publish("orders", {"id": "after-bad"}, key="slow")
            await eventually(lambda: len(handled) == 20, what="the other keys")
            await asyncio.sleep(0.2)
            assert "after-bad" not in handled  # same key: waits for its predecessor
            assert app.log.committed("g", "orders").get(0, 0) == 0  # offset 0 is unfinished
            clock.advance(5)
            await eventually(lambda: len(handled) == 22, what="the retried key")
            assert handled[-2:] == ["bad", "after-bad"]
            await eventually(lambda: app.log.committed("g", "orders") == {0: 22}, what="the commit")
            await app.stop()

    asyncio.run(scenario())


def test_an_event_that_does_not_fit_the_annotation_is_dead_lettered_at_once(eventually: Eventually) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:

            @app.subscribe("orders", group="g", retry=Retry(attempts=5), dead_letter="bad-orders")
            async def charge(order: dict[str, int]) -> None:
                pass

            await app.start()
            await app.publish("orders", "not a dict")
            await eventually(lambda: app.metrics.value("inmotion_dead_lettered_total") == 1)
            await app.stop()
            [entry] = list(entries(app.log, "bad-orders"))
            assert entry.error["error_type"] == "inmotion.errors.InvalidEvent"
            assert entry.error["attempts"] == "1"

    asyncio.run(scenario())
    assert clock.sleeps == []


def test_give_up_on_skips_retrying(eventually: Eventually) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:

            @app.subscribe("orders", group="g", retry=Retry(attempts=5, give_up_on=(Fatal,)))
            async def charge(order: Any) -> None:
                raise Fatal("no point")

            await app.start()
            await app.publish("orders", 1)
            await eventually(lambda: app.metrics.value("inmotion_dead_lettered_total") == 1)
            await app.stop()
            assert isinstance(next(entries(app.log, "g.dlq")), DeadLetter)

    asyncio.run(scenario())
    assert clock.sleeps == []


def test_a_payload_only_handler_that_keeps_failing_is_retried_then_dead_lettered(eventually: Eventually) -> None:
    """The path a worker takes itself for an async handler of a JSON payload alone."""
    clock = FakeClock()
    tries: list[int] = []

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:

            @app.subscribe("orders", group="g", retry=Retry(attempts=3, backoff=1, jitter=False))
            async def charge(order: dict[str, int]) -> None:
                tries.append(order["n"])
                raise Broken(f"try {len(tries)}")

            await app.start()
            await app.publish("orders", {"n": 7})
            await eventually(lambda: app.metrics.value("inmotion_dead_lettered_total") == 1)
            await app.stop()
            [entry] = list(entries(app.log, "g.dlq"))
            assert entry.error["attempts"] == "3"
            assert entry.error["error_message"] == "try 3"
            assert app.metrics.value("inmotion_failed_total") == 3
            assert app.metrics.value("inmotion_retried_total") == 2
            assert app.metrics.value("inmotion_consumed_total") == 0

    asyncio.run(scenario())
    assert tries == [7, 7, 7]
    assert clock.sleeps == [1, 2]


@pytest.mark.parametrize(
    ("headers", "attribute"),
    [
        ((("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"shop")), "id"),
        ((("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_id", b"1")), "source"),
        ((("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"shop"), ("ce_id", b"\xff")), "id"),
    ],
)
def test_an_idempotent_subscription_dead_letters_a_record_it_cannot_dedupe(
    headers: tuple[tuple[str, bytes], ...], attribute: str, eventually: Eventually
) -> None:
    """No source or id (or one that is not text): nothing to dedupe by, so the record goes
    to the dead-letter topic instead of being handled unchecked; the next event is handled."""
    handled: list[dict[str, int]] = []

    async def scenario() -> None:
        with App("billing", "memory://") as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g", idempotent=True, dead_letter="bad-orders")
            async def charge(order: dict[str, int]) -> None:
                handled.append(order)

            await app.start()
            app.log.append("orders", [Message(b'{"n": 1}', headers=(*headers, ("content-type", b"application/json")))])
            await app.publish("orders", {"n": 2})
            await eventually(lambda: handled == [{"n": 2}])
            await eventually(lambda: app.metrics.value("inmotion_dead_lettered_total") == 1)
            await app.stop()
            [entry] = list(entries(app.log, "bad-orders"))
            assert entry.error["error_type"] == "inmotion.errors.InvalidEvent"
            assert attribute in entry.error["error_message"]

    asyncio.run(scenario())


def test_a_failed_dead_letter_append_is_logged_and_the_event_tried_again(
    eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault outside the handler (here the dead-letter append) neither loses the event nor
    stops its partition: it is logged, and after a backoff the event is handled again."""
    clock = FakeClock()
    calls: list[str] = []

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g", retry=Retry(attempts=2, backoff=0.5, jitter=False))
            async def charge(order: dict[str, str]) -> None:
                calls.append(order["id"])
                if order["id"] == "bad":
                    raise Broken("cannot charge bad")

            send = app.publisher.send
            failures = [StorageError("disk full")]

            async def flaky_send(topic: str, message: Message) -> Position:
                if topic == "g.dlq" and failures:
                    raise failures.pop()
                return await send(topic, message)

            app.publisher.send = flaky_send  # type: ignore[method-assign]
            await app.start()
            await app.publish("orders", {"id": "bad"})
            await app.publish("orders", {"id": "ok"})
            await eventually(lambda: calls[-1:] == ["ok"], what="the event after the poison one")
            await app.stop()
            assert [e.event().data for e in entries(app.log, "g.dlq")] == [{"id": "bad"}]
            # the retry backoff, the fault's backoff, then the retry backoff of the second round
            assert clock.sleeps == [0.5, 0.5, 0.5]

    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        asyncio.run(scenario())
    assert calls == ["bad", "bad", "bad", "bad", "ok"]
    assert any("orders/0@0 failed: StorageError: disk full; trying it again" in r.getMessage() for r in caplog.records)


def test_without_a_dead_letter_topic_an_undecodable_event_is_logged_and_tried_again(
    eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    """`dead_letter=False`: an event that does not decode holds up its partition, tried again
    after a growing backoff and logged each time; events behind it wait, none is skipped."""
    clock = FakeClock()
    got: list[dict[str, int]] = []

    async def scenario() -> None:
        with App("billing", "memory://", clock=clock) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g", dead_letter=False, retry=Retry(backoff=0.5, jitter=False))
            async def charge(order: dict[str, int]) -> None:
                got.append(order)

            await app.start()
            json = ("content-type", b"application/json")
            app.log.append("orders", [Message(b"{not json", headers=(json,)), Message(b'{"n": 2}', headers=(json,))])
            await eventually(lambda: len(clock.sleeps) >= 3, what="three tries of the bad event")
            await app.stop()
            assert clock.sleeps[:3] == [0.5, 1.0, 2.0]
            assert app.log.committed("g", "orders") in ({}, {0: 0})

    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        asyncio.run(scenario())
    assert got == []
    assert any("orders/0@0 failed: InvalidEvent" in r.getMessage() for r in caplog.records)
