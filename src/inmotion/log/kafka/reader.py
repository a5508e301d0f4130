"""Reading a Kafka topic through one consumer: what it fetches of each partition waits in that
partition's buffer for the partition's next in-order read (see `Reader`)."""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from inmotion.log.base import Record
from inmotion.log.kafka.errors import UNKNOWN_TOPIC, translate

_logger = logging.getLogger("inmotion.log.kafka")

_CHUNK = 64
"""Messages taken from a consumer at a time while reading (see `Reader._take`)."""
_IDLE_PARTITION = 60.0
"""Seconds a reader keeps fetching a partition that nobody reads through it (its group lost
the partition, say) before it lets the partition go with what it buffered of it."""
_monotonic = time.monotonic
_BUFFERED = 20_000
"""Records a reader keeps of a partition ahead of its reads before pausing its fetches."""
_PARTITION_EOF = KafkaError._PARTITION_EOF
# confluent-kafka's message accessors, mapped over a consumer's messages while reading
_error, _partition, _offset, _timestamp, _key, _value, _headers = (
    KafkaMessage.error,
    KafkaMessage.partition,
    KafkaMessage.offset,
    KafkaMessage.timestamp,
    KafkaMessage.key,
    KafkaMessage.value,
    KafkaMessage.headers,
)
_second = operator.itemgetter(1)


class Partition:
    """Where a topic's reader stands in one partition, and the records fetched past that."""

    __slots__ = ("buffered", "chunks", "end", "fetched", "paused", "position", "read_at")

    def __init__(self, offset: int) -> None:
        self.position = offset
        """The offset the next in-order `read` starts at: past the last record handed out."""
        self.fetched = offset
        """Past the last record the consumer gave us (handed out or buffered)."""
        self.end = -1
        """The high watermark at the consumer's last end-of-partition event for this partition."""
        self.chunks: collections.deque[list[Record]] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.read_at = _monotonic()


