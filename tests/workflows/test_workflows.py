"""Workflows in one process: steps, compensation, timers, waits, requests, cancel, retry,
changed code, and bad input, on the memory and SQLite backends with a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inmotion import App, Context, Event, Retry
from inmotion.clock import FakeClock
from inmotion.errors import InvalidConfig
from inmotion.testing import eventually
from inmotion.workflows import (
    UnknownWorkflow,
    Workflow,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowTimeout,
)
from inmotion.workflows.engine import CANCEL, RETRY


@dataclasses.dataclass
class Order:
    id: str
    total: int


@dataclasses.dataclass
class Reservation:
    order: str
    items: int


@dataclasses.dataclass
class Charged:
    order: str
    amount: int


@pytest.fixture(params=["memory", "sqlite"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'log.db'}"


def new_app(broker: str, clock: FakeClock | None = None) -> App:
    app = App("shop", broker, clock=clock or FakeClock(), session_timeout=1.0)
    app.workflows.retry = Retry(attempts=2, backoff=0)
    return app


def status(app: App, key: str) -> str | None:
    found = app.workflows.recorder.load(key)
    return None if found is None else str(found[0].status)


def kinds(app: App, key: str) -> list[str]:
    found = app.workflows.recorder.load(key)
    return [] if found is None else [entry.kind for entry in found[1]]


@contextlib.asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(until=stop))
    try:
        await eventually(lambda: bool(app.workflows.shards) or task.done(), what="the app to own its shards")
        yield app
    finally:
        stop.set()
        await task


class Shop:
    """Steps of an order saga that count what they did."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ship_fails = False

    async def reserve(self, order: Order) -> Reservation:
        self.calls.append(f"reserve {order.id}")
        return Reservation(order.id, 2)

    async def release(self, reservation: Reservation) -> None:
        self.calls.append(f"release {reservation.order}x{reservation.items}")

    async def charge(self, order: Order) -> Charged:
        self.calls.append(f"charge {order.id}")
        return Charged(order.id, order.total)

    async def refund(self, charged: Charged) -> None:
        self.calls.append(f"refund {charged.order} {charged.amount}")

    def ship(self, order: Order) -> str:  # a plain function: runs in a thread
        self.calls.append(f"ship {order.id}")
        if self.ship_fails:
            raise RuntimeError("no courier")
        return f"parcel-{order.id}"


def define_saga(app: App, shop: Shop) -> None:
    @app.workflow("order")
    async def place_order(wf: Workflow, order: Order) -> dict[str, Any]:
        reservation = await wf.step(shop.reserve, order, compensate=shop.release)
        charged = await wf.step(shop.charge, order, compensate=shop.refund)
        parcel = await wf.step(shop.ship, order)
        return {"reserved": reservation.items, "charged": charged.amount, "parcel": parcel}


def test_a_saga_completes_and_its_result_comes_back_typed(broker: str) -> None:
    shop = Shop()

    async def scenario() -> None:
        with new_app(broker) as app:
            define_saga(app, shop)
            async with running(app):
                handle = await app.start_workflow("order", Order("o1", 30), id="o1")
                assert await handle.result(timeout=10) == {"reserved": 2, "charged": 30, "parcel": "parcel-o1"}
                assert status(app, "order/o1") == "completed"
                assert kinds(app, "order/o1") == ["started", "step", "step", "step", "completed"]

    asyncio.run(scenario())
    assert shop.calls == ["reserve o1", "charge o1", "ship o1"]


def test_a_failing_step_undoes_the_completed_ones_newest_first(broker: str) -> None:
    shop = Shop()
    shop.ship_fails = True

    async def scenario() -> None:
        with new_app(broker) as app:
            define_saga(app, shop)
            async with running(app):
                handle = await app.start_workflow("order", Order("o2", 40), id="o2")
                with pytest.raises(WorkflowFailed) as failed:
                    await handle.result(timeout=10)
                assert failed.value.status == "compensated"
                assert "step 'ship' (position 3) failed: RuntimeError: no courier" in str(failed.value.error)
                assert kinds(app, "order/o2")[-4:] == ["compensating", "undone", "undone", "compensated"]

    asyncio.run(scenario())
    # two attempts at shipping (Retry(attempts=2)), then the undos with the steps' results
    assert shop.calls == ["reserve o2", "charge o2", "ship o2", "ship o2", "refund o2 40", "release o2x2"]


