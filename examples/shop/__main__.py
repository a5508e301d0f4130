"""The shop demo: `.venv/bin/python -m examples.shop [--broker URL] [--orders N]`.

An orchestrated order saga (`examples.shop.saga`): for each order placed, a workflow reserves
stock, charges and ships, each through a command to a service in a process of its own
(inventory, payment, shipping) and its reply, on one SQLite file (or, unchanged, on Kafka:
`--broker kafka://127.0.0.1:9092` after `scripts/kafka up`). The card gateway never answers for
customer "c-unlucky": the saga times out after 5 s and releases the stock; no courier serves
"c-faraway": the saga refunds the payment and releases the stock. The flow prints as it
happens and a summary ends it, with the commands that inspect the workflows afterwards.
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

from examples.shop.saga import saga
from examples.shop.services import FARAWAY, SERVICES, TOPICS, UNLUCKY, OrderPlaced
from inmotion import Event
from inmotion.log import TopicConfig
from inmotion.runtime import App, Context

APP = "shop"
LIFECYCLE = f"{APP}.workflows"
INBOX = f"{APP}.workflows.inbox"
COLORS = {
    "shop.order.placed": "cyan",
    "shop.stock.reserved": "green",
    "shop.stock.rejected": "yellow",
    "shop.payment.charged": "green",
    "shop.shipment.created": "bold green",
    "shop.shipment.failed": "red",
    "timed_out": "red",
    "compensating": "yellow",
    "undone": "yellow",
    "completed": "bold green",
    "compensated": "bold yellow",
}
SHOWN = {"timed_out", "compensating", "undone", "completed", "compensated", "failed", "compensation_failed"}
"""The lifecycle events of the saga that the flow shows (with every command and reply)."""
ENDS = {"completed", "compensated", "failed", "compensation_failed"}

console = Console(highlight=False)


def short_id(event_id: str) -> str:
    """An event id for display: a UUID's last 8 characters (ids made in one process share their
    first 24: a random prefix per process, then a counter), other ids whole (a saga's commands
    are `<workflow>/<id>/<step>`)."""
    return event_id[-8:] if len(event_id) == 36 else event_id


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


def orders(count: int, tag: str) -> list[OrderPlaced]:
    skus = ["SKU-1", "SKU-2", "SKU-1", "SKU-3", "SKU-2", "SKU-1"]
    placed = []
    for n in range(count):
        customer = UNLUCKY if n % 6 == 1 else FARAWAY if n % 6 == 4 else f"c-{n:03d}"
        placed.append(OrderPlaced(f"o-{tag}{n + 1:03d}", customer, skus[n % len(skus)], 1 + n % 2, 19.5 + n))
    return placed


def outcome_of(event: Event) -> str:
    """What became of an order, from its workflow's last lifecycle event."""
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.type.removeprefix("inmotion.workflow.")
    if kind == "completed":
        return "rejected" if str(data.get("result", "")).startswith("rejected") else "shipped"
    if kind == "compensated":
        return "payment timed out" if "WorkflowTimeout" in str(data.get("error")) else "shipping failed"
    return kind