class Reader:
    """One consumer for a topic, assigned each partition read so far, remembering where each
    stands so that in-order reads stream.

    One consumer fetches for every partition (a consumer per partition read a 4-partition
    topic at about 0.6x the rate of one consumer: their fetch threads and queues compete for
    the cores). What it gives for partitions other than the one being read is kept in that
    partition's buffer for its next read; a partition holding _BUFFERED records is paused
    until a read takes some.

    `read` returns what the partition held when it was called, up to `limit`: it waits for
    fetches while the partition is below the high watermark. The consumer's end-of-partition
    events say when it has fetched up to the watermark, which also covers offsets that hold no
    record (transaction markers, compacted gaps).
    """

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.consumer = Consumer({**config, "enable.partition.eof": True})
        self.topic = topic
        self.partitions: dict[int, Partition] = {}
        self.stuck = False
        self.lock = threading.Lock()
        self.closed = False
        self.swept_at = _monotonic()

    def read(self, partition: int, offset: int, limit: int, timeout: float, latest: Callable[[], int]) -> list[Record]:
        """`latest` asks the broker for the partition's high watermark on another connection
        than this consumer's, which may be holding a fetch for up to fetch.wait.max.ms (a broker
        answers one connection's requests in order)."""
        consumer = self.consumer
        self._let_idle_partitions_go()
        state = self.partitions.get(partition)
        known = -1
        if state is None or offset != state.position:
            # random access: nothing to assign for at or past the end (an offset past the
            # end would make the consumer reset to the earliest offset). Asked through `latest`:
            # a reader that has caught up has a fetch held on its own connection, behind which
            # its own question waited up to fetch.wait.max.ms.
            known = latest()
            if offset >= known:
                return []
            state = self._seek(partition, offset)
        records = self._take(partition, state, limit)
        if len(records) == limit:
            return records
        # Where the partition ended when we were called: the cached high watermark (from the
        # last fetch) or the one just asked for when ahead of us, else the broker's answer.
        high = max(known, consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)[1])
        if state.fetched >= high:
            high = latest()
        deadline = time.monotonic() + timeout
        while len(records) < limit and state.fetched < high and state.end < high:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            first = consumer.consume(1, remaining)
            if first:
                self._sort(first)
                records += self._take(partition, state, limit - len(records))
        if not records and state.fetched < high:
            # records below the watermark never came (a consumer stuck after a broker restart,
            # or only markers there): the log replaces this reader
            self.stuck = True
        return records

    def at(self, partition: int) -> int | None:
        """Where the next in-order read of the partition starts; None if it was not read."""
        state = self.partitions.get(partition)
        return None if state is None else state.position

    def read_now(self, partition: int, offset: int, limit: int) -> list[Record] | None:
        """What the consumer has fetched from `offset` on, without waiting; None if it is not
        reading there (a seek asks the broker)."""
        self._let_idle_partitions_go()
        state = self.partitions.get(partition)
        if state is None or offset != state.position or limit <= 0:
            return None
        return self._take(partition, state, limit)

    def _let_idle_partitions_go(self) -> None:
        now = _monotonic()
        if now - self.swept_at < _IDLE_PARTITION:
            return
        self.swept_at = now
        idle = [partition for partition, state in self.partitions.items() if now - state.read_at >= _IDLE_PARTITION]
        if idle:
            self.consumer.incremental_unassign([TopicPartition(self.topic, partition) for partition in idle])
            for partition in idle:
                del self.partitions[partition]

    def _seek(self, partition: int, offset: int) -> Partition:
        """Start fetching `partition` at `offset`. Reassigning the partition (rather than
        `seek`, which librdkafka refuses until the partition's first fetch has started) also
        drops what the consumer had fetched of it."""
        consumer = self.consumer
        if partition in self.partitions:
            consumer.incremental_unassign([TopicPartition(self.topic, partition)])
        consumer.incremental_assign([TopicPartition(self.topic, partition, offset)])
        state = self.partitions[partition] = Partition(offset)
        return state

    def _take(self, partition: int, state: Partition, limit: int) -> list[Record]:
        """Up to `limit` records of the partition from its buffer and from what the consumer
        holds already, taken _CHUNK messages at a time: a chunk's messages become records while
        they are still in the CPU's caches, and are freed before the garbage collector moves
        them to an older generation to be rescanned there (bench/kafka.py's consume loop read
        at about 0.75x raw confluent-kafka taking 256 or 1,024 at a time, 0.8 to 0.9x taking
        64)."""
        consume = self.consumer.consume
        while state.buffered < limit:
            messages = consume(min(limit - state.buffered, _CHUNK), 0)
            if not messages:
                break
            self._sort(messages)
        records: list[Record] = []
        chunks = state.chunks
        while chunks and len(records) < limit:
            chunk = chunks.popleft()
            room = limit - len(records)
            if len(chunk) > room:
                chunks.appendleft(chunk[room:])
                chunk = chunk[:room]
            records += chunk
        state.read_at = _monotonic()
        if records:
            state.buffered -= len(records)
            state.position = records[-1].offset + 1
        if state.paused and state.buffered < _BUFFERED:
            self.consumer.resume([TopicPartition(self.topic, partition)])
            state.paused = False
        return records

    def _sort(self, messages: list[Any]) -> None:
        """Buffer the consumer's messages by partition. A fetch's messages come in runs of one
        partition; a run costs a few calls, not a call per message."""
        if any(map(_error, messages)):
            self._events([msg for msg in messages if msg.error() is not None])
            messages = [msg for msg in messages if msg.error() is None]
            if not messages:
                return
        partitions = list(map(_partition, messages))
        if partitions.count(partitions[0]) == len(partitions):
            runs: Any = ((partitions[0], messages),)
        else:
            runs = ((partition, list(run)) for partition, run in itertools.groupby(messages, _partition))
        for partition, run in runs:
            state = self.partitions.get(partition)
            if state is None:
                continue
            records = self._records(partition, run)
            state.chunks.append(records)
            state.buffered += len(records)
            state.fetched = records[-1].offset + 1
            if state.buffered >= _BUFFERED and not state.paused:
                self.consumer.pause([TopicPartition(self.topic, partition)])
                state.paused = True

    def _records(self, partition: int, messages: list[Any]) -> list[Record]:
        # The hot path of read (once per record). Each field is taken by mapping confluent-kafka's
        # accessors over the messages and the records are made by mapping Record over them, so
        # that no Python bytecode runs per record. A message without headers has None for them.
        headers: list[Any] = list(map(_headers, messages))
        if not all(headers):
            headers = [h or () for h in headers]
        return list(
            map(
                Record,
                itertools.repeat(self.topic),
                itertools.repeat(partition),
                map(_offset, messages),
                map(_second, map(_timestamp, messages)),
                map(_key, messages),
                map(_value, messages),
                map(tuple, headers),
            )
        )

    def _events(self, messages: list[Any]) -> None:
        """End-of-partition events and errors that the consumer reports as messages."""
        for msg in messages:
            error = msg.error()
            if error.code() == _PARTITION_EOF:
                state = self.partitions.get(msg.partition())
                if state is not None:
                    state.end = msg.offset()
            elif error.code() in UNKNOWN_TOPIC:
                raise translate(error, f"reading {self.topic}", self.topic)
            else:
                _logger.debug("reading %s[%d]: %s", self.topic, msg.partition(), error)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.consumer.close()
