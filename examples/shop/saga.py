"""The order saga: reserve stock, charge, ship; each a command to a service and its reply.
When payment does not answer within 5 s, or shipping fails, what was done is undone, newest
first: the payment refunded, the stock released."""

from __future__ import annotations

from typing import Any

from examples.shop.services import Charge, OrderPlaced, Payment, Reservation, Reserve, Ship, Shipment
from inmotion.runtime import App
from inmotion.workflows import Workflow

PATIENCE = 5.0
"""Seconds the saga waits for each service's answer."""


class ShippingFailed(Exception):
    """No courier takes the parcel."""


def saga(app: App) -> None:
    @app.workflow("order", on="shop.orders", filter="shop.order.placed", id=lambda event: event.data["order_id"])
    async def place_order(wf: Workflow, order: OrderPlaced) -> str:
        async def send(topic: str, type: str, command: Any) -> None:  # undos are commands nobody answers
            correlated = {"correlationid": wf.correlation}
            await app.publish(topic, command, key=order.order_id, type=type, extensions=correlated)

        async def release_stock(reserve: Reserve) -> None:
            await send("shop.inventory", "shop.stock.release", reserve)

        async def refund(payment: Payment) -> None:
            await send("shop.payments", "shop.payment.refund", payment)

        reserve = Reserve(order.order_id, order.sku, order.quantity)
        stock = await wf.request(
            "shop.inventory",
            reserve,
            type="shop.stock.reserve",
            reply=Reservation,
            key=order.order_id,
            timeout=PATIENCE,
        )
        if not stock.reserved:
            return f"rejected: {stock.reason}"
        wf.compensate(release_stock, reserve)

        charge = Charge(order.order_id, order.customer, order.total)
        payment = await wf.request(
            "shop.payments", charge, type="shop.payment.charge", reply=Payment, key=order.order_id, timeout=PATIENCE
        )
        wf.compensate(refund, payment)

        ship = Ship(order.order_id, order.customer)
        shipment = await wf.request(
            "shop.shipments", ship, type="shop.shipment.create", reply=Shipment, key=order.order_id, timeout=PATIENCE
        )
        if not shipment.shipped:
            raise ShippingFailed(shipment.reason)
        return f"shipped: {shipment.tracking}"
