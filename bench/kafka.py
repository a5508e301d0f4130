"""The Kafka backend next to raw confluent-kafka on the same broker, measured in the same run.

    scripts/kafka up
    .venv/bin/python bench/kafka.py            # 1,000,000 events of ~200 bytes
    .venv/bin/python bench/kafka.py --quick    # 100,000 events, 3 s of latency: a smoke run

Every record is a CloudEvent in the Kafka binary binding (ce_* headers, a key, a JSON value),
about 200 bytes in all, built before the clock starts; both sides send the same bytes.

Produce: `KafkaLog.append` in batches of 10,000 (each returns after its delivery reports), from
one thread and from two, next to a raw confluent-kafka `Producer` with the same settings
(idempotence, acks=all, linger 5 ms, murmur2_random) producing every record and flushing once
at the end: without delivery callbacks, with the least callback that tells each record's fate,
and with that callback and a flush after every 10,000 (what a synchronous append has to do).
Consume: `KafkaLog.read` of a batch from each partition in turn, a `Record` per message, next to a raw
`Consumer` assigned the partitions, reading each message's value and headers, with the same
fetch settings as KafkaLog's readers (librdkafka's default fetch.queue.backoff.ms of 1 s
stalls a consumer that drains its queue faster than it fills); for reference also a raw
consumer that builds, per message, the tuple of what a `Record` holds. All read the same topic
(the first produced in the round), after an untimed read of each side that leaves the broker's
cache warm and KafkaLog's reader of the topic made.
On this shared 2-core machine the raw consumer's rate moved between 284k and 525k events/s from
one run to the next, so a ratio of best rates taken minutes apart gave 0.52x to 0.87x. The two
consumers therefore take turns within a round (raw, inmotion, raw, ..., inmotion, raw:
`--pairs` inmotion reads), each inmotion read is compared with the mean of the raw reads just
before and after it (which cancels a drift of the machine's speed), and the consume ratio is
the median of those ratios over every round, printed with their range.
Latency: a producer appends 10,000 events/s in batches of 50 every 5 ms while a consumer waits
and reads them; each record carries its send time, the p50/p99 is of (received - sent). Also
through the runtime: an `App` publishes the events (`publish_many_sync`) to 4 partitions and its
subscriber's handler receives them (the app runs its event loop on a thread of its own).
Consumer groups: an `App` with one, then two subscriptions (each its own group) on a 4-partition
topic that another client filled with a tenth of the events; events handled per second by all
groups together, from the app's start until every group has all of them.
Targets: produce and consume >= 0.8x raw confluent-kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import queue
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

import inmotion
from inmotion.log import Message, TopicConfig
from inmotion.log.kafka import KafkaLog
from inmotion.runtime import App

BATCH = 10_000
READ_LIMIT = 5_000
RATE = 10_000
TICK = 0.005

Row = tuple[bytes, tuple[tuple[str, bytes], ...], bytes]


def rows(count: int) -> list[Row]:
    body = b'{"order_id":"o-%08d","customer":"c-%05d","sku":"SKU-%04d","quantity":%d,"total":%d.95}'
    out: list[Row] = []
    for i in range(count):
        headers = (
            ("ce_specversion", b"1.0"),
            ("ce_id", b"%032x" % i),
            ("ce_source", b"/shop"),
            ("ce_type", b"shop.order.placed"),
            ("content-type", b"application/json"),
        )
        out.append((b"o-%08d" % i, headers, body % (i, i % 50_000, i % 9_999, i % 7 + 1, i % 500)))
    return out


def reversed_list(steps: list[Any]) -> list[Any]:
    return steps[::-1]


def timed(label: str, count: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"  {label:<44} {rate:>12,.0f} events/s  ({elapsed:.2f}s)", flush=True)
    return rate


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
    }


def raw_produce(bootstrap: str, topic: str, data: list[Row], callbacks: bool, batch: int = 0) -> None:
    """Fire and forget with one flush at the end, or with the least delivery callback that
    tells a record's fate (what an application needs to know that each record was stored);
    with `batch`, a flush after each batch (what a synchronous append does)."""
    producer = Producer(producer_config(bootstrap))
    produce = producer.produce
    failed: list[object] = []

    def delivered(error: object, _msg: object) -> None:
        if error is not None:
            failed.append(error)

    extra: dict[str, Any] = {"on_delivery": delivered} if callbacks else {}
    for start in range(0, len(data), batch or len(data)):
        for key, headers, value in data[start : start + (batch or len(data))]:
            while True:
                try:
                    produce(topic, value, key, headers=list(headers), **extra)
                    break
                except BufferError:
                    producer.poll(0.05)
        if producer.flush(120) or failed:
            raise RuntimeError("raw producer: records not delivered")


def log_produce(log: KafkaLog, topic: str, messages: list[Message], threads: int) -> None:
    """Batches of BATCH appended by `threads` threads: while one waits for its delivery
    reports, another produces (each thread's batches stay in order)."""
    batches = [messages[start : start + BATCH] for start in range(0, len(messages), BATCH)]

    def work(mine: list[list[Message]]) -> None:
        for batch in mine:
            log.append(topic, batch)

    workers = [threading.Thread(target=work, args=(batches[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def consumer_config(bootstrap: str) -> dict[str, Any]:
    """The fetch settings that KafkaLog's readers use, so both sides fetch alike."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "queued.max.messages.kbytes": 16384,
        "fetch.queue.backoff.ms": 10,
        "fetch.wait.max.ms": 100,
    }


def raw_consume(bootstrap: str, topic: str, partitions: int, count: int, keep: bool) -> None:
    """Touch each message's value and headers, or (`keep`) build the tuple of everything that
    a `Record` holds for each, as a reference for what materializing records costs."""
    consumer = Consumer(consumer_config(bootstrap))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    while seen < count:
        messages = consumer.consume(READ_LIMIT, 1.0)
        if keep:
            kept = [
                (m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), tuple(m.headers() or ()))
                for m in messages
                if m.error() is None
            ]
            seen += len(kept)
            continue
        for msg in messages:
            if msg.error() is None:
                msg.value()
                msg.headers()
                seen += 1
    consumer.close()


def log_consume(log: KafkaLog, topic: str, partitions: int, count: int) -> None:
    """A consumer loop over the topic: a batch from each partition in turn."""
    ends = {p: log.latest_offset(topic, p) for p in range(partitions)}
    offsets = dict.fromkeys(ends, 0)
    seen = 0
    while offsets != ends:
        for partition, offset in offsets.items():
            if offset < ends[partition]:
                records = log.read(topic, partition, offset, limit=READ_LIMIT)
                seen += len(records)
                offsets[partition] = records[-1].offset + 1
    assert seen == count, seen


def latency(label: str, send: Callable[[list[Row]], None], receive: Callable[[], list[bytes]], seconds: float) -> None:
    """Send RATE events/s for `seconds` while receiving; print percentiles of receive - send."""
    per_tick = int(RATE * TICK)
    total = int(seconds / TICK) * per_tick
    delays: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(delays) < total and not done.is_set():
            for value in receive():
                delays.append(time.perf_counter() - float(value))

    # warm up: the consumer has fetched once and the producer has its id before the clock starts
    send([(b"warm-up", (), b"%.9f" % time.perf_counter())])
    warm_until = time.monotonic() + 30
    while not receive() and time.monotonic() < warm_until:
        pass
    thread = threading.Thread(target=consume)
    thread.start()
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = start + (sent // per_tick) * TICK
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        stamp = b"%.9f" % time.perf_counter()
        send([(b"k%d" % (sent + i), (), stamp) for i in range(per_tick)])
        sent += per_tick
    thread.join(timeout=30)
    done.set()
    thread.join()
    achieved = sent / (time.perf_counter() - start)
    if len(delays) < total:
        print(f"  {label}: only {len(delays):,} of {total:,} events arrived", flush=True)
        return
    cuts = statistics.quantiles(delays, n=100)
    print(
        f"  {label:<44} p50 {cuts[49] * 1000:6.2f} ms  p99 {cuts[98] * 1000:6.2f} ms  "
        f"max {max(delays) * 1000:6.2f} ms  ({achieved:,.0f} events/s sent)",
        flush=True,
    )


def raw_latency(bootstrap: str, topic: str, seconds: float) -> None:
    producer = Producer(producer_config(bootstrap))
    consumer = Consumer(consumer_config(bootstrap))
    consumer.assign([TopicPartition(topic, 0, 0)])

    def send(batch: list[Row]) -> None:
        for key, _headers, value in batch:
            producer.produce(topic, value, key, partition=0)
        producer.poll(0)

    def receive() -> list[bytes]:
        messages = consumer.consume(1, 0.1) + consumer.consume(1000, 0)
        return [m.value() or b"" for m in messages if m.error() is None]

    latency("raw confluent-kafka produce -> consume", send, receive, seconds)
    producer.flush(30)
    consumer.close()


def log_latency(log: KafkaLog, topic: str, seconds: float) -> None:
    offsets = {0: 0}

    def send(batch: list[Row]) -> None:
        log.append(topic, [Message(value, key, partition=0) for key, _headers, value in batch])

    def receive() -> list[bytes]:
        if not log.wait(topic, offsets, timeout=0.1):
            return []
        records = log.read(topic, 0, offsets[0])
        if records:
            offsets[0] = records[-1].offset + 1
        return [r.value for r in records if r.value is not None]

    latency("inmotion KafkaLog.append -> wait/read", send, receive, seconds)


def app_latency(bootstrap: str, topic: str, seconds: float) -> None:
    received: queue.SimpleQueue[float] = queue.SimpleQueue()
    app = App("bench", f"kafka://{bootstrap}?timeout=30")

    @app.subscribe(topic, group=f"bench-{topic}")
    async def handle(sent: float) -> None:
        received.put(sent)

    started = threading.Event()
    stop: list[Callable[[], object]] = []

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop.append(lambda: loop.call_soon_threadsafe(stopping.set))
        await app.start()
        started.set()
        await stopping.wait()
        await app.stop()

    def send(batch: list[Row]) -> None:
        app.publish_many_sync(topic, [app.build_event(topic, float(v), key=k.decode()) for k, _h, v in batch])

    def receive() -> list[bytes]:
        try:
            values = [received.get(timeout=0.1)]
        except queue.Empty:
            return []
        while not received.empty():
            values.append(received.get())
        return [b"%.9f" % value for value in values]

    with app:
        server = threading.Thread(target=asyncio.run, args=(serve(),))
        server.start()
        started.wait(60)
        try:
            latency("inmotion App publish -> handler (4 partitions)", send, receive, seconds)
        finally:
            stop[0]()
            server.join()


def app_groups(log: KafkaLog, bootstrap: str, topic: str, groups: int, count: int) -> float:
    """Events handled per second, all groups together, by an App whose `groups` subscriptions
    (each its own consumer group) read `topic`, which another client filled with `count`
    events; from the app's start (joining its groups included) until every group has all."""

    async def run() -> float:
        app = App("bench-groups", f"kafka://{bootstrap}?timeout=30")
        left = [count] * groups
        finished = asyncio.Event()

        def handler(index: int) -> Callable[[dict[str, Any]], Awaitable[None]]:
            async def handle(order: dict[str, Any]) -> None:
                left[index] -= 1
                if not any(left):
                    finished.set()

            return handle

        for index in range(groups):
            app.subscribe(topic, group=f"bench-groups-{uuid.uuid4().hex[:8]}")(handler(index))
        with app:
            start = time.perf_counter()
            await app.start()
            try:
                await asyncio.wait_for(finished.wait(), 600)
            finally:
                await app.stop()
            return count * groups / (time.perf_counter() - start)

    rate = asyncio.run(run())
    print(f"  App, {groups} consumer group(s) of one topic     {rate:>12,.0f} events handled/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 events, one round, 3 s of latency")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of throughput runs; the best of each counts")
    parser.add_argument("--pairs", type=int, default=4, help="inmotion reads per round, each between two raw reads")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each latency run")
    parser.add_argument("--bootstrap", default=f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")
    args = parser.parse_args()
    count = 100_000 if args.quick else args.count
    repeat = 1 if args.quick else args.repeat
    pairs = 2 if args.quick else args.pairs
    seconds = 3.0 if args.quick else args.seconds
    bootstrap, partitions = args.bootstrap, args.partitions

    print(f"building {count:,} CloudEvents records...", flush=True)
    data = rows(count)
    messages = [Message(value, key, headers) for key, headers, value in data]
    size = sum(len(k) + len(v) + sum(len(n) + len(b) for n, b in h) for k, h, v in data) / count
    gc.freeze()  # millions of long-lived input objects: keep the collector from rescanning them
    log = inmotion.connect(f"kafka://{bootstrap}?timeout=30")
    assert isinstance(log, KafkaLog)
    print(
        f"inmotion KafkaLog vs raw confluent-kafka on {bootstrap}: {count:,} events of ~{size:.0f} bytes, "
        f"{partitions} partitions, best of {repeat} rounds",
        flush=True,
    )
    created: list[str] = []

    def fresh_topic(kind: str, partitions: int) -> str:
        name = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
        log.create_topic(name, TopicConfig(partitions=partitions))
        created.append(name)
        return name

    best: dict[str, float] = {}

    def measure(label: str, work: Callable[[], None]) -> None:
        best[label] = max(best.get(label, 0.0), timed(label, count, work))

    raw_produce_label = "raw confluent-kafka produce + flush"
    raw_callback_label = "raw confluent-kafka produce, on_delivery + flush"
    raw_batches_label = f"raw ... on_delivery, flush every {BATCH:,}"
    our_produce_labels = [f"inmotion KafkaLog.append, batches of {BATCH:,}", "inmotion KafkaLog.append, 2 threads"]
    raw_consume_label = "raw confluent-kafka Consumer.consume"
    raw_tuples_label = "raw confluent-kafka consume + record tuples"
    our_consume_label = f"inmotion KafkaLog.read, limit {READ_LIMIT:,}"
    consume_ratios: list[float] = []
    our_rates: list[float] = []
    all_raw_rates: list[float] = []
    tuple_rates: list[float] = []

    def raw_read(topic: str) -> Callable[[], None]:
        return lambda: raw_consume(bootstrap, topic, partitions, count, keep=False)

    def our_read(topic: str) -> Callable[[], None]:
        return lambda: log_consume(log, topic, partitions, count)

    try:
        for round_ in range(1, repeat + 1):
            # Every other round runs the steps in reverse order, so that neither side always goes
            # first (onto a broker still busy with the previous step's records) or last.
            order: Callable[[list[Any]], list[Any]] = (lambda steps: steps) if round_ % 2 else reversed_list
            print(f"round {round_}: produce (until every record is acknowledged)", flush=True)
            raw_topic, raw_callback_topic, raw_batches_topic = (
                fresh_topic(kind, partitions) for kind in ("raw", "raw-callbacks", "raw-batches")
            )
            our_topics = [fresh_topic("inmotion", partitions) for _ in our_produce_labels]
            produce_steps: list[tuple[str, Callable[[], None]]] = [
                (raw_produce_label, lambda: raw_produce(bootstrap, raw_topic, data, callbacks=False)),
                (raw_callback_label, lambda: raw_produce(bootstrap, raw_callback_topic, data, callbacks=True)),
                (raw_batches_label, lambda: raw_produce(bootstrap, raw_batches_topic, data, True, BATCH)),
                *(
                    (label, functools.partial(log_produce, log, topic, messages, threads))
                    for threads, (label, topic) in enumerate(zip(our_produce_labels, our_topics, strict=True), start=1)
                ),
            ]
            for label, work in order(produce_steps):
                measure(label, work)
            # every consumer reads the same topic (the first one produced this round)
            print(f"round {round_}: consume {raw_topic} (every partition from offset 0)", flush=True)
            # untimed, one read of each side: the broker's cache is warm, and KafkaLog's reader of
            # the topic (one consumer for its partitions, made at its first read) exists before the
            # clock starts, as the raw side's consumer is made within each of its reads
            raw_consume(bootstrap, raw_topic, partitions, count, keep=False)
            log_consume(log, raw_topic, partitions, count)
            raw_rates = [timed(raw_consume_label, count, raw_read(raw_topic))]
            for _ in range(pairs):
                our_rates.append(timed(our_consume_label, count, our_read(raw_topic)))
                raw_rates.append(timed(raw_consume_label, count, raw_read(raw_topic)))
                consume_ratios.append(our_rates[-1] / statistics.mean(raw_rates[-2:]))
            tuple_rates.append(
                timed(raw_tuples_label, count, lambda: raw_consume(bootstrap, raw_topic, partitions, count, keep=True))
            )
            all_raw_rates.extend(raw_rates)
            for topic in [raw_topic, raw_callback_topic, raw_batches_topic, *our_topics]:
                log.delete_topic(topic)
                created.remove(topic)
        print(f"end-to-end latency at {RATE:,} events/s for {seconds:g}s:", flush=True)
        raw_latency(bootstrap, fresh_topic("raw-latency", 1), seconds)
        log_latency(log, fresh_topic("inmotion-latency", 1), seconds)
        app_latency(bootstrap, fresh_topic("app-latency", 4), seconds)
        handled = count // 10
        print(f"consumer groups of one app on one topic: {handled:,} events appended by another client", flush=True)
        groups_topic = fresh_topic("app-groups", partitions)
        for at in range(0, handled, BATCH):
            log.append(groups_topic, messages[at : at + BATCH])
        one_group, two_groups = (app_groups(log, bootstrap, groups_topic, n, handled) for n in (1, 2))
    finally:
        for topic in created:
            log.delete_topic(topic)
        log.close()
    ours = max(best[label] for label in our_produce_labels)
    ratios = {
        "produce vs raw fire-and-forget": ours / best[raw_produce_label],
        "produce vs raw with on_delivery": ours / best[raw_callback_label],
        "produce vs raw, same batches": ours / best[raw_batches_label],
        "consume (median of interleaved)": statistics.median(consume_ratios),
        "consume vs raw + record tuples": statistics.median(our_rates) / statistics.median(tuple_rates),
    }
    print(f"best rates (events/s) of {repeat} round(s):")
    for label, rate in best.items():
        print(f"  {label:<44} {rate:>12,.0f}")
    print(f"consume rates (events/s): {len(our_rates)} inmotion reads between {len(all_raw_rates)} raw reads:")
    for label, rates in (
        (raw_consume_label, all_raw_rates),
        (our_consume_label, our_rates),
        (raw_tuples_label, tuple_rates),
    ):
        print(f"  {label:<44} median {statistics.median(rates):>10,.0f}  ({min(rates):,.0f} to {max(rates):,.0f})")
    print(
        f"  each inmotion read / mean of the raw reads around it: {len(consume_ratios)} ratios from "
        f"{min(consume_ratios):.2f}x to {max(consume_ratios):.2f}x"
    )
    print(f"two consumer groups of one app vs one: {two_groups / one_group:.2f}x the events handled/s")
    print("ratios to raw confluent-kafka (target >= 0.80):")
    for name, ratio in ratios.items():
        print(f"  {name:<34} {ratio:.2f}x  {'ok' if ratio >= 0.8 else 'BELOW TARGET'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
