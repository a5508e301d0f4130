"""The shop's services. Each runs in its own process: `python -m examples.shop.services NAME URL`.

    shop.orders     shop.order.placed        (the order service, in the demo's process)
    shop.inventory  shop.inventory.reserved | shop.inventory.rejected
    shop.payments   shop.payment.captured
    shop.shipments  shop.shipment.created

The payment gateway times out for every order of customer "c-unlucky": the payment service
retries with backoff and then dead-letters the event to `shop.payment.dlq`.
"""

from __future__ import annotations

import dataclasses
import sys

from inmotion.runtime import App, Context, Retry, logs

TOPICS = ("shop.orders", "shop.inventory", "shop.payments", "shop.shipments")
UNLUCKY = "c-unlucky"


@dataclasses.dataclass
class OrderPlaced:
    order_id: str
    customer: str
    sku: str
    quantity: int
    total: float


@dataclasses.dataclass
class StockReserved:
    order_id: str
    customer: str
    total: float


@dataclasses.dataclass
class PaymentCaptured:
    order_id: str
    amount: float


class GatewayTimeout(Exception):
    """The payment provider did not answer in time."""


def inventory(broker: str) -> App:
    app = App("inventory", broker, source="/shop/inventory")
    stock = {"SKU-1": 10, "SKU-2": 3, "SKU-3": 0}

    @app.subscribe("shop.orders", group="shop.inventory", filter="shop.order.placed")
    async def reserve(order: OrderPlaced, ctx: Context) -> None:
        left = stock.get(order.sku, 0)
        if left >= order.quantity:
            stock[order.sku] = left - order.quantity
            reserved = StockReserved(order.order_id, order.customer, order.total)
            await ctx.publish("shop.inventory", reserved, key=order.order_id, type="shop.inventory.reserved")
        else:
            await ctx.publish(
                "shop.inventory",
                {"order_id": order.order_id, "reason": f"{order.sku}: {left} left"},
                key=order.order_id,
                type="shop.inventory.rejected",
            )

    return app


def payment(broker: str) -> App:
    app = App("payment", broker, source="/shop/payment")

    @app.subscribe(
        "shop.inventory",
        group="shop.payment",
        filter="shop.inventory.reserved",
        retry=Retry(attempts=4, backoff=0.2, max_backoff=1.0),
        idempotent=True,
    )
    async def charge(reserved: StockReserved, ctx: Context) -> None:
        if reserved.customer == UNLUCKY:
            raise GatewayTimeout(f"no answer from the card gateway for {reserved.order_id}")
        captured = PaymentCaptured(reserved.order_id, reserved.total)
        await ctx.publish("shop.payments", captured, key=reserved.order_id, type="shop.payment.captured")

    return app


def shipping(broker: str) -> App:
    app = App("shipping", broker, source="/shop/shipping")

    @app.subscribe("shop.payments", group="shop.shipping", filter="shop.payment.*")
    def ship(captured: PaymentCaptured, ctx: Context) -> None:  # a plain function: runs in a thread
        ctx.publish_sync(
            "shop.shipments",
            {"order_id": captured.order_id, "carrier": "parcel-post"},
            key=captured.order_id,
            type="shop.shipment.created",
        )

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
