"""Durable workflows as code: sagas with compensations, waits for events, durable timers.

    from inmotion import App
    from inmotion.workflows import Workflow, WorkflowTimeout

    app = App("shop")

    @app.workflow("order", on="shop.orders", filter="shop.order.placed")
    async def place_order(wf: Workflow, order: Order) -> Receipt:
        reservation = await wf.step(reserve_stock, order, compensate=release_stock)
        payment = await wf.request("payments", Charge(order.id, order.total), reply=Charged, timeout=5)
        await wf.step(ship, order, reservation, compensate=cancel_shipment)
        return Receipt(order.id, payment.id)

Each instance's history (step results, timers, waits, received events, undos) is kept in the
log's SQLite file; a crashed or stopped worker's instances are replayed by another one, which
skips what was recorded. When the workflow fails, the undos of its completed steps run newest
first. `inmotion workflows list|describe|cancel|retry` inspects and steers instances; every
change is announced as an `inmotion.workflow.*` CloudEvent on `<app>.workflows`.
"""

from inmotion.workflows.engine import Engine, WorkflowHandle
from inmotion.workflows.errors import (
    ChangedCode,
    StepFailed,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowError,
    WorkflowFailed,
    WorkflowTimeout,
)
from inmotion.workflows.workflow import Workflow

__all__ = [
    "ChangedCode",
    "Engine",
    "StepFailed",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowTimeout",
]