def test_an_undo_that_keeps_failing_ends_compensation_failed_and_retry_finishes_it(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    shop = Shop()
    shop.ship_fails = True
    refunds: list[int] = []

    async def refund(charged: Charged) -> None:
        refunds.append(charged.amount)
        if len(refunds) <= 2:
            raise ConnectionError("bank down")

    shop.refund = refund  # type: ignore[method-assign]

    async def scenario() -> None:
        with new_app(broker) as app:
            define_saga(app, shop)
            async with running(app):
                handle = await app.start_workflow("order", Order("o3", 50), id="o3")
                with pytest.raises(WorkflowFailed) as failed:
                    await handle.result(timeout=10)
                assert failed.value.status == "compensation_failed"
                assert "undo 2 (charge) failed: ConnectionError: bank down" in str(failed.value)
                await app.publish(app.workflows.inbox, {"key": "order/o3"}, type=RETRY, key="o3")
                await eventually(lambda: status(app, "order/o3") == "compensated")

    asyncio.run(scenario())
    assert refunds == [50, 50, 50]
    # the release ran once, after the refund finally went through; no step ran again
    assert shop.calls == ["reserve o3", "charge o3", "ship o3", "ship o3", "release o3x2"]


def test_nothing_to_undo_ends_failed_and_retry_resumes_at_the_failed_step(broker: str) -> None:
    attempts: list[str] = []
    broken = True

    async def prepare(order: Order) -> int:
        attempts.append("prepare")
        return 1

    async def deliver(order: Order) -> str:
        attempts.append("deliver")
        if broken:
            raise ValueError("bad address")
        return "delivered"

    async def scenario() -> None:
        nonlocal broken
        with new_app(broker) as app:

            @app.workflow("delivery")
            async def delivery(wf: Workflow, order: Order) -> str:
                await wf.step(prepare, order)
                return str(await wf.step(deliver, order))

            async with running(app):
                handle = await app.start_workflow("delivery", Order("d1", 1), id="d1")
                with pytest.raises(WorkflowFailed, match="ended failed: StepFailed: step 'deliver'"):
                    await handle.result(timeout=10)
                broken = False
                await app.publish(app.workflows.inbox, {"key": "delivery/d1"}, type=RETRY, key="d1")
                await eventually(lambda: status(app, "delivery/d1") == "completed")
                assert await handle.result(timeout=10) == "delivered"

    asyncio.run(scenario())
    assert attempts == ["prepare", "deliver", "deliver", "deliver"]


def test_a_durable_sleep_fires_on_the_clock_and_survives_a_restart(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock(autojump=False)
    steps: list[str] = []

    async def remind(order: Order) -> None:
        steps.append(f"remind {order.id}")

    def define(app: App) -> None:
        @app.workflow("reminder")
        async def reminder(wf: Workflow, order: Order) -> str:
            await wf.step(remind, order, name="first")
            await wf.sleep(3 * 24 * 3600)
            await wf.step(remind, order, name="second")
            return wf.now().isoformat()

    async def first_run() -> None:
        with new_app(broker, clock) as app:
            define(app)
            async with running(app):
                await app.start_workflow("reminder", Order("r1", 1), id="r1")
                await eventually(lambda: status(app, "reminder/r1") == "sleeping")
                clock.advance(24 * 3600)  # one day of three
                await asyncio.sleep(0.05)
                assert status(app, "reminder/r1") == "sleeping"

    async def second_run() -> None:
        with new_app(broker, clock) as app:
            define(app)
            async with running(app):
                await eventually(lambda: clock.sleeping > 0, what="the timer to be armed again")
                clock.advance(2 * 24 * 3600)
                handle = app.workflows.handle("reminder/r1")
                assert await handle.result(timeout=10) == "2023-11-17T22:13:20+00:00"

    asyncio.run(first_run())
    asyncio.run(second_run())
    assert steps == ["remind r1", "remind r1"]


def test_request_gets_the_reply_of_a_service_and_a_timeout_compensates(broker: str) -> None:
    clock = FakeClock(autojump=False)
    shop = Shop()
    answering = True

    async def scenario() -> None:
        nonlocal answering
        with new_app(broker, clock) as app:

            @app.subscribe("payments", group="payments")
            async def payments(order: Order, ctx: Context) -> None:
                if answering or order.id == "late":
                    await ctx.reply(Charged(order.id, order.total), type="payment.charged")

            @app.workflow("paid")
            async def paid(wf: Workflow, order: Order) -> int:
                await wf.step(shop.reserve, order, compensate=shop.release)
                charged = await wf.request("payments", order, reply=Charged, type="payment.charge", timeout=5)
                return int(charged.amount)

            async with running(app):
                assert await (await app.start_workflow("paid", Order("p1", 70), id="p1")).result(10) == 70
                answering = False
                slow = await app.start_workflow("paid", Order("p2", 80), id="p2")
                await eventually(lambda: status(app, "paid/p2") == "waiting")
                clock.advance(5)
                with pytest.raises(WorkflowFailed, match="compensated: WorkflowTimeout: workflow paid/p2 waited 5s"):
                    await slow.result(10)

    asyncio.run(scenario())
    assert shop.calls == ["reserve p1", "reserve p2", "release p2x2"]


def test_a_reply_after_the_timeout_is_recorded_and_shown(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock(autojump=False)

    commands: list[Event] = []

    async def scenario() -> None:
        with new_app(broker, clock) as app:

            @app.subscribe("payments", group="payments")
            async def payments(command: Event) -> None:
                commands.append(command)

            @app.workflow("patient")
            async def patient(wf: Workflow, order: Order) -> str:
                try:
                    await wf.request("payments", order, timeout=1)
                except WorkflowTimeout:
                    return "gave up"
                return "paid"

            async with running(app):
                handle = await app.start_workflow("patient", Order("l1", 1), id="l1")
                await eventually(lambda: status(app, "patient/l1") == "waiting")
                clock.advance(1)
                assert await handle.result(10) == "gave up"
                await eventually(lambda: bool(commands))
                command = commands[0]
                # the payment service answers late, as a service that knows nothing of workflows
                late = Event.create(
                    "payment.charged",
                    {"ok": True},
                    source="payments",
                    correlationid=command.extensions["correlationid"],
                    causationid=command.id,
                )
                await app.publish(str(command.extensions["replyto"]), late, key="l1")
                await eventually(lambda: kinds(app, "patient/l1")[-1] == "received")
                assert status(app, "patient/l1") == "completed"

    asyncio.run(scenario())


def test_wait_for_takes_an_event_that_arrived_before_the_wait(broker: str) -> None:
    clock = FakeClock(autojump=False)

    async def scenario() -> None:
        with new_app(broker, clock) as app:

            @app.workflow("loan", listen="approvals")
            async def loan(wf: Workflow, application: dict[str, Any]) -> str:
                await wf.sleep(60)
                decision = await wf.wait_for("approvals", type="loan.decided", timeout=3600)
                return str(decision.data["verdict"])

            async with running(app):
                handle = await app.start_workflow("loan", {"amount": 5}, id="a1")
                await eventually(lambda: status(app, "loan/a1") == "sleeping")
                await app.publish(
                    "approvals", {"verdict": "other"}, type="loan.other", extensions={"correlationid": "a1"}
                )
                await app.publish(
                    "approvals", {"verdict": "yes"}, type="loan.decided", extensions={"correlationid": "a1"}
                )
                await eventually(lambda: kinds(app, "loan/a1").count("received") == 2)
                clock.advance(60)
                assert await handle.result(10) == "yes"

    asyncio.run(scenario())


def test_waiting_on_a_topic_the_workflow_does_not_listen_to_is_a_clear_error() -> None:
    async def scenario() -> None:
        with new_app("memory://") as app:

            @app.workflow("deaf")
            async def deaf(wf: Workflow, _: None) -> None:
                await wf.wait_for("approvals")

            async with running(app):
                handle = await app.start_workflow("deaf", None, id="x")
                with pytest.raises(WorkflowFailed, match=r"listen=\['approvals'\]"):
                    await handle.result(10)

    asyncio.run(scenario())


def test_an_event_starts_one_instance_however_often_it_is_delivered(broker: str) -> None:
    shop = Shop()
    lifecycle: list[Event] = []

    async def scenario() -> None:
        with new_app(broker) as app:

            @app.subscribe("shop.workflows", group="watcher")
            async def watch(event: Event) -> None:
                lifecycle.append(event)

            @app.workflow("order", on="orders", filter="order.placed")
            async def place_order(wf: Workflow, order: Order) -> str:
                await wf.step(shop.reserve, order)
                notice = await wf.publish("notices", {"order": order.id})
                assert notice.extensions["traceparent"] == placed.extensions["traceparent"]  # one trace
                return wf.correlation

            async with running(app):
                trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
                placed = app.build_event("orders", Order("e1", 5), type="order.placed", extensions=trace)
                await app.publish("orders", placed)
                await app.publish("orders", placed)  # a producer's retry: the same event again
                await app.publish("orders", Order("e2", 5), type="order.cancelled")  # filtered out
                await eventually(lambda: app.workflows.recorder.load(f"order/{placed.id}") is not None)
                assert await app.workflows.handle(f"order/{placed.id}").result(10) == placed.id
                assert [i.key for i in app.workflows.recorder.instances()] == [f"order/{placed.id}"]
                await eventually(lambda: any(e.type == "inmotion.workflow.completed" for e in lifecycle))
                # its lifecycle events belong to the same flow and the same trace
                for event in lifecycle:
                    assert event.extensions["causationid"] == placed.id
                    assert event.extensions["traceparent"] == placed.extensions["traceparent"]

    asyncio.run(scenario())
    assert shop.calls == ["reserve e1"]


def test_the_same_id_is_one_instance_and_another_input_under_it_is_refused(broker: str) -> None:
    shop = Shop()

    async def scenario() -> None:
        with new_app(broker) as app:
            define_saga(app, shop)
            async with running(app):
                first = await app.start_workflow("order", Order("s1", 5), id="s1")
                again = await app.start_workflow("order", Order("s1", 5), id="s1")
                assert first.key == again.key == "order/s1"
                await first.result(10)
                with pytest.raises(WorkflowError, match="order/s1 was started before with another input"):
                    await app.start_workflow("order", Order("s1", 6), id="s1")
                with pytest.raises(UnknownWorkflow, match="no workflow 'nope' in app 'shop' \\(defined: order\\)"):
                    await app.start_workflow("nope", None)
                with pytest.raises(InvalidConfig, match="cannot be recorded"):
                    await app.start_workflow("order", object(), id="s2")

    asyncio.run(scenario())
    assert shop.calls == ["reserve s1", "charge s1", "ship s1"]


def test_a_step_result_that_cannot_be_recorded_fails_the_step_clearly() -> None:
    async def opaque() -> object:
        return object()

    async def scenario() -> None:
        with new_app("memory://") as app:

            @app.workflow("opaque")
            async def run_opaque(wf: Workflow, _: None) -> None:
                await wf.step(opaque)

            async with running(app):
                with pytest.raises(WorkflowFailed, match="step 'opaque' \\(position 1\\) of opaque/o returned what"):
                    await (await app.start_workflow("opaque", None, id="o")).result(10)

    asyncio.run(scenario())


def test_changed_code_fails_the_instance_naming_the_position(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock(autojump=False)
    shop = Shop()

    async def scenario(version: int) -> None:
        with new_app(broker, clock) as app:

            @app.workflow("order")
            async def place_order(wf: Workflow, order: Order) -> None:
                await wf.step(shop.reserve if version == 1 else shop.charge, order)
                await wf.sleep(10)

            async with running(app):
                if version == 1:
                    await app.start_workflow("order", Order("c1", 5), id="c1")
                    await eventually(lambda: status(app, "order/c1") == "sleeping")
                else:
                    with pytest.raises(WorkflowFailed) as failed:
                        await app.workflows.handle("order/c1").result(10)
                    assert failed.value.status == "failed"
                    assert "at position 1 it recorded step 'reserve', the code now runs step 'charge'" in str(
                        failed.value
                    )

    asyncio.run(scenario(1))
    asyncio.run(scenario(2))
    assert shop.calls == ["reserve c1"]  # the old undo-less step was not run again, nor the new one


def test_cancel_stops_a_waiting_instance_and_compensates(broker: str) -> None:
    clock = FakeClock(autojump=False)
    shop = Shop()

    async def scenario() -> None:
        with new_app(broker, clock) as app:

            @app.workflow("approval", listen="approvals")
            async def approval(wf: Workflow, order: Order) -> None:
                await wf.step(shop.reserve, order, compensate=shop.release)
                try:
                    await wf.wait_for("approvals", timeout=3600)
                except WorkflowCancelled:
                    shop.calls.append("saw the cancel")
                    raise

            async with running(app):
                handle = await app.start_workflow("approval", Order("k1", 5), id="k1")
                await eventually(lambda: status(app, "approval/k1") == "waiting")
                await app.publish(app.workflows.inbox, {"key": "approval/k1"}, type=CANCEL, key="k1")
                with pytest.raises(WorkflowFailed, match="compensated: WorkflowCancelled"):
                    await handle.result(10)

    asyncio.run(scenario())
    assert shop.calls == ["reserve k1", "saw the cancel", "release k1x2"]


def test_lifecycle_events_are_published_for_other_services(broker: str) -> None:
    shop = Shop()
    seen: list[str] = []

    async def scenario() -> None:
        with new_app(broker) as app:
            define_saga(app, shop)

            @app.subscribe("shop.workflows", group="watcher")
            async def watch(event: Event) -> None:
                seen.append(event.type.removeprefix("inmotion.workflow."))

            async with running(app):
                await (await app.start_workflow("order", Order("w1", 5), id="w1")).result(10)
                await eventually(lambda: "completed" in seen)

    asyncio.run(scenario())
    assert seen == ["started", "step.completed", "step.completed", "step.completed", "completed"]


def test_steps_must_be_awaited_one_at_a_time() -> None:
    async def nap() -> None:
        await asyncio.sleep(0.01)

    async def scenario() -> None:
        with new_app("memory://") as app:

            @app.workflow("greedy")
            async def greedy(wf: Workflow, _: None) -> None:
                await asyncio.gather(wf.step(nap), wf.step(nap))

            async with running(app):
                with pytest.raises(WorkflowFailed, match="await each step, sleep or wait before the next one"):
                    await (await app.start_workflow("greedy", None, id="g")).result(10)

    asyncio.run(scenario())


def test_definitions_are_checked_when_registered() -> None:
    with new_app("memory://") as app:
        with pytest.raises(InvalidConfig, match="must be an async function"):
            app.workflow("plain")(lambda wf, x: None)
        with pytest.raises(InvalidConfig, match="a workflow name is"):
            app.workflow("bad name")
        with pytest.raises(InvalidConfig, match=r"takes \(wf: Workflow, input\)"):

            @app.workflow("lonely")
            async def lonely(wf: Workflow) -> None: ...

        @app.workflow("twice")
        async def twice(wf: Workflow, x: None) -> None: ...

        with pytest.raises(InvalidConfig, match="defined twice"):
            app.workflow("twice")(twice)
