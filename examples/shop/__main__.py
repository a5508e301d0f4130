"""The shop demo: `.venv/bin/python -m examples.shop [--broker URL] [--orders N]`.

Starts the inventory, payment and shipping services as separate processes on one SQLite
file (or, unchanged, on Kafka: `--broker kafka://127.0.0.1:9092` after `scripts/kafka up`),
places orders from this process (the order service), shows every event as it flows through
the shop, and ends with a summary. Orders of customer "c-unlucky" hit a payment
gateway that always times out: the payment service retries them with backoff and then
dead-letters them, which the summary shows next to the `inmotion dlq` command to redrive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from examples.shop.services import SERVICES, TOPICS, UNLUCKY, OrderPlaced
from inmotion import Event
from inmotion.log import TopicConfig
from inmotion.runtime import App, Context, deadletter

DLQ = deadletter.default_topic("shop.payment")
COLORS = {
    "shop.order.placed": "cyan",
    "shop.inventory.reserved": "green",
    "shop.inventory.rejected": "yellow",
    "shop.payment.captured": "green",
    "shop.shipment.created": "bold green",
}
FINAL = {"shop.inventory.rejected", "shop.shipment.created", "dead-lettered"}
# How far along an order is: the monitor reads each topic on its own, so a later step may be
# seen before an earlier one, and an order's status only ever moves forward.
STAGE = {
    "shop.order.placed": 0,
    "shop.inventory.reserved": 1,
    "shop.payment.captured": 2,
    "shop.inventory.rejected": 3,
    "shop.shipment.created": 3,
    "dead-lettered": 3,
}

console = Console(highlight=False)


def short_id(event_id: str) -> str:
    """An event id for display: its last 8 characters. Ids made in one process share their
    first 24 (a random prefix per process, then a counter), so only the end tells them apart."""
    return event_id[-8:]


def start_services(broker: str) -> list[subprocess.Popen[str]]:
    processes = []
    for name in SERVICES:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.shop.services", name, broker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        processes.append(process)
        threading.Thread(target=relay, args=(name, process), daemon=True).start()
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("a service failed to start")
    return processes


def relay(name: str, process: subprocess.Popen[str]) -> None:
    """Show a service's warnings (its retries) as they happen."""
    assert process.stderr is not None
    for line in process.stderr:
        message = line.rstrip().split(": ", 1)[-1]
        console.print(f"  [dim]{time.strftime('%H:%M:%S')}[/dim] [red]{name:>9} !![/red] {message}")


def stop_services(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def orders(count: int) -> list[OrderPlaced]:
    skus = ["SKU-1", "SKU-2", "SKU-1", "SKU-3", "SKU-2", "SKU-1"]
    placed = []
    for n in range(count):
        customer = UNLUCKY if n % 4 == 1 else f"c-{n:03d}"
        placed.append(OrderPlaced(f"o-{n + 1:03d}", customer, skus[n % len(skus)], 1 + n % 2, 19.5 + n))
    return placed


async def run(broker: str, count: int, patience: float) -> int:
    status: dict[str, str] = {}
    flow: Counter[str] = Counter()
    shipments: list[str] = []  # ids of shipment events, to show how to trace an order's flow
    done = asyncio.Event()
    app = App("orders", broker, source="/shop/orders")
    for topic in (*TOPICS, DLQ):
        if topic not in app.log.list_topics():
            app.log.create_topic(topic, TopicConfig(partitions=1 if topic == DLQ else 4))

    @app.subscribe([*TOPICS, DLQ], group="shop.monitor")
    async def watch(event: Event, ctx: Context) -> None:
        order_id = (event.data or {}).get("order_id", "?") if isinstance(event.data, dict) else "?"
        kind = event.type
        if ctx.topic == DLQ:
            kind = "dead-lettered"
            error = ctx.headers.get("dlq_error_type", "").rsplit(".", 1)[-1]
            detail = f"after {ctx.headers.get('dlq_attempts')} attempts: {error}"
            color = "bold red"
            source = ctx.headers.get("dlq_group", "?").removeprefix("shop.")
        else:
            cause = event.extensions.get("causationid")
            detail = f"caused by {short_id(str(cause))}" if cause else ""
            color = COLORS.get(kind, "white")
            source = str(event.source).rsplit("/", 1)[-1]
        flow[kind] += 1
        if kind == "shop.shipment.created":
            shipments.append(event.id)
        if STAGE.get(kind, 0) >= STAGE.get(status.get(order_id, ""), 0):
            status[order_id] = kind
        console.print(
            f"  [dim]{time.strftime('%H:%M:%S')}[/dim] {source:>9} -> [{color}]{kind:<24}[/{color}]"
            f" {order_id}  [dim]{detail}[/dim]"
        )
        if len(status) == count and all(s in FINAL for s in status.values()):
            done.set()

    console.rule("[bold]inmotion shop demo")
    console.print(f"broker: {broker}")
    console.print("starting inventory, payment and shipping services (one process each)...")
    services = start_services(broker)
    try:
        await app.start()
        for order in orders(count):
            await app.publish("shop.orders", order, key=order.order_id, type="shop.order.placed")
            await asyncio.sleep(0.15)
        try:
            await asyncio.wait_for(done.wait(), patience)
        except TimeoutError:
            console.print(f"[red]not every order finished within {patience:g}s[/red]")
        await app.stop()
    finally:
        stop_services(services)
        app.close()
    summarize(status, flow, broker, count, shipments[-1] if shipments else None)
    return 0 if len(status) == count and all(s in FINAL for s in status.values()) else 1


def summarize(status: dict[str, str], flow: Counter[str], broker: str, count: int, shipment: str | None) -> None:
    console.rule("[bold]summary")
    table = Table("event", "count", box=None)
    for kind in [*COLORS, "dead-lettered"]:
        table.add_row(kind, str(flow.get(kind, 0)))
    console.print(table)
    outcome = Counter(status.values())
    console.print(
        f"{count} orders: [green]{outcome.get('shop.shipment.created', 0)} shipped[/green], "
        f"[yellow]{outcome.get('shop.inventory.rejected', 0)} rejected (out of stock)[/yellow], "
        f"[red]{outcome.get('dead-lettered', 0)} dead-lettered (payment gateway timeouts)[/red]"
    )
    console.print(f"inspect them with:  inmotion dlq list {DLQ} --broker {broker}")
    console.print(f"after a fix:        inmotion dlq redrive {DLQ} --broker {broker}")
    console.print(f"consumer groups:    inmotion groups list --broker {broker}")
    if shipment is not None:
        console.print(f"an order's flow:    inmotion trace {short_id(shipment)} --broker {broker}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--broker", help="a sqlite:/// or kafka:// URL (default: a new SQLite file in a new temporary directory)"
    )
    parser.add_argument("--orders", type=int, default=12, help="how many orders to place (default 12)")
    parser.add_argument("--timeout", type=float, default=40.0, help="give up after this many seconds")
    options = parser.parse_args()
    if options.orders < 1:
        parser.error("--orders must be at least 1")
    # The file outlives the demo, so that the commands in the summary have something to show.
    broker = options.broker or f"sqlite:///{Path(tempfile.mkdtemp(prefix='inmotion-shop-')) / 'shop.db'}"
    os.environ.pop("INMOTION_BROKER", None)
    sys.exit(asyncio.run(run(broker, options.orders, options.timeout)))


if __name__ == "__main__":
    main()