async def run(broker: str, count: int, patience: float) -> int:
    # A SQLite file is new for each run. A Kafka broker keeps the topics and groups of earlier
    # runs: this run's orders get ids of their own, and its workflows a store of their own.
    tag = "" if broker.startswith("sqlite:") else f"{os.urandom(2).hex()}-"
    if tag and not os.environ.get("INMOTION_WORKFLOW_STORE"):
        os.environ["INMOTION_WORKFLOW_STORE"] = (
            f"sqlite:///{Path(tempfile.mkdtemp(prefix='inmotion-shop-'))}/workflows.db"
        )
    placed = orders(count, tag)
    ours = {order.order_id for order in placed}
    outcomes: dict[str, str] = {}
    flow: Counter[str] = Counter()
    shipped: list[str] = []  # ids of placed orders that shipped, to show how to trace one
    order_of: dict[str, str] = {}  # order ids by the ids of the events that placed them
    done = asyncio.Event()
    app = App(APP, broker, source="/shop/orders")
    saga(app)
    for topic in (*TOPICS, LIFECYCLE, INBOX):
        if topic not in app.log.list_topics():
            app.log.create_topic(topic, TopicConfig(partitions=4))

    @app.subscribe([*TOPICS, INBOX, LIFECYCLE], group="shop.monitor")
    async def watch(event: Event, ctx: Context) -> None:
        kind = event.type.removeprefix("inmotion.workflow.")
        if (ctx.topic == LIFECYCLE and kind not in SHOWN) or (ctx.topic == INBOX and kind != event.type):
            return  # the saga's other steps, and requests to its workers
        data = event.data if isinstance(event.data, dict) else {}
        if kind == "shop.order.placed":
            order_of[event.id] = str(data.get("order_id"))
        # a reply carries no order id of its own: the correlation id is the order event's id
        order_id = str(data.get("order_id") or order_of.get(str(event.extensions.get("correlationid")), "?"))
        if order_id not in ours and data.get("id") not in ours:
            return  # an earlier run's
        order_id = order_id if order_id in ours else str(data.get("id"))
        flow[kind] += 1
        if ctx.topic == LIFECYCLE:
            who = "saga"
            detail = {"undone": f"{data.get('name')}", "timed_out": "no answer in 5 s"}.get(kind, "")
            if kind in ENDS:
                outcomes[order_id] = outcome_of(event)
                detail = str(data.get("result") or data.get("error") or "")
                if outcomes[order_id] == "shipped":
                    shipped.append(str(event.extensions.get("correlationid")))
        else:
            who = str(event.source).rsplit("/", 1)[-1]
            cause = event.extensions.get("causationid")
            detail = f"caused by {short_id(str(cause))}" if cause else ""
        color = COLORS.get(kind, "white")
        console.print(
            f"  [dim]{time.strftime('%H:%M:%S')}[/dim] {who:>9} -> [{color}]{kind:<24}[/{color}]"
            f" {order_id}  [dim]{detail}[/dim]"
        )
        if len(outcomes) == count:
            done.set()

    console.rule("[bold]inmotion shop demo: an order saga")
    console.print(f"broker: {broker}")
    console.print("starting inventory, payment and shipping services (one process each)...")
    services = start_services(broker)
    try:
        await app.start()
        for order in placed:
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
    summarize(outcomes, flow, broker, count, shipped[-1] if shipped else None)
    return 0 if len(outcomes) == count else 1


def summarize(outcomes: dict[str, str], flow: Counter[str], broker: str, count: int, shipped: str | None) -> None:
    console.rule("[bold]summary")
    table = Table("event", "count", box=None)
    for kind in [k for k in COLORS if flow.get(k)]:
        table.add_row(kind, str(flow[kind]))
    console.print(table)
    outcome = Counter(outcomes.values())
    console.print(
        f"{count} orders: [green]{outcome.get('shipped', 0)} shipped[/green], "
        f"[yellow]{outcome.get('rejected', 0)} rejected (out of stock)[/yellow], "
        f"[red]{outcome.get('payment timed out', 0) + outcome.get('shipping failed', 0)} compensated[/red] "
        f"({outcome.get('payment timed out', 0)} payment timed out: stock released; "
        f"{outcome.get('shipping failed', 0)} shipping failed: payment refunded, stock released)"
        + (f", [bold red]{outcome['failed']} failed[/bold red]" if outcome.get("failed") else "")
    )
    compensated = sorted(order for order, what in outcomes.items() if what in ("payment timed out", "shipping failed"))
    where = f"--broker {broker}"
    if os.environ.get("INMOTION_WORKFLOW_STORE"):
        where += f" --store {os.environ['INMOTION_WORKFLOW_STORE']}"
    console.print(f"the workflows:      inmotion workflows list {where}")
    if compensated:
        console.print(f"a compensated one:  inmotion workflows describe order/{compensated[0]} {where}")
    if shipped is not None:
        console.print(f"an order's flow:    inmotion trace {short_id(shipped)} --broker {broker}")


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
