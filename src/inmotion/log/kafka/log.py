"""`kafka://host:port[,host:port]`: the log on Apache Kafka, through confluent-kafka (librdkafka).

How the contract maps onto Kafka:

- Topics are created with the AdminClient, replication factor left to the broker's default,
  `message.timestamp.type=LogAppendTime` (record timestamps are append times that never
  decrease within a partition) and `retention.ms`/`retention.bytes` of -1 for "forever".
  A compacted topic gets `cleanup.policy=compact` and its `retention_ms` also becomes
  `delete.retention.ms`, how long the newest tombstone of a key is kept, as in the other backends.
- One idempotent producer (`acks=all`, batching with `linger.ms`) per log. A keyed record's
  partition is picked by librdkafka's `murmur2_random`, Kafka's Java default, which equals
  `inmotion.log.partition_for_key`; records without key are spread round robin. `append`
  returns only after every record's delivery report. A batch is not atomic (that would take
  Kafka transactions): when some records fail, others may be stored.
- Reads use a small pool of consumers, one per in-order reader of a topic (a consumer group of
  an app, say; up to 4 a topic), each assigned the partitions read through it (never
  subscribed, so no group membership; their private group ids never commit) and keeping what
  it fetched of each partition for that partition's next read.
  Sequential reads keep the consumer's prefetch, so reading a partition in order costs one
  round trip per fetch, not per call; a read that reaches the end it knows of asks the log's
  lookup consumer whether the partition has grown since.
  `wait` assigns an idle consumer to the partitions at the given offsets and blocks for one
  record, so the broker wakes it (no polling).
- Earliest and latest offsets are the partition's watermarks, `offset_for_time` is Kafka's
  ListOffsets by timestamp, group offsets use the AdminClient's consumer group offset APIs
  (Kafka refuses them for a group with live members: those commit through their consumer).
- Retention and compaction run on the broker's own schedule: `enforce_retention` returns 0.
- Errors: unknown topics and partitions, existing topics, bad settings and an unreachable
  broker become inmotion's own errors, authorization and authentication failures
  `NotAuthorized`; anything else is an `InmotionError`. Every message starts with what was
  being done and Kafka's error name, e.g. `appending to orders: TOPIC_AUTHORIZATION_FAILED: ...`.

URL options: `timeout=SECONDS` (how long admin calls, metadata and reads may wait for the broker
before BrokerUnavailable, default 10), `delivery_timeout=SECONDS` (how long `append` keeps
retrying while the broker is away, default 120), `linger_ms=MS` (default 5), `readers=N` (size
of the read pool: consumers kept for reading, default 16), `client_id=NAME`; any
option whose name has a dot is passed to librdkafka as is, e.g.
`security.protocol=SASL_SSL&sasl.mechanism=PLAIN`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from types import MethodType
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from inmotion.errors import (
    BrokerUnavailable,
    Closed,
    InvalidConfig,
    UnknownPartition,
    UnknownTopic,
)
from inmotion.log.base import (
    Log,
    Message,
    PartitionInfo,
    Position,
    Record,
    TopicConfig,
    TopicInfo,
    as_bytes,
    check_blobs,
    check_group_name,
    check_topic_name,
)
from inmotion.log.groups import Coordinator
from inmotion.log.kafka.errors import UNKNOWN_TOPIC, error_of, translate
from inmotion.log.kafka.reader import Reader

T = TypeVar("T")

_logger = logging.getLogger("inmotion.log.kafka")

_OPTIONS = {"timeout", "delivery_timeout", "linger_ms", "readers", "client_id"}
_IDLE_WAITERS = 4
_READERS_PER_TOPIC = 4
"""Readers of one topic (each a consumer) before another one's read takes the least recently used."""
_EARLIEST: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything a `KafkaLog` is configured with; `from_url` builds one from URL options."""

    bootstrap_servers: str
    timeout: float = 10.0
    delivery_timeout: float = 120.0
    linger_ms: float = 5.0
    readers: int = 16
    client_id: str = "inmotion"
    client_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise InvalidConfig("kafka URL names no broker: use kafka://host:port[,host:port]")
        for name in ("timeout", "delivery_timeout"):
            if getattr(self, name) <= 0:
                raise InvalidConfig(f"kafka {name} must be positive, got {getattr(self, name)}")
        if self.linger_ms < 0:
            raise InvalidConfig(f"kafka linger_ms must be >= 0, got {self.linger_ms}")
        if self.readers < 1:
            raise InvalidConfig(f"kafka readers must be >= 1, got {self.readers}")

    def client(self) -> dict[str, Any]:
        """What every librdkafka client of this log is configured with."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "reconnect.backoff.max.ms": 1000,
            # metadata taken while a broker restarts can lack partitions: refresh it often
            "topic.metadata.refresh.interval.ms": 5000,
            "logger": _logger,
            **dict(self.client_options),
        }


