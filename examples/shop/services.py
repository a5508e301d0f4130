"""The shop's services, each in its own process: `python -m examples.shop.services NAME URL`.
Each answers the commands of the order saga (`examples.shop.saga`) on its topic with
`ctx.reply`, and knows nothing of workflows.

    shop.inventory  shop.stock.reserve -> shop.stock.reserved | shop.stock.rejected
                    shop.stock.release    (an undo: no answer)
    shop.payments   shop.payment.charge -> shop.payment.charged
                    shop.payment.refund   (an undo: no answer)
    shop.shipments  shop.shipment.create -> shop.shipment.created | shop.shipment.failed

The card gateway never answers for customer "c-unlucky" (the saga times out after 5 s), and
no courier serves customer "c-faraway" (shipping fails after the payment: refunded).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from inmotion.runtime import App, Context, logs

TOPICS = ("shop.orders", "shop.inventory", "shop.payments", "shop.shipments")
UNLUCKY = "c-unlucky"
FARAWAY = "c-faraway"
logger = logging.getLogger("shop")


@dataclasses.dataclass
class OrderPlaced:
    order_id: str
    customer: str
    sku: str
    quantity: int
    total: float


@dataclasses.dataclass
class Reserve:
    order_id: str
    sku: str
    quantity: int


@dataclasses.dataclass
class Reservation:
    reserved: bool
    reason: str = ""


@dataclasses.dataclass
class Charge:
    order_id: str
    customer: str
    amount: float


@dataclasses.dataclass
class Payment:
    payment_id: str
    amount: float


@dataclasses.dataclass
class Ship:
    order_id: str
    customer: str


@dataclasses.dataclass
class Shipment:
    shipped: bool
    tracking: str = ""
    reason: str = ""


def inventory(broker: str) -> App:
    app = App("inventory", broker, source="/shop/inventory")
    stock = {"SKU-1": 10, "SKU-2": 3, "SKU-3": 0}

    @app.subscribe("shop.inventory", group="shop.inventory", filter="shop.stock.reserve", idempotent=True)
    async def reserve(command: Reserve, ctx: Context) -> None:
        left = stock.get(command.sku, 0)
        if left >= command.quantity:
            stock[command.sku] = left - command.quantity
            await ctx.reply(Reservation(True), type="shop.stock.reserved")
        else:
            await ctx.reply(Reservation(False, f"{command.sku}: {left} left"), type="shop.stock.rejected")

    @app.subscribe("shop.inventory", group="shop.inventory.release", filter="shop.stock.release", idempotent=True)
    async def release(command: Reserve) -> None:
        stock[command.sku] = stock.get(command.sku, 0) + command.quantity

    return app


def payment(broker: str) -> App:
    app = App("payment", broker, source="/shop/payment")

    @app.subscribe("shop.payments", group="shop.payment", filter="shop.payment.charge", idempotent=True)
    async def charge(command: Charge, ctx: Context) -> None:
        if command.customer == UNLUCKY:
            logger.warning("no answer from the card gateway for %s", command.order_id)
            return  # the saga hears nothing and times out
        await ctx.reply(Payment(f"pay-{command.order_id}", command.amount), type="shop.payment.charged")

    @app.subscribe("shop.payments", group="shop.payment.refund", filter="shop.payment.refund", idempotent=True)
    async def refund(payment: Payment) -> None:
        logger.warning("refunded %s (%.2f)", payment.payment_id, payment.amount)

    return app


def shipping(broker: str) -> App:
    app = App("shipping", broker, source="/shop/shipping")

    @app.subscribe("shop.shipments", group="shop.shipping", filter="shop.shipment.create", idempotent=True)
    async def ship(command: Ship, ctx: Context) -> None:
        if command.customer == FARAWAY:
            await ctx.reply(Shipment(False, reason="no courier serves the address"), type="shop.shipment.failed")
        else:
            await ctx.reply(Shipment(True, tracking=f"PP-{command.order_id}"), type="shop.shipment.created")

    return app


SERVICES = {"inventory": inventory, "payment": payment, "shipping": shipping}


def main() -> None:
    name, broker = sys.argv[1], sys.argv[2]
    logs.configure("warning")
    app = SERVICES[name](broker)
    print("ready", flush=True)
    try:
        app.run_sync()
    finally:
        app.close()


if __name__ == "__main__":
    main()
