"""The compiled rule matcher next to a naive loop over the same patterns, measured in the same run.

    .venv/bin/python bench/router.py            # 100,000 events against 10, 1,000 and 10,000 rules
    .venv/bin/python bench/router.py --quick    # 10,000 events, a smoke run

Events are CloudEvents JSON documents of about 1 KB (attributes at the top level, an order
under `data`), generated from a seed and decoded before timing, in batches so that memory stays
small. Rules mix every operator: each has one selective part, as real routing rules do (an
event type, a customer, an order-id prefix, an e-mail in any case, an id suffix, a client
network or a `$or` of two of these), and zero to two filters (numeric ranges and `=`,
anything-but lists and prefixes, wildcards, exists true/false, suffix ignoring case, prefix).

Compiled: `Matcher.match` on every event, timed in CPU seconds of this process per chunk of
1,000 events, the three matchers taking turns on each chunk so that load from other processes
hits them alike; the figure is the median chunk (the overall rate is printed too).
Naive: `[name for name, p in rules if p.matches(e)]` with the reference `Pattern.matches`, on
as many of the same events as fit in a time budget (it is far too slow for all of them at
10,000 rules); both produce the same rule names, which the run checks.

Pipeline: the same events through a `Router` with the 1,000 rules on the runtime's delivery
pipeline (memory log: fetch, decode, match, append to the target topics, commit), next to the
same pipeline forwarding every event without rules, in events per CPU-second of this process.

Targets: >= 100,000 events/s at 1,000 rules (the matcher, which the router runs once per
event); at most 2x slower from 10 to 10,000 rules.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec

from inmotion import App, Event
from inmotion.events import from_dict
from inmotion.log import Log, TopicConfig, connect
from inmotion.routing import Matcher, Pattern, Router, Rule, RuleSet, TopicTarget
from inmotion.routing.router import ROUTING_CONCURRENCY
from inmotion.runtime.publisher import to_message

DOMAINS = [f"d{n:02d}" for n in range(20)]
ENTITIES = [f"e{n:02d}" for n in range(25)]
VERBS = ["created", "updated", "deleted", "paid", "shipped", "cancelled", "refunded", "approved", "held", "closed"]
SERVICES = [
    f"/svc/{name}/{version}"
    for name in ("orders", "billing", "shipping", "crm", "fraud")
    for version in ("v1", "v2", "v3")
]
STATUSES = ["new", "pending", "paid", "shipped", "delivered", "cancelled", "refunded", "held"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "sa-east-1"]
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "ES", "IT", "NL", "SE", "PL"]
CUSTOMERS = 100_000
BATCH = 10_000
TARGET_RATE = 100_000
TARGET_SLOWDOWN = 2.0


def event(number: int) -> dict[str, Any]:
    """Event `number` of the run: the same number always gives the same event."""
    rng = random.Random(number)
    customer = rng.randrange(CUSTOMERS)
    region = rng.choice(REGIONS)
    order = f"O-{region[:2]}-{rng.randrange(10**8):08d}"
    items = [
        (rng.randrange(10_000), rng.randrange(1, 6), round(rng.uniform(1, 500), 2)) for _ in range(rng.randrange(1, 4))
    ]
    data: dict[str, Any] = {
        "order": {
            "id": order,
            "amount": round(sum(price * quantity for _, quantity, price in items), 2),
            "currency": rng.choice(["USD", "EUR", "GBP", "INR"]),
            "items": [
                {"sku": f"SKU-{sku:05d}", "quantity": quantity, "price": price} for sku, quantity, price in items
            ],
            "status": rng.choice(STATUSES),
        },
        "customer": {
            "id": f"C{customer:06d}",
            "email": f"user{customer}@example.com",
            "tier": rng.choice(["free", "silver", "gold", "platinum"]),
            "country": rng.choice(COUNTRIES),
            "since": f"20{rng.randrange(10, 25)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}",
        },
        "client": {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
        },
        "region": region,
        "risk": round(rng.random(), 3),
        "tags": rng.sample(["new", "vip", "b2b", "promo", "mobile", "web", "gift", "bulk"], 3),
        "note": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(260)),
    }
    if rng.random() < 0.3:
        data["coupon"] = f"SAVE{rng.randrange(5, 50)}"
    return {
        "specversion": "1.0",
        "id": f"{number:08x}-{rng.getrandbits(32):08x}-4000-8000-{rng.getrandbits(48):012x}",
        "source": rng.choice(SERVICES),
        "type": f"com.acme.{rng.choice(DOMAINS)}.{rng.choice(ENTITIES)}.{rng.choice(VERBS)}",
        "subject": f"orders/{order}",
        "time": f"2026-11-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }


def progress(line: str) -> None:
    """Rewrite the progress line, on a terminal only: redirected, carriage returns would pile
    up into one long line of the output file."""
    if sys.stdout.isatty() and sys.stderr.isatty():
        print(f"\r  {line:<58}\r" if line else "\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def batches(count: int) -> Iterator[list[dict[str, Any]]]:
    """The events as decoded JSON, as a consumer sees them, a batch at a time."""
    encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()
    for start in range(0, count, BATCH):
        yield [decoder.decode(encoder.encode(event(n))) for n in range(start, min(count, start + BATCH))]


def anchor(rng: random.Random) -> dict[str, Any]:
    """The selective part of a rule."""
    kind = rng.randrange(7)
    customer = rng.randrange(CUSTOMERS)
    if kind == 0:
        return {"type": [f"com.acme.{rng.choice(DOMAINS)}.{rng.choice(ENTITIES)}.{rng.choice(VERBS)}"]}
    if kind == 1:
        return {"data": {"customer": {"id": [f"C{customer:06d}", f"C{rng.randrange(CUSTOMERS):06d}"]}}}
    if kind == 2:
        return {"data": {"order": {"id": [{"prefix": f"O-{rng.choice(REGIONS)[:2]}-{rng.randrange(10**4):04d}"}]}}}
    if kind == 3:
        return {"data": {"customer": {"email": [{"equals-ignore-case": f"USER{customer}@Example.COM"}]}}}
    if kind == 4:
        return {"subject": [{"suffix": f"{rng.randrange(10**4):04d}"}]}
    if kind == 5:
        return {"data": {"client": {"ip": [{"cidr": f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/24"}]}}}
    return {
        "$or": [
            {"type": [f"com.acme.{rng.choice(DOMAINS)}.{rng.choice(ENTITIES)}.{rng.choice(VERBS)}"]},
            {"data": {"customer": {"id": [f"C{customer:06d}"]}}},
        ]
    }


def filters(rng: random.Random) -> list[tuple[tuple[str, ...], list[Any]]]:
    """Zero to two further conditions, (path, leaf)."""
    low = rng.randrange(0, 2000)
    options: list[tuple[tuple[str, ...], list[Any]]] = [
        (("data", "order", "amount"), [{"numeric": [">=", low, "<", low + rng.randrange(100, 3000)]}]),
        (("data", "risk"), [{"numeric": [">", round(rng.random(), 2)]}]),
        (("data", "order", "items", "quantity"), [{"numeric": ["=", rng.randrange(1, 6)]}]),
        (("data", "order", "status"), [{"anything-but": rng.sample(STATUSES, 2)}]),
        (("data", "region"), [{"anything-but": {"prefix": rng.choice(["us-", "eu-", "ap-"])}}]),
        (("source",), [{"wildcard": f"/svc/*/{rng.choice(['v1', 'v2', 'v3'])}"}]),
        (("data", "coupon"), [{"exists": rng.random() < 0.5}]),
        (("data", "customer", "email"), [{"suffix": {"equals-ignore-case": "@EXAMPLE.com"}}]),
        (("data", "customer", "country"), rng.sample(COUNTRIES, 4)),
        (("data", "customer", "tier"), [{"prefix": rng.choice(["g", "s", "p", "f"])}]),
        (("data", "tags"), [rng.choice(["vip", "b2b", "promo", "gift"])]),
    ]
    return rng.sample(options, rng.randrange(3))


def rules(count: int, seed: int = 7) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    generated = {}
    for number in range(count):
        pattern = anchor(rng)
        for path, leaf in filters(rng):
            node = pattern
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node.setdefault(path[-1], leaf)  # never replace the anchor
        generated[f"rule-{number:05d}"] = pattern
    return generated


def run_compiled(matchers: dict[int, Matcher], count: int) -> dict[int, tuple[float, float, int]]:
    """Per rule count: (median rate over chunks of 1,000 events, overall rate, matches).

    The matchers take turns on each chunk, so a disturbance on the shared machine hits them
    alike and the ratios stay fair; the median chunk is the figure, the overall rate includes
    whatever else ran meanwhile."""
    chunk = 1_000
    rates: dict[int, list[float]] = {size: [] for size in matchers}
    elapsed = dict.fromkeys(matchers, 0.0)
    matches = dict.fromkeys(matchers, 0)
    done = 0
    for batch in batches(count):
        for first in range(0, len(batch), chunk):
            part = batch[first : first + chunk]
            for size, matcher in matchers.items():
                start = time.process_time()
                for document in part:
                    matches[size] += len(matcher.match(document))
                spent = time.process_time() - start
                elapsed[size] += spent
                rates[size].append(len(part) / max(spent, 1e-9))
        done += len(batch)
        progress(f"compiled: {done:,}/{count:,} events")
    progress("")
    return {size: (statistics.median(rates[size]), count / elapsed[size], matches[size]) for size in matchers}


def run_naive(matcher: Matcher, patterns: list[tuple[str, Pattern]], count: int, budget: float) -> tuple[float, int]:
    """The naive loop on as many events as fit in `budget` seconds; checks it agrees with `matcher`."""
    elapsed = 0.0
    done = 0
    for batch in batches(count):
        for document in batch:
            start = time.process_time()
            naive = [name for name, pattern in patterns if pattern.matches(document)]
            elapsed += time.process_time() - start
            compiled = matcher.match(document)
            if naive != compiled:
                raise SystemExit(f"MISMATCH on event {document['id']}: naive {naive}, compiled {compiled}")
            done += 1
            if done % 100 == 0:
                progress(f"  naive: {done:,} events, {elapsed:.1f}s of {budget:.0f}s")
            if elapsed >= budget:
                break
        else:
            continue
        break
    progress("")
    return done / elapsed, done


def run_pipeline(count: int, patterns: list[tuple[str, Pattern]]) -> tuple[float, float]:
    """Events per CPU-second through a `Router` with `patterns` (every rule forwarding
    to one topic, the rest to an unmatched topic) on the runtime's pipeline over a memory log,
    and through its yardstick: the same pipeline with a handler that forwards every event to a
    topic unmatched (the fetch, decode, append and commit that any router pays)."""
    with connect("memory://") as log:
        log.create_topic("source", TopicConfig(partitions=4))
        for batch in batches(count):
            log.append_events("source", [from_dict(document) for document in batch])

        async def forward_all(app: App) -> None:
            @app.subscribe("source", group="forward", concurrency=ROUTING_CONCURRENCY)
            async def forward(event: Event) -> None:
                await app.publisher.send("copies", to_message(event, None))

        async def route_all(app: App) -> None:
            rule_set = RuleSet(
                tuple(
                    Rule(name=name, pattern=pattern, targets=(TopicTarget(topic="matched"),), sources=("source",))
                    for name, pattern in patterns
                ),
                unmatched="rest",
            )
            Router(app, rule_set, group="route")

        return asyncio.run(_through(log, "forward", forward_all, count)), asyncio.run(
            _through(log, "route", route_all, count)
        )


async def _through(log: Log, group: str, subscribe: Callable[[App], Awaitable[None]], count: int) -> float:
    """Events per CPU-second of this process (every thread; waits for a heartbeat or a commit
    do not count) for the subscriptions `subscribe` adds in `group` to handle `count` events."""
    app = App(group, log, commit_interval=0.02)
    await subscribe(app)
    start = time.process_time()
    await app.start()
    while sum(log.committed(group, "source").values()) < count:  # noqa: ASYNC110 (the log's state, polled)
        await asyncio.sleep(0.01)
    elapsed = time.process_time() - start
    await app.stop()
    app.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 events and a short naive budget: a smoke run")
    parser.add_argument("--events", type=int, help="how many events to match (default 100,000; 10,000 with --quick)")
    parser.add_argument(
        "--routed", type=int, help="how many events to route on the pipeline (default 20,000; 5,000 with --quick)"
    )
    args = parser.parse_args()
    count = args.events or (10_000 if args.quick else 100_000)
    routed = args.routed or (5_000 if args.quick else 20_000)
    budget = 1.0 if args.quick else 5.0
    sizes = [10, 1_000, 10_000]
    print(
        f"router bench: {count:,} events of ~{len(msgspec.json.encode(event(0)))} bytes, "
        f"Python {sys.version.split()[0]}, rates in events per CPU-second of this process"
    )
    print(
        f"{'rules':>7} {'compiled ev/s':>14} {'overall':>11} {'matches/ev':>11} {'naive ev/s':>12} "
        f"{'naive events':>13} {'speedup':>9}"
    )
    matchers: dict[int, Matcher] = {}
    patterns: dict[int, list[tuple[str, Pattern]]] = {}
    for size in sizes:
        print(f"  compiling {size:,} rules...", file=sys.stderr, flush=True)
        patterns[size] = [(name, Pattern(raw)) for name, raw in rules(size).items()]
        start = time.process_time()
        matchers[size] = Matcher(dict(patterns[size]))
        matchers[size].match({})
        print(f"  built in {time.process_time() - start:.2f}s", file=sys.stderr, flush=True)
    compiled = run_compiled(matchers, count)
    rates = {size: figures[0] for size, figures in compiled.items()}
    for size in sizes:
        rate, overall, matches = compiled[size]
        print(f"  naive loop over {size:,} rules...", file=sys.stderr, flush=True)
        naive_rate, naive_events = run_naive(matchers[size], patterns[size], count, budget)
        print(
            f"{size:>7,} {rate:>14,.0f} {overall:>11,.0f} {matches / count:>11.3f} {naive_rate:>12,.0f} "
            f"{naive_events:>13,} {rate / naive_rate:>8,.1f}x",
            flush=True,
        )
    print(f"  routing {routed:,} events on the runtime's pipeline...", file=sys.stderr, flush=True)
    forwarded, through_router = run_pipeline(routed, patterns[1_000])
    print(
        f"\npipeline (memory log, {routed:,} events, per CPU-second): router with 1,000 rules "
        f"{through_router:,.0f} events/s, forwarding without rules {forwarded:,.0f} events/s "
        f"({through_router / forwarded:.2f}x)"
    )
    slowdown = rates[sizes[0]] / rates[sizes[-1]]
    at_thousand = rates[1_000]
    print(
        f"\n1,000 rules: {at_thousand:,.0f} events/s (target >= {TARGET_RATE:,}): "
        f"{'met' if at_thousand >= TARGET_RATE else 'MISSED'}"
    )
    print(
        f"10 -> 10,000 rules: {slowdown:.2f}x slower (target <= {TARGET_SLOWDOWN}x): "
        f"{'met' if slowdown <= TARGET_SLOWDOWN else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
