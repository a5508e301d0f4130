"""App lifecycle: start-up and shutdown hooks, background tasks and periodic jobs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig
from inmotion.log import TopicConfig
from inmotion.runtime import App
from inmotion.testing import eventually


@pytest.fixture(params=["memory", "sqlite"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'log.db'}"


def members(app: App, group: str) -> list[str]:
    return [m.member_id for m in app.coordinator.members(group, live_only=False)]


def test_hooks_run_in_order_around_the_subscribers(broker: str) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        with App("shop", broker) as app:
            app.log.create_topic("orders", TopicConfig(partitions=1))

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, Any]) -> None:
                calls.append("handled")

            @app.on_startup
            async def first() -> None:
                calls.append(f"start 1, members {members(app, 'g')}")

            @app.on_startup
            def second() -> None:  # a plain function
                calls.append("start 2")

            @app.on_shutdown
            def third() -> None:
                calls.append(f"stop 1, members {members(app, 'g')}")

            @app.on_shutdown
            async def fourth() -> None:
                calls.append("stop 2")

            stop = asyncio.Event()
            running = asyncio.create_task(app.run(until=stop))
            await eventually(lambda: "start 2" in calls)
            await app.publish("orders", {"n": 1})
            await eventually(lambda: "handled" in calls)
            assert members(app, "g")
            stop.set()
            await running

    asyncio.run(scenario())
    assert calls == ["start 1, members []", "start 2", "handled", "stop 1, members []", "stop 2"]


def test_a_failing_start_up_hook_stops_the_app_before_any_subscriber_joins(broker: str) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        with App("shop", broker) as app:

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, Any]) -> None:
                calls.append("handled")

            @app.on_startup
            def broken() -> None:
                raise ConnectionError("no database")

            app.on_startup(lambda: calls.append("later start-up hook"))
            app.on_shutdown(lambda: calls.append("shutdown hook"))

            @app.task
            async def job() -> None:
                calls.append("task")

            with pytest.raises(ConnectionError, match="no database"):
                await asyncio.wait_for(app.run(), 30)
            assert app.coordinator.groups() == []
            assert "orders" not in app.log.list_topics()  # no consumer got as far as creating it

    asyncio.run(scenario())
    assert calls == []


def test_every_shutdown_hook_runs_even_if_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def scenario() -> None:
        with App("shop", "memory://") as app:

            @app.on_shutdown
            async def first() -> None:
                raise RuntimeError("first hook broke")

            @app.on_shutdown
            def second() -> None:
                calls.append("second")
                raise ValueError("second hook broke")

            @app.on_shutdown
            def third() -> None:
                calls.append("third")

            await app.start()
            with pytest.raises(RuntimeError, match="first hook broke"):
                await app.stop()

    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        asyncio.run(scenario())
    assert calls == ["second", "third"]
    assert [r.getMessage() for r in caplog.records] == [
        "shutdown hook test_every_shutdown_hook_runs_even_if_one_fails.<locals>.scenario.<locals>.first failed",
        "shutdown hook test_every_shutdown_hook_runs_even_if_one_fails.<locals>.scenario.<locals>.second failed",
    ]


def test_a_periodic_task_runs_on_the_apps_clock_and_is_cancelled_at_shutdown() -> None:
    clock = FakeClock(autojump=False)
    calls: list[str] = []

    async def scenario() -> None:
        with App("shop", "memory://", clock=clock) as app:
            app.on_startup(lambda: calls.append("started up"))

            @app.task
            async def sweep() -> None:
                calls.append("task started")
                try:
                    while True:
                        await app.clock.sleep(60)
                        calls.append(f"swept at {app.clock.time() - 1_700_000_000:g}")
                except asyncio.CancelledError:
                    calls.append("task cancelled")
                    raise

            app.on_shutdown(lambda: calls.append("shut down"))
            stop = asyncio.Event()
            running = asyncio.create_task(app.run(until=stop))
            for _ in range(3):
                await eventually(lambda: clock.sleeping == 1, what="the task to sleep")
                clock.advance(60)
            await eventually(lambda: len(calls) == 5, what="the third sweep")
            stop.set()
            await running

    asyncio.run(scenario())
    assert calls == [
        "started up",
        "task started",
        "swept at 60",
        "swept at 120",
        "swept at 180",
        "task cancelled",
        "shut down",
    ]
    assert clock.sleeps == [60, 60, 60, 60]


def test_a_failing_task_is_logged_and_ends_run_with_its_error(broker: str, caplog: pytest.LogCaptureFixture) -> None:
    left: list[list[str]] = []

    async def scenario() -> None:
        with App("shop", broker, clock=FakeClock()) as app:

            @app.subscribe("orders", group="g")
            async def handle(order: dict[str, Any]) -> None:
                pass

            app.on_shutdown(lambda: left.append(members(app, "g")))

            @app.task
            async def done_at_once() -> None:  # a task that returns just ends
                pass

            @app.task
            async def broken() -> None:
                await eventually(lambda: bool(members(app, "g")), what="the subscriber to join")
                raise RuntimeError("the job broke")

            with pytest.raises(RuntimeError, match="the job broke"):
                await asyncio.wait_for(app.run(), 30)

    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        asyncio.run(scenario())
    assert left == [[]]
    [record] = [r for r in caplog.records if "background task" in r.getMessage()]
    assert record.getMessage().endswith("broken failed")
    assert record.exc_info is not None


def test_hooks_and_tasks_are_checked_when_registered() -> None:
    with App("shop", "memory://") as app:
        with pytest.raises(InvalidConfig, match="must be an async function"):
            app.task(lambda: None)

        async def needs_an_argument(interval: float) -> None:
            pass

        with pytest.raises(InvalidConfig, match="must take no argument, it needs interval"):
            app.task(needs_an_argument)
        with pytest.raises(InvalidConfig, match="must take no argument, it needs interval"):
            app.on_startup(needs_an_argument)
        with pytest.raises(InvalidConfig, match="a shutdown hook must be a function, got 42"):
            app.on_shutdown(42)  # type: ignore[type-var]

        async def with_defaults(interval: float = 60.0) -> None:
            pass

        assert app.task(with_defaults) is with_defaults