def _result(future: Future[T], doing: str, timeout: float, topic: str | None = None) -> T:
    try:
        return future.result(timeout=timeout + 5)
    except KafkaException as exc:
        error = error_of(exc)
        if error is None:
            raise
        raise translate(error, doing, topic) from exc
    except TimeoutError as exc:
        raise BrokerUnavailable(f"{doing}: no answer from Kafka within {timeout:g}s") from exc


def _riding_out(timeout: float, call: Callable[[], T]) -> T:
    """Retry an idempotent lookup through transient errors (a partition's leader moving, a
    broker restarting) until `timeout`; then its BrokerUnavailable stands."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return call()
        except BrokerUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _watermarks(consumer: Any, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """(earliest, latest) offsets of a partition, asked of its leader."""

    def ask() -> tuple[int, int]:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
        except KafkaException as exc:
            error = error_of(exc)
            if error is None:
                raise
            if error.code() == KafkaError._UNKNOWN_PARTITION:
                # librdkafka's metadata of the topic went stale (taken while a broker restarted):
                # ask for it now rather than at the next periodic refresh
                with contextlib.suppress(KafkaException):
                    consumer.list_topics(topic=topic, timeout=timeout)
            raise translate(error, f"looking up offsets of {topic}[{partition}]", topic) from exc
        return low, high

    return _riding_out(timeout, ask)


class _Delivery:
    """The delivery reports of one `append`: the delivered message of each record, in order."""

    __slots__ = ("delivered", "report")

    def __init__(self, count: int) -> None:
        delivered: list[Any] = [None] * count

        def report(index: int, _error: object, msg: Any) -> None:
            # the hot path of append (once per record): a store, nothing else; the delivered
            # message carries its error, partition and offset
            delivered[index] = msg

        self.delivered = delivered
        self.report = report

    @property
    def done(self) -> bool:
        return None not in self.delivered

    def error(self) -> KafkaError | None:
        return next((error for msg in self.delivered if (error := msg.error()) is not None), None)

    def positions(self) -> list[Position]:
        return [Position(msg.partition(), msg.offset()) for msg in self.delivered]


class KafkaLog(Log):
    def __init__(self, config: KafkaConfig, url: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.url = url or f"kafka://{config.bootstrap_servers}"
        self._closed = False
        self._spread = itertools.count()
        self._partitions: dict[str, int] = {}
        self._readers: collections.OrderedDict[Reader, None] = collections.OrderedDict()
        """Every reader, the least recently used first."""
        self._idle_waiters: list[Any] = []
        self._lock = threading.Lock()
        self._appending = 0
        self._members: dict[str, Any] = {}
        """Group consumers of live members joined through this log, by group: commits go through them."""
        client = config.client()
        self._admin = AdminClient(client)
        self._check_reachable()
        self._producer = self._new_producer()
        self._meta = Consumer(self._consumer_config())

    @classmethod
    def from_url(cls, url: str, netloc: str, options: Mapping[str, str]) -> KafkaLog:
        unknown = {name for name in options if name not in _OPTIONS and "." not in name}
        if unknown:
            raise InvalidConfig(f"unknown kafka URL option(s): {', '.join(sorted(unknown))}")
        try:
            numbers: dict[str, Any] = {
                name: float(options[name]) for name in ("timeout", "delivery_timeout", "linger_ms") if name in options
            }
            if "readers" in options:
                numbers["readers"] = int(options["readers"])
        except ValueError as exc:
            raise InvalidConfig(f"kafka URL options must be numbers: {exc}") from exc
        config = KafkaConfig(
            bootstrap_servers=netloc,
            client_id=options.get("client_id", "inmotion"),
            client_options=tuple((k, v) for k, v in sorted(options.items()) if "." in k),
            **numbers,
        )
        return cls(config, url)

    # --- clients --------------------------------------------------------------------------
    def _consumer_config(self) -> dict[str, Any]:
        return {
            **self.config.client(),
            # private and never joined or committed: the group exists only to please librdkafka
            "group.id": f"inmotion-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Never pause fetching for a second when the queue was full. Fetches stay at the
            # default 1 MB a partition: with 4 MB, a reader of one partition had to sort up to
            # 4 MB of each other partition into buffers first (bench/kafka.py: 0.76x raw
            # confluent-kafka with 4 MB, 0.8 to 1.0x with 1 MB).
            "queued.max.messages.kbytes": 16384,
            "fetch.queue.backoff.ms": 10,
            # A fetch that the broker holds for new data now and then stalls an in-order read
            # for that long (seen here at the end of partitions): keep it short.
            "fetch.wait.max.ms": 100,
        }

    def _check_reachable(self) -> None:
        timeout = self.config.timeout
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {self.config.bootstrap_servers} within {timeout:g}s ({exc.args[0]})"
            ) from exc

    def _new_producer(self) -> Any:
        return Producer(
            {
                **self.config.client(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": self.config.linger_ms,
                "partitioner": "murmur2_random",
                "message.timeout.ms": int(self.config.delivery_timeout * 1000),
                "queue.buffering.max.messages": 1_000_000,
                "error_cb": self._producer_error,
            }
        )

    def _producer_error(self, error: KafkaError) -> None:
        # transport errors are retried by librdkafka until delivery_timeout; appends report them
        _logger.warning("kafka producer: %s", error)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the log is closed")

    def _admin_call(self, doing: str, call: Callable[[], T], topic: str | None = None) -> T:
        try:
            return call()
        except KafkaException as exc:
            error = error_of(exc)
            if error is None:
                raise
            raise translate(error, doing, topic) from exc

    def _metadata_partitions(self, topic: str) -> int | None:
        """The topic's partition count from fresh metadata: None if there is no such topic, 0
        while some partition has no leader yet (just created)."""
        metadata = self._admin_call(
            f"looking up topic {topic}",
            lambda: self._admin.list_topics(topic=topic, timeout=self.config.timeout),
            topic,
        )
        found = metadata.topics.get(topic)
        if found is None or (found.error is not None and found.error.code() in UNKNOWN_TOPIC):
            return None
        if found.error is not None:
            raise translate(found.error, f"looking up topic {topic}", topic)
        if any(p.leader < 0 for p in found.partitions.values()):
            return 0
        return len(found.partitions)

    def _partition_count(self, topic: str, patience: float = 0.0) -> int:
        """The topic's partition count (cached); asking the broker, through transient errors
        for up to `patience` seconds (a broker restarting)."""
        self._check_open()
        count = self._partitions.get(topic)
        if count is None:
            count = _riding_out(patience, lambda: self._metadata_partitions(topic))
            if not count:
                raise UnknownTopic(topic)
            self._partitions[topic] = count
        return count

    def _check_partition(self, topic: str, partition: int) -> None:
        if not 0 <= partition < self._partition_count(topic):
            raise UnknownPartition(topic, partition)

    def _forget(self, topic: str) -> None:
        self._partitions.pop(topic, None)
        with self._lock:
            readers = [reader for reader in self._readers if reader.topic == topic]
            for reader in readers:
                del self._readers[reader]
        for reader in readers:
            reader.close()

    def _await(self, doing: str, ready: Callable[[], bool]) -> None:
        """Poll until the broker shows a change: KRaft brokers apply metadata a little later
        than the controller answers, and a new partition takes a moment to get its leader."""

        def check() -> None:
            if not ready():
                raise BrokerUnavailable(f"{doing}: the broker did not show it within {self.config.timeout:g}s")

        _riding_out(self.config.timeout, check)

    # --- topics ---------------------------------------------------------------------------
    def create_topic(self, name: str, config: TopicConfig = TopicConfig()) -> None:
        check_topic_name(name)
        self._check_open()
        settings = {
            "cleanup.policy": config.cleanup_policy,
            "retention.ms": str(config.retention_ms or -1),
            "retention.bytes": str(config.retention_bytes or -1),
            "message.timestamp.type": "LogAppendTime",
        }
        if config.compact and config.retention_ms is not None:
            settings["delete.retention.ms"] = str(config.retention_ms)
        timeout = self.config.timeout
        futures = self._admin.create_topics(
            [NewTopic(name, num_partitions=config.partitions, replication_factor=-1, config=settings)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        _result(futures[name], f"creating topic {name}", timeout, name)
        self._partitions.pop(name, None)

        def led() -> bool:
            # leaders in the metadata, and each partition's leader answers for it
            return self._metadata_partitions(name) == config.partitions and bool(
                self._list_offsets(name, config.partitions, _LATEST)
            )

        self._await(f"creating topic {name}", led)

    def set_retention(self, name: str, retention_ms: int) -> None:
        """Change how long `name` keeps records (Kafka's `retention.ms`)."""
        self._check_open()
        timeout = self.config.timeout
        entry = ConfigEntry("retention.ms", str(retention_ms), incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[entry])
        futures = self._admin.incremental_alter_configs([resource], request_timeout=timeout)
        _result(futures[resource], f"changing the retention of topic {name}", timeout, name)

    def delete_topic(self, name: str) -> None:
        self._check_open()
        timeout = self.config.timeout
        futures = self._admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
        _result(futures[name], f"deleting topic {name}", timeout, name)
        self._forget(name)
        self._await(f"deleting topic {name}", lambda: self._metadata_partitions(name) is None)

    def list_topics(self) -> list[str]:
        self._check_open()
        metadata = self._admin_call("listing topics", lambda: self._admin.list_topics(timeout=self.config.timeout))
        # Kafka's internal topics (__consumer_offsets, __transaction_state, ...) are not ours
        return sorted(name for name, t in metadata.topics.items() if not name.startswith("__") and t.error is None)

    def describe_topic(self, name: str) -> TopicInfo:
        self._check_open()
        count = self._metadata_partitions(name)
        if not count:
            raise UnknownTopic(name)
        self._partitions[name] = count
        timeout = self.config.timeout
        resource = ConfigResource(ResourceType.TOPIC, name)
        futures = self._admin.describe_configs([resource], request_timeout=timeout)
        entries = _result(futures[resource], f"describing topic {name}", timeout, name)
        settings = {key: entry.value for key, entry in entries.items()}
        earliest = self._list_offsets(name, count, _EARLIEST)
        latest = self._list_offsets(name, count, _LATEST)
        config = TopicConfig(
            partitions=count,
            retention_ms=_positive(settings.get("retention.ms")),
            retention_bytes=_positive(settings.get("retention.bytes")),
            compact="compact" in (settings.get("cleanup.policy") or ""),
        )
        partitions = tuple(PartitionInfo(p, earliest[p], latest[p]) for p in range(count))
        return TopicInfo(name, config, partitions)

    def _list_offsets(self, topic: str, count: int, spec: Any) -> dict[int, int]:
        timeout = self.config.timeout
        futures = self._admin.list_offsets(
            {TopicPartition(topic, p): spec for p in range(count)}, request_timeout=timeout
        )
        return {
            tp.partition: _result(future, f"listing offsets of {topic}", timeout, topic).offset
            for tp, future in futures.items()
        }

    def partition_count(self, topic: str) -> int:
        return self._partition_count(topic)

    # --- records --------------------------------------------------------------------------
    def append(self, topic: str, messages: Sequence[Message]) -> list[Position]:
        # an append waits for the broker as long as its records' delivery would: a process
        # that starts appending while the broker restarts must not fail where one running on
        # (its topic's partitions known) would not
        count = self._partition_count(topic, patience=self.config.delivery_timeout)
        if not check_blobs([m.key for m in messages], [m.value for m in messages]):
            # confluent-kafka takes bytes, not bytearray
            messages = [Message(as_bytes(m.value), as_bytes(m.key), m.headers, m.partition) for m in messages]
        for message in messages:  # first, so that a bad partition leaves nothing written
            if message.partition is not None and not 0 <= message.partition < count:
                raise UnknownPartition(topic, message.partition)
        delivery = _Delivery(len(messages))
        report = delivery.report
        producer = self._producer
        produce = producer.produce
        bind = MethodType  # report bound to an index: cheaper to make and call than a partial
        spread = self._spread
        with self._lock:
            self._appending += 1
        try:
            for index, message in enumerate(messages):  # the hot loop
                value, key, headers, partition = message.value, message.key, message.headers, message.partition
                if partition is None:
                    # keyed: librdkafka's murmur2_random picks, as Kafka's Java client would
                    partition = -1 if key is not None else next(spread) % count
                on_delivery = bind(report, index)
                header_list: Any = list(headers) if headers else None
                while True:
                    try:
                        produce(topic, value, key, partition, on_delivery=on_delivery, headers=header_list)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.05)
            self._await_delivery(delivery)
        finally:
            with self._lock:
                self._appending -= 1
        error = delivery.error()
        if error is not None:
            if error.code() in UNKNOWN_TOPIC:
                self._forget(topic)
            if error.fatal():
                # an idempotent producer that lost its sequence is unusable: the next append
                # gets a fresh one (this append's records may or may not be stored)
                with self._lock:
                    if self._producer is producer:
                        self._producer = self._new_producer()
            raise translate(error, f"appending to {topic}", topic)
        return delivery.positions()

    def _await_delivery(self, delivery: _Delivery) -> None:
        producer = self._producer
        deadline = time.monotonic() + self.config.delivery_timeout + self.config.timeout
        while not delivery.done:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"no delivery report within {self.config.delivery_timeout:g}s")
            if self._appending == 1:
                # alone: flush sends at once instead of lingering, and serves our reports
                producer.flush(0.1)
            else:
                # others append too: poll serves reports (anyone's) and lets linger batch them
                producer.poll(0.01)

    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        self._check_partition(topic, partition)
        if limit <= 0:
            return []
        latest = functools.partial(self.latest_offset, topic, partition)
        while True:
            reader = self._reader(topic, partition, offset)
            with reader.lock:
                if reader.closed:
                    continue
                try:
                    return reader.read(partition, max(offset, 0), limit, self.config.timeout, latest)
                except BrokerUnavailable:
                    reader.stuck = True
                    raise
                finally:
                    if reader.stuck:
                        self._drop_reader(reader)

    def read_now(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record] | None:
        """The records a reader at `offset` has fetched already: no network round trip (the
        high watermark `read` asks for when it has caught up), no waiting for the reader's lock.
        None before the first read at `offset` and while another thread reads. A reader that
        stopped fetching (after a broker restart) hands over nothing here: `read` notices it
        and replaces it."""
        offset = max(offset, 0)
        with self._lock:
            reader = next((r for r in self._readers if r.topic == topic and r.at(partition) == offset), None)
        if reader is None or not reader.lock.acquire(blocking=False):
            return None
        try:
            return None if reader.closed else reader.read_now(partition, offset, limit)
        finally:
            reader.lock.release()

    def _drop_reader(self, reader: Reader) -> None:
        """Close a reader whose consumer went bad; a fresh one (fresh metadata, fresh
        connections) takes its place at the next read. Called holding the reader's lock."""
        with self._lock:
            self._readers.pop(reader, None)
        reader.closed = True
        reader.consumer.close()

    def _reader(self, topic: str, partition: int, offset: int) -> Reader:
        """The topic's reader that stands at `offset` in the partition, so that each of several
        in-order readers of one partition (consumer groups of one app, say) keeps a consumer
        of its own instead of making each other seek. Else one that has not read the
        partition; else a new one, up to _READERS_PER_TOPIC; else the least recently used."""
        offset = max(offset, 0)

        def choose() -> Reader | None:
            mine = [r for r in self._readers if r.topic == topic]
            reader = next((r for r in mine if r.at(partition) == offset), None) or next(
                (r for r in mine if r.at(partition) is None), None
            )
            if reader is None and len(mine) >= _READERS_PER_TOPIC:
                reader = mine[0]
            if reader is not None:
                self._readers.move_to_end(reader)
            return reader

        with self._lock:
            reader = choose()
        if reader is not None:
            return reader
        fresh = Reader(self._consumer_config(), topic)
        evicted = []
        with self._lock:
            reader = choose()
            if reader is None:
                reader = fresh
                self._readers[fresh] = None
                while len(self._readers) > self.config.readers:
                    evicted.append(self._readers.popitem(last=False)[0])
            else:
                evicted.append(fresh)
        for old in evicted:
            old.close()
        return reader

    def wait(self, topic: str, positions: Mapping[int, int], timeout: float) -> bool:
        for partition in positions:
            self._check_partition(topic, partition)
        with self._lock:
            consumer = self._idle_waiters.pop() if self._idle_waiters else None
        if consumer is None:
            # a waiter wants the broker to hold its fetch until there is data
            consumer = Consumer({**self._consumer_config(), "auto.offset.reset": "latest", "fetch.wait.max.ms": 500})
        try:
            consumer.assign([TopicPartition(topic, p, max(o, 0)) for p, o in positions.items()])
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                for msg in consumer.consume(1, remaining):
                    error = msg.error()
                    if error is None or error.code() in UNKNOWN_TOPIC:
                        return True  # a record, or a deleted topic that the next read reports
                    _logger.debug("waiting on %s: %s", topic, error)
            # The consumer saw nothing. Before saying so, ask the broker: a consumer that is
            # still reconnecting (after a broker restart, say) must not hide records.
            return self._any_past(topic, positions)
        finally:
            consumer.unassign()
            with self._lock:
                keep = not self._closed and len(self._idle_waiters) < _IDLE_WAITERS
                if keep:
                    self._idle_waiters.append(consumer)
            if not keep:
                consumer.close()

    def _any_past(self, topic: str, positions: Mapping[int, int]) -> bool:
        for partition, offset in positions.items():
            try:
                _, high = self._meta.get_watermark_offsets(TopicPartition(topic, partition), timeout=1.0, cached=False)
            except KafkaException:
                return False  # the broker is away: nothing to read for now
            if high > offset:
                return True
        return False

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        self._check_partition(topic, partition)
        meta = self._meta
        try:
            return _watermarks(meta, topic, partition, self.config.timeout)
        except BrokerUnavailable:
            # a fresh consumer for the next lookups; the old one goes when no thread uses it
            with self._lock:
                if self._meta is meta and not self._closed:
                    self._meta = Consumer(self._consumer_config())
            raise

    def earliest_offset(self, topic: str, partition: int) -> int:
        return self._watermarks(topic, partition)[0]

    def latest_offset(self, topic: str, partition: int) -> int:
        return self._watermarks(topic, partition)[1]

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        self._check_partition(topic, partition)
        doing = f"looking up {topic}[{partition}] by time"

        def ask() -> Any:
            (found,) = self._admin_call(
                doing,
                lambda: self._meta.offsets_for_times(
                    [TopicPartition(topic, partition, max(timestamp_ms, 0))], timeout=self.config.timeout
                ),
                topic,
            )
            if found.error is not None:
                raise translate(found.error, doing, topic)
            return found

        found = _riding_out(self.config.timeout, ask)
        # -1: no record that late; the answer is then the high watermark
        return int(found.offset) if found.offset >= 0 else self.latest_offset(topic, partition)

    # --- consumer group offsets ----------------------------------------------------------
    def commit(self, group: str, topic: str, offsets: Mapping[int, int], *, forward_only: bool = False) -> None:
        # forward_only is not needed here: a consumer commits as a member of its group, whose
        # commits the broker refuses once its generation is over
        check_group_name(group)
        for partition in offsets:
            self._check_partition(topic, partition)
        if not offsets:
            return
        with self._lock:
            member = self._members.get(group)
        if member is not None:
            self._commit_as_member(member, group, topic, offsets)
            return
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
        timeout = self.config.timeout
        futures = self._admin.alter_consumer_group_offsets([request], request_timeout=timeout)
        result = _result(futures[group], f"committing offsets of group {group}", timeout, topic)
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise translate(tp.error, f"committing offsets of group {group}", topic)

    def _commit_as_member(self, consumer: Any, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        doing = f"committing offsets of group {group}"
        try:
            result = consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            error = error_of(exc)
            if error is None:
                raise
            raise translate(error, doing, topic) from exc
        for tp in result or ():
            if tp.error is not None:
                raise translate(tp.error, doing, topic)

    def attach_member(self, group: str, consumer: Any) -> None:
        """Route `commit`s for `group` through `consumer`, a live member of it (Kafka refuses
        offset changes from the admin client while the group has members)."""
        with self._lock:
            self._members[group] = consumer

    def detach_member(self, group: str, consumer: Any) -> None:
        with self._lock:
            if self._members.get(group) is consumer:
                del self._members[group]

    def describe_groups(self, groups: Sequence[str]) -> dict[str, Any]:
        """Kafka's descriptions of consumer groups (state, members and their assignments), in
        one request."""
        for group in groups:
            check_group_name(group)
        self._check_open()
        if not groups:
            return {}
        timeout = self.config.timeout
        futures = self._admin.describe_consumer_groups(list(groups), request_timeout=timeout)
        return {group: _result(futures[group], f"describing consumer group {group}", timeout) for group in groups}

    def committed(self, group: str, topic: str) -> dict[int, int]:
        check_group_name(group)
        count = self._partition_count(topic)
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(count)])
        timeout = self.config.timeout
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=timeout)
        result = _result(futures[group], f"reading offsets of group {group}", timeout, topic)
        found = {}
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise translate(tp.error, f"reading offsets of group {group}", topic)
            if tp.offset >= 0:
                found[tp.partition] = tp.offset
        return found

    def group_topics(self, group: str) -> list[str]:
        check_group_name(group)
        self._check_open()
        timeout = self.config.timeout
        request = ConsumerGroupTopicPartitions(group)  # no partitions: all of them
        futures = self._admin.list_consumer_group_offsets([request], request_timeout=timeout)
        result = _result(futures[group], f"reading offsets of group {group}", timeout)
        return sorted({tp.topic for tp in result.topic_partitions if tp.error is None and tp.offset >= 0})

    def list_groups(self) -> list[str]:
        self._check_open()
        timeout = self.config.timeout
        listed = _result(self._admin.list_consumer_groups(request_timeout=timeout), "listing consumer groups", timeout)
        return sorted({group.group_id for group in listed.valid})

    # --- maintenance ----------------------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Kafka applies retention and compaction itself, on its own schedule: nothing to do."""
        return 0

    def group_coordinator(self) -> Coordinator:
        from inmotion.log.kafka.groups import KafkaCoordinator  # it builds on this module

        return KafkaCoordinator(self)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            readers = list(self._readers)
            self._readers.clear()
            waiters, self._idle_waiters = self._idle_waiters, []
        remaining = self._producer.flush(self.config.timeout)
        if remaining:
            _logger.warning("closing the kafka log with %d records not delivered", remaining)
        for reader in readers:
            reader.close()
        for consumer in [*waiters, self._meta]:
            consumer.close()


def _positive(value: str | None) -> int | None:
    if value is None:
        return None
    number = int(value)
    return number if number > 0 else None
