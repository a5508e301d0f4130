"""What the Kafka backend adds to the contract: interop with clients that are not inmotion,
Kafka-side topic settings, errors by name, and no acknowledged record lost across a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

import inmotion
from inmotion.errors import BrokerUnavailable, InmotionError, InvalidConfig, NotAuthorized, UnknownTopic
from inmotion.events import Event
from inmotion.log import Log, Message, Record, TopicConfig, partition_for_key
from inmotion.log.kafka import reader as kafka_reader
from inmotion.log.kafka.errors import translate
from inmotion.runtime import App
from inmotion.testing import eventually, unique_topic

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kafka"


def _order_event(number: int) -> Event:
    return Event.create(
        "shop.order.placed",
        {"order": number, "total": 12.5},
        source="/shop",
        key=f"order-{number}",
        subject=f"order-{number}",
    )


def test_a_plain_confluent_consumer_reads_the_cloudevent(log: Log, kafka_bootstrap: str) -> None:
    topic = unique_topic("interop")
    log.create_topic(topic, TopicConfig(partitions=3))
    event = _order_event(7)
    (position,) = log.append_events(topic, [event])

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_topic("plain")})
    try:
        consumer.assign([TopicPartition(topic, position.partition, position.offset)])
        (msg,) = consumer.consume(1, 30)
    finally:
        consumer.close()
    assert msg.error() is None
    headers = dict(cast(list[tuple[str, bytes]], msg.headers()))
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == event.id.encode()
    assert headers["ce_source"] == b"/shop"
    assert headers["ce_type"] == b"shop.order.placed"
    assert headers["ce_subject"] == b"order-7"
    assert headers["content-type"] == b"application/json"
    assert msg.key() == b"order-7"
    assert msg.value() == b'{"order":7,"total":12.5}'
    assert msg.partition() == partition_for_key(b"order-7", 3)


def test_a_subscription_takes_records_of_other_producers_with_headers_without_value(
    log_url: str, kafka_bootstrap: str
) -> None:
    """Kafka headers may have no value (None); the consumer reads past them, wherever they are."""
    topic = unique_topic("foreign")
    ce: list[tuple[str, str | bytes | None]] = [("ce_specversion", b"1.0"), ("ce_source", b"java"), ("ce_type", b"t")]
    json = ("content-type", b"application/json")
    got: list[dict[str, int]] = []

    async def scenario() -> None:
        with App("foreign", log_url) as app:
            app.log.create_topic(topic, TopicConfig(partitions=1))

            all_in = asyncio.Event()

            @app.subscribe(topic, group=f"{topic}-group")
            async def handle(payload: dict[str, int]) -> None:
                got.append(payload)
                if len(got) == 3:
                    all_in.set()

            await app.start()
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            headers_of: tuple[list[tuple[str, str | bytes | None]], ...] = (
                [*ce, ("ce_id", b"j1"), json, ("trace", None)],
                [*ce, ("ce_id", b"j2"), ("content-type", None), json, ("trace", None)],
                [*ce, ("ce_id", b"j3"), ("trace", None), json],
            )
            for n, headers in enumerate(headers_of, 1):
                producer.produce(topic, value=b'{"n": %d}' % n, headers=headers)
            assert producer.flush(30) == 0
            await asyncio.wait_for(all_in.wait(), 60)
            await app.stop()

    asyncio.run(scenario())
    assert got == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_records_of_another_client_that_are_no_cloudevent_are_dead_lettered_not_retried(
    log_url: str, kafka_bootstrap: str
) -> None:
    """The Kafka backend decodes nothing itself (the client hands over key, value and headers),
    so a record of another client is never a CorruptRecord: one that is no CloudEvent is
    dead-lettered as an InvalidEvent, and value-less headers count as absent for a handler of
    the whole Event (they were an AttributeError, retried forever as a fault)."""
    topic = unique_topic("raw")
    got: list[Event] = []

    async def scenario() -> None:
        with App("raw", log_url) as app:
            app.log.create_topic(topic, TopicConfig(partitions=1))

            @app.subscribe(topic, group=f"{topic}-group", on_corrupt="dead-letter")
            async def handle(event: Event) -> None:
                got.append(event)

            await app.start()
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            producer.produce(topic, value=b"\x00\xffraw bytes", headers=[("trace", None)])
            ce = [("ce_specversion", b"1.0"), ("ce_id", b"j1"), ("ce_source", b"java"), ("ce_type", b"t")]
            producer.produce(topic, value=b'{"n": 1}', headers=[*ce, ("ce_subject", None), ("trace", None)])
            assert producer.flush(30) == 0
            await eventually(
                lambda: bool(got) and app.metrics.value("inmotion_dead_lettered_total") == 1, 60, "both records"
            )
            await app.stop()
            [entry] = [r for r in app.log.read(f"{topic}-group.dlq", 0, 0) if r.value == b"\x00\xffraw bytes"]
            assert dict(entry.headers)["dlq_error_type"] == b"inmotion.errors.InvalidEvent"
            assert "trace" not in dict(entry.headers)  # value-less: absent, as a Message has none

    asyncio.run(scenario())
    assert [(e.id, e.subject, e.data) for e in got] == [("j1", None, {"n": 1})]


@pytest.mark.slow
def test_kafkas_console_consumer_prints_the_event(log: Log) -> None:
    topic = unique_topic("console")
    log.create_topic(topic)
    log.append_events(topic, [_order_event(8)])
    command = [
        str(SCRIPT),
        "console-consumer",
        *("--topic", topic, "--from-beginning", "--max-messages", "1", "--timeout-ms", "60000"),
        *("--property", "print.headers=true", "--property", "print.key=true"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "ce_type:shop.order.placed" in line
    assert "ce_source:/shop" in line
    assert "content-type:application/json" in line
    assert "order-8" in line
    assert line.endswith('{"order":8,"total":12.5}')


@pytest.mark.slow
def test_javas_partitioner_agrees_with_partition_for_key(log: Log) -> None:
    """Records keyed by Kafka's own (Java) console producer land where inmotion puts them."""
    topic = unique_topic("java-keys")
    log.create_topic(topic, TopicConfig(partitions=7))
    keys = [f"customer-{i}" for i in range(60)]
    command = [
        str(SCRIPT),
        "console-producer",
        *("--topic", topic, "--property", "parse.key=true", "--property", "key.separator=|"),
    ]
    lines = "".join(f"{key}|value-of-{key}\n" for key in keys)
    done = subprocess.run(command, input=lines, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    placed = {}
    for partition in range(7):
        for record in log.read(topic, partition, 0):
            assert record.key is not None
            placed[record.key.decode()] = partition
    assert placed == {key: partition_for_key(key.encode(), 7) for key in keys}


def test_librdkafka_partitions_keys_like_partition_for_key(log: Log) -> None:
    topic = unique_topic("keys")
    log.create_topic(topic, TopicConfig(partitions=12))
    keys = [os.urandom(n % 23) for n in range(500)]
    positions = log.append(topic, [Message(b"x", key=key) for key in keys])
    assert [p.partition for p in positions] == [partition_for_key(key, 12) for key in keys]


def test_a_read_of_many_records_carries_every_field(log: Log) -> None:
    """Reads take messages from the consumer a chunk at a time: records across many chunks and
    a limit that is not a multiple of the chunk come out whole and in order."""
    topic = unique_topic("fields")
    log.create_topic(topic, TopicConfig(partitions=1))
    sent = [
        Message(
            f"value-{i}".encode() if i % 7 else None,
            key=f"key-{i}".encode() if i % 5 else None,
            headers=(("ce_id", f"{i}".encode()), ("empty", b""), ("ce_id", b"again")) if i % 3 else (),
        )
        for i in range(1_500)
    ]
    log.append(topic, sent)
    first = log.read(topic, 0, 0, limit=1_100)
    records = first + log.read(topic, 0, first[-1].offset + 1, limit=1_000)
    assert len(first) == 1_100
    assert [(r.topic, r.partition, r.offset) for r in records] == [(topic, 0, i) for i in range(1_500)]
    assert [(r.value, r.key, r.headers) for r in records] == [(m.value, m.key, m.headers) for m in sent]
    assert all(type(r) is Record and type(r.headers) is tuple for r in records)
    stamps = [r.timestamp for r in records]
    assert stamps == sorted(stamps)
    assert abs(stamps[0] - time.time() * 1000) < 600_000


def test_partitions_of_a_topic_read_in_turn_through_one_consumer_lose_and_repeat_nothing(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One consumer fetches every partition of a topic that the log reads; what it gives for
    the partitions not being read waits in their buffers, and a partition whose buffer is full
    is paused until read (a small buffer here, so that pausing and resuming happen often)."""
    monkeypatch.setattr(kafka_reader, "_BUFFERED", 300)
    topic = unique_topic("turns")
    log.create_topic(topic, TopicConfig(partitions=3))
    for partition in range(3):
        log.append(topic, [Message(f"{partition}-{i}".encode(), partition=partition) for i in range(3_000)])

    def read_all(order: list[int], limit: int) -> dict[int, list[bytes | None]]:
        got: dict[int, list[bytes | None]] = {p: [] for p in order}
        while any(len(values) < 3_000 for values in got.values()):
            for partition in order:
                batch = log.read(topic, partition, len(got[partition]), limit=limit)
                assert [r.offset for r in batch] == list(range(len(got[partition]), len(got[partition]) + len(batch)))
                got[partition] += [r.value for r in batch]
        return got

    expected = {p: [f"{p}-{i}".encode() for i in range(3_000)] for p in range(3)}
    assert read_all([0, 1, 2], 250) == expected
    # partition 2 from the start again while the others are buffered or paused, then all again
    assert [r.value for r in log.read(topic, 2, 10, limit=3)] == [b"2-10", b"2-11", b"2-12"]
    assert [r.value for r in log.read(topic, 0, 2_999)] == [b"0-2999"]
    assert read_all([2, 0, 1], 700) == {p: expected[p] for p in [2, 0, 1]}
    assert log.read(topic, 1, 3_000) == []


def test_two_in_order_readers_of_one_partition_each_keep_a_consumer(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two consumer groups of one app read the same partition at their own pace. With one
    consumer for both, each read moved it to the other's offset (a seek and a fresh fetch
    every time: 2 groups on one topic handled 10,000 events/s where one handled 26,000); each
    now keeps a consumer of its own, so only their first reads seek."""
    seeks: list[tuple[int, int]] = []
    seek = kafka_reader.Reader._seek

    def counted(reader: kafka_reader.Reader, partition: int, offset: int) -> kafka_reader.Partition:
        seeks.append((partition, offset))
        return seek(reader, partition, offset)

    monkeypatch.setattr(kafka_reader.Reader, "_seek", counted)
    topic = unique_topic("two-readers")
    log.create_topic(topic, TopicConfig(partitions=1))
    log.append(topic, [Message(b"%d" % i) for i in range(2_000)])
    fast, slow = 0, 0
    while fast < 2_000:
        batch = log.read(topic, 0, fast, limit=100)
        assert [r.offset for r in batch] == list(range(fast, fast + 100))
        fast += 100
        batch = log.read(topic, 0, slow, limit=30)
        assert [r.value for r in batch] == [b"%d" % i for i in range(slow, slow + 30)]
        slow += 30
    assert seeks == [(0, 0), (0, 0)]


def test_a_reader_lets_go_of_a_partition_nobody_reads_through_it(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group that lost a partition to another process stops reading it; the reader that
    fetched it would otherwise keep up to _BUFFERED of its records in memory for good."""
    now = [1_000.0]
    monkeypatch.setattr(kafka_reader, "_monotonic", lambda: now[0])
    topic = unique_topic("idle")
    log.create_topic(topic, TopicConfig(partitions=2))
    for partition in range(2):
        log.append(topic, [Message(b"%d" % i, partition=partition) for i in range(500)])
    assert len(log.read(topic, 0, 0, limit=100)) == 100
    assert len(log.read(topic, 1, 0, limit=100)) == 100
    [reader] = [r for r in log._readers if r.topic == topic]  # type: ignore[attr-defined]
    now[0] += kafka_reader._IDLE_PARTITION / 2
    assert [r.offset for r in log.read(topic, 0, 100, limit=100)] == list(range(100, 200))
    assert sorted(reader.partitions) == [0, 1]
    now[0] += kafka_reader._IDLE_PARTITION / 2 + 1
    assert [r.offset for r in log.read(topic, 0, 200, limit=100)] == list(range(200, 300))
    assert sorted(reader.partitions) == [0]
    # read again later, the partition is fetched again from where its reader asks
    assert [r.offset for r in log.read(topic, 1, 100, limit=400)] == list(range(100, 500))


def test_topic_settings_on_the_broker(log: Log, kafka_bootstrap: str) -> None:
    plain, compacted = unique_topic("plain"), unique_topic("compacted")
    log.create_topic(plain, TopicConfig(partitions=2, retention_bytes=5_000_000))
    log.create_topic(compacted, TopicConfig(partitions=1, compact=True, retention_ms=60_000))
    assert log.describe_topic(plain).config == TopicConfig(partitions=2, retention_bytes=5_000_000)
    assert log.describe_topic(compacted).config == TopicConfig(partitions=1, compact=True, retention_ms=60_000)

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resources = [ConfigResource(ResourceType.TOPIC, plain), ConfigResource(ResourceType.TOPIC, compacted)]
    settings = {
        r.name: {k: e.value for k, e in f.result().items()} for r, f in admin.describe_configs(resources).items()
    }
    assert settings[plain]["message.timestamp.type"] == "LogAppendTime"
    assert settings[plain]["retention.ms"] == "-1"
    assert settings[plain]["retention.bytes"] == "5000000"
    assert settings[plain]["cleanup.policy"] == "delete"
    assert settings[compacted]["cleanup.policy"] == "compact"
    assert settings[compacted]["delete.retention.ms"] == "60000"


def test_reading_leaves_no_consumer_group_behind(log: Log, kafka_bootstrap: str) -> None:
    topic = unique_topic("groups")
    log.create_topic(topic, TopicConfig(partitions=2))
    log.append(topic, [Message(b"x", partition=p) for p in (0, 1)])
    assert len(log.read(topic, 0, 0)) == len(log.read(topic, 1, 0)) == 1
    assert log.wait(topic, {0: 0, 1: 0}, timeout=10)
    assert not [group for group in log.list_groups() if group.startswith("inmotion-reader-")]


def test_appends_to_a_deleted_topic_fail_by_name(log: Log) -> None:
    topic = unique_topic("gone")
    log.create_topic(topic)
    log.delete_topic(topic)
    with pytest.raises(UnknownTopic):
        log.append(topic, [Message(b"x")])
    with pytest.raises(UnknownTopic):
        log.wait(topic, {0: 0}, timeout=1)


def test_unreachable_broker_fails_fast_and_clearly() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1 within 2s"):
        inmotion.connect("kafka://127.0.0.1:1?timeout=2")
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(
    "url",
    ["kafka://", "kafka://127.0.0.1:9092?colour=red", "kafka://127.0.0.1:9092?timeout=soon", "kafka://h:1?readers=0"],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidConfig):
        inmotion.connect(url)


def test_kafka_errors_keep_their_names() -> None:
    denied = translate(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "appending to t", "t")
    assert isinstance(denied, NotAuthorized)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(denied)
    assert "GROUP_AUTHORIZATION_FAILED" in str(translate(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "x"))
    assert isinstance(translate(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), "x", "t"), UnknownTopic)
    assert isinstance(translate(KafkaError(KafkaError._TRANSPORT), "x"), BrokerUnavailable)
    assert isinstance(translate(KafkaError(KafkaError.INVALID_PARTITIONS), "x", "t"), InvalidConfig)
    assert type(translate(KafkaError(KafkaError.UNSUPPORTED_VERSION), "x")) is InmotionError


def _read_all(log: Log, topic: str, partition: int) -> list[Record]:
    end = log.latest_offset(topic, partition)
    records: list[Record] = []
    while (offset := records[-1].offset + 1 if records else 0) < end:
        batch = log.read(topic, partition, offset)
        assert batch, f"nothing read at offset {offset} below the end {end}"
        records += batch
    return records


def _kafka(command: str) -> None:
    subprocess.run([str(SCRIPT), command], check=True, timeout=300, capture_output=True)


@pytest.mark.slow
def test_broker_restart_loses_nothing_acknowledged(log_url: str) -> None:
    """Append and read continuously while the broker is stopped and started again. A log whose
    first append comes while the broker is away (a process started meanwhile) waits for it as
    a delivery does (it failed at once, looking up the topic)."""
    if subprocess.run([str(SCRIPT), "status"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the broker was not started by scripts/kafka, so this test cannot restart it")
    topic = unique_topic("restart")
    acknowledged: dict[tuple[int, int], bytes] = {}
    seen: list[tuple[int, int, bytes | None]] = []
    stop = threading.Event()
    warmed_up = threading.Event()
    appended_after_restart = threading.Event()
    restarted = threading.Event()
    failures: list[BaseException] = []
    give_up = time.monotonic() + 200

    # the fresh log's lookups give up after 2 s, well within the broker's restart
    with inmotion.connect(log_url) as log, inmotion.connect(log_url.split("?")[0] + "?timeout=2") as fresh:
        log.create_topic(topic, TopicConfig(partitions=2))

        def append_fresh() -> None:
            try:
                [position] = fresh.append(topic, [Message(b"fresh", key=b"f")])
                acknowledged[(position.partition, position.offset)] = b"fresh"
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        def produce() -> None:
            batch = 0
            try:
                while not stop.is_set():
                    messages = [Message(f"{batch}:{i}".encode(), key=f"k{i}".encode()) for i in range(20)]
                    for message, position in zip(messages, log.append(topic, messages), strict=True):
                        assert message.value is not None
                        acknowledged[(position.partition, position.offset)] = message.value
                    batch += 1
                    if len(acknowledged) >= 200:
                        warmed_up.set()
                    if restarted.is_set():
                        appended_after_restart.set()
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        def consume() -> None:
            next_offsets = {0: 0, 1: 0}

            def caught_up() -> bool:
                return all(next_offsets[p] >= log.latest_offset(topic, p) for p in next_offsets)

            try:
                while True:
                    try:
                        if stop.is_set() and caught_up():
                            return
                        if time.monotonic() > give_up:
                            raise AssertionError(f"the reader stalled at {next_offsets}")
                        if not log.wait(topic, next_offsets, timeout=0.5):
                            continue
                        for partition, offset in next_offsets.items():
                            for record in log.read(topic, partition, offset):
                                seen.append((record.partition, record.offset, record.value))
                                next_offsets[partition] = record.offset + 1
                    except BrokerUnavailable:  # while the broker is away: try again
                        continue
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
        for thread in threads:
            thread.start()
        try:
            assert warmed_up.wait(timeout=60), failures
            _kafka("down")
            threads.append(threading.Thread(target=append_fresh))
            threads[-1].start()
            _kafka("up")
            restarted.set()
            assert appended_after_restart.wait(timeout=180), "no append succeeded after the restart"
            threads[-1].join(timeout=180)  # the fresh append, before the reader may stop
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=240)
        assert not failures, failures
        assert len(acknowledged) > 200
        assert b"fresh" in acknowledged.values()
        stored = {}
        for partition in (0, 1):
            records = _read_all(log, topic, partition)
            assert [r.offset for r in records] == list(range(len(records))), "gaps or duplicates"
            stored.update({(partition, r.offset): r.value for r in records})
        for position, value in acknowledged.items():
            assert stored[position] == value
        assert sorted(seen) == sorted((p, o, v) for (p, o), v in stored.items())


@pytest.mark.slow
def test_an_app_rides_out_a_broker_restart_and_handles_everything_it_published(log_url: str) -> None:
    """An app publishes and consumes in a group while the broker is stopped and started again:
    every event whose publish returned is handled (at least once) after the restart."""
    if subprocess.run([str(SCRIPT), "status"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the broker was not started by scripts/kafka, so this test cannot restart it")
    topic = unique_topic("app-restart")
    published: set[int] = set()
    handled: set[int] = set()

    async def scenario() -> None:
        with App("restart", log_url, session_timeout=6.0, commit_interval=0.2) as app:
            app.log.create_topic(topic, TopicConfig(partitions=2))

            @app.subscribe(topic, group=f"{topic}-group")
            async def handle(order: dict[str, int]) -> None:
                handled.add(order["n"])

            await app.start()
            restarted = asyncio.Event()
            after_restart = 0

            async def publish() -> None:
                nonlocal after_restart
                n = 0
                while after_restart < 50:
                    await app.publish(topic, {"n": n}, key=f"k{n % 10}")
                    published.add(n)
                    n += 1
                    if restarted.is_set():
                        after_restart += 1
                    await asyncio.sleep(0.005)

            publisher = asyncio.create_task(publish())
            while len(handled) < 100:
                assert not publisher.done(), publisher
                await asyncio.sleep(0.05)
            await asyncio.to_thread(_kafka, "down")
            await asyncio.to_thread(_kafka, "up")
            restarted.set()
            await asyncio.wait_for(publisher, 180)
            deadline = time.monotonic() + 120
            while not published <= handled:
                assert time.monotonic() < deadline, f"never handled: {sorted(published - handled)[:10]}"
                await asyncio.sleep(0.1)
            await app.stop()

    asyncio.run(scenario())
    assert len(published) > 150
