"""The log contract as reusable pytest test cases.

A backend's test module subclasses `LogContract` and provides a `log` fixture that yields a
fresh, empty-enough `Log` (topic names are unique per test, so a shared broker is fine):

    class TestSqliteLog(LogContract):
        @pytest.fixture
        def log(self, tmp_path):
            with inmotion.connect(f"sqlite:///{tmp_path}/log.db") as log:
                yield log

Backends whose retention runs on the broker's own clock set `manual_retention = False`.
"""

from __future__ import annotations

import collections
import gc
import threading
import time
import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmotion.errors import InvalidConfig, TopicExists, UnknownPartition, UnknownTopic
from inmotion.events import Event
from inmotion.log import Log, Message, TopicConfig, partition_for_key
from inmotion.testing.properties import on_a_backend


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _fill(log: Log, topic: str, count: int, partition: int = 0) -> None:
    log.append(topic, [Message(f"v{i}".encode(), partition=partition) for i in range(count)])


class LogContract:
    """Every backend passes these. Subclasses provide the `log` fixture."""

    manual_retention: ClassVar[bool] = True
    """True when `enforce_retention()` applies retention and compaction on the spot."""

    @pytest.fixture
    def topic(self, log: Log) -> str:
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=3))
        return name

    # --- topics ---------------------------------------------------------------------------
    def test_create_describe_list_delete(self, log: Log) -> None:
        name = unique_topic()
        config = TopicConfig(partitions=4, retention_ms=3_600_000, retention_bytes=10_000_000)
        log.create_topic(name, config)
        assert name in log.list_topics()
        info = log.describe_topic(name)
        assert info.name == name
        assert info.config == config
        assert [(p.partition, p.earliest, p.latest) for p in info.partitions] == [(i, 0, 0) for i in range(4)]
        assert log.partition_count(name) == 4
        log.delete_topic(name)
        assert name not in log.list_topics()
        with pytest.raises(UnknownTopic):
            log.describe_topic(name)

    def test_compacted_topic_config(self, log: Log) -> None:
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=1, compact=True))
        config = log.describe_topic(name).config
        assert config.compact
        assert config.cleanup_policy == "compact"

    def test_create_twice_raises(self, log: Log, topic: str) -> None:
        with pytest.raises(TopicExists):
            log.create_topic(topic, TopicConfig(partitions=1))

    def test_invalid_topic_names(self, log: Log) -> None:
        for bad in ("", "has space", "a/b", "x" * 250, ".."):
            with pytest.raises(InvalidConfig):
                log.create_topic(bad)

    def test_invalid_topic_config(self) -> None:
        with pytest.raises(InvalidConfig):
            TopicConfig(partitions=0)
        with pytest.raises(InvalidConfig):
            TopicConfig(retention_ms=-1)

    def test_unknown_topic_everywhere(self, log: Log) -> None:
        name = unique_topic("missing")
        with pytest.raises(UnknownTopic):
            log.append(name, [Message(b"x")])
        with pytest.raises(UnknownTopic):
            log.read(name, 0, 0)
        with pytest.raises(UnknownTopic):
            log.delete_topic(name)
        with pytest.raises(UnknownTopic):
            log.latest_offset(name, 0)
        with pytest.raises(UnknownTopic):
            log.earliest_offset(name, 0)
        with pytest.raises(UnknownTopic):
            log.commit("g", name, {0: 1})

    @pytest.mark.parametrize(
        "bad",
        [Message(b"v", key="order-1"), Message("text", key=b"k"), Message(b"v", key=42, partition=1)],  # type: ignore[arg-type]
        ids=["text key", "text value", "int key"],
    )
    def test_a_key_or_value_that_is_not_bytes_is_refused_and_nothing_is_written(
        self, log: Log, topic: str, bad: Message
    ) -> None:
        with pytest.raises(InvalidConfig, match=r"a message's key and value are bytes or None, not (str|int)"):
            log.append(topic, [Message(b"fine", partition=1), bad])
        assert log.latest_offset(topic, 1) == 0
        log.append(topic, [Message(bytearray(b"ba"), key=memoryview(b"mv"), partition=1)])  # type: ignore[arg-type]
        [record] = log.read(topic, 1, 0)
        assert (record.key, record.value) == (b"mv", b"ba")
        assert (type(record.key), type(record.value)) == (bytes, bytes)
        # bytes-like keys go where their bytes go
        keys: list[Any] = [bytearray(b"mv"), memoryview(bytearray(b"mv")), memoryview(b"mv"), b"mv"]
        positions = log.append(topic, [Message(b"v", key=key) for key in keys])
        assert {p.partition for p in positions} == {partition_for_key(b"mv", 3)}

    def test_unknown_partition(self, log: Log, topic: str) -> None:
        with pytest.raises(UnknownPartition):
            log.read(topic, 3, 0)
        with pytest.raises(UnknownPartition):
            log.append(topic, [Message(b"x", partition=7)])
        with pytest.raises(UnknownPartition):
            log.latest_offset(topic, 5)
        with pytest.raises(UnknownPartition):
            log.earliest_offset(topic, 5)

    def test_failed_append_writes_nothing(self, log: Log, topic: str) -> None:
        with pytest.raises(UnknownPartition):
            log.append(topic, [Message(b"ok", partition=0), Message(b"bad", partition=9)])
        assert log.latest_offset(topic, 0) == 0

    # --- append and read ------------------------------------------------------------------
    def test_offsets_start_at_zero_and_grow(self, log: Log, topic: str) -> None:
        first = log.append(topic, [Message(b"a", partition=1), Message(b"b", partition=1)])
        second = log.append(topic, [Message(b"c", partition=1)])
        assert [(p.partition, p.offset) for p in first + second] == [(1, 0), (1, 1), (1, 2)]
        assert log.latest_offset(topic, 1) == 3
        assert log.earliest_offset(topic, 1) == 0
        assert log.latest_offset(topic, 0) == 0

    def test_append_records_returns_the_records_as_read_back(self, log: Log, topic: str) -> None:
        messages = [Message(b"one", key=b"k", headers=(("h", b"v"),)), Message(None, partition=1), Message(b"x")]
        positions, records = log.append_records(topic, messages)
        assert len(positions) == 3
        if records is not None:  # None: the backend cannot tell them without reading back
            assert records == [log.read(topic, p.partition, p.offset, 1)[0] for p in positions]

    def test_read_returns_what_was_appended(self, log: Log, topic: str) -> None:
        headers = (("h1", b"one"), ("h2", b""), ("h1", b"again"))
        log.append(topic, [Message(b"value", key=b"k", headers=headers, partition=2), Message(None, partition=2)])
        first, tombstone = log.read(topic, 2, 0)
        assert (first.topic, first.partition, first.offset) == (topic, 2, 0)
        assert first.key == b"k"
        assert first.value == b"value"
        assert first.headers == headers
        assert tombstone.value is None
        assert tombstone.key is None
        assert tombstone.offset == 1

    def test_records_and_positions_are_values_the_garbage_collector_skips(self, log: Log, topic: str) -> None:
        message = Message(b"value", key=b"k", headers=(("h", b"v"),))
        [position] = log.append(topic, [message])
        [record] = log.read(topic, position.partition, position.offset)
        assert [record] == log.read(topic, position.partition, position.offset)
        assert len({record, log.read(topic, position.partition, position.offset)[0]}) == 1  # hashable, equal
        # made by the million and held in batches: tracked, each batch would be scanned by
        # every collection it outlives
        assert not any(map(gc.is_tracked, (message, position, record)))

    def test_read_from_offset_with_limit(self, log: Log, topic: str) -> None:
        _fill(log, topic, 20)
        records = log.read(topic, 0, 5, limit=4)
        assert [r.offset for r in records] == [5, 6, 7, 8]
        assert [r.value for r in records] == [b"v5", b"v6", b"v7", b"v8"]
        assert log.read(topic, 0, 20) == []
        assert [r.offset for r in log.read(topic, 0, 18)] == [18, 19]

    def test_read_now_hands_over_a_prefix_of_read_without_waiting(self, log: Log, topic: str) -> None:
        _fill(log, topic, 20)
        assert [r.offset for r in log.read(topic, 0, 0, limit=5)] == [0, 1, 2, 3, 4]
        now = log.read_now(topic, 0, 5, limit=4)  # None: the backend cannot tell without waiting
        later = log.read(topic, 0, 5, limit=4)
        assert [r.offset for r in later] == [5, 6, 7, 8]
        if now is not None:
            assert [(r.offset, r.value) for r in now] == [(r.offset, r.value) for r in later][: len(now)]
        past_end = log.read_now(topic, 0, 20)
        assert past_end is None or past_end == []

    def test_keys_go_to_kafkas_partition(self, log: Log) -> None:
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=7))
        keys = [f"customer-{i}".encode() for i in range(40)]
        positions = log.append(name, [Message(b"x", key=k) for k in keys])
        assert [p.partition for p in positions] == [partition_for_key(k, 7) for k in keys]

    def test_records_without_key_spread_evenly(self, log: Log, topic: str) -> None:
        positions = log.append(topic, [Message(b"x") for _ in range(300)])
        counts = collections.Counter(p.partition for p in positions)
        assert set(counts) == {0, 1, 2}
        assert min(counts.values()) >= 50

    def test_timestamps_never_decrease(self, log: Log, topic: str) -> None:
        before = int(time.time() * 1000) - 1000
        for _ in range(5):
            _fill(log, topic, 3)
        stamps = [r.timestamp for r in log.read(topic, 0, 0)]
        assert stamps == sorted(stamps)
        assert stamps[0] >= before

    def test_events_round_trip(self, log: Log, topic: str) -> None:
        events = [
            Event.create("shop.order.placed", {"order": i, "total": 9.5}, source="/shop", key=f"o{i}", subject=f"o{i}")
            for i in range(5)
        ] + [Event.create("blob", b"\x00\x01binary", source="/raw")]
        positions = log.append_events(topic, events)
        for event, position in zip(events, positions, strict=True):
            (record,) = log.read(topic, position.partition, position.offset, limit=1)
            decoded = record.event()
            assert decoded.id == event.id
            assert decoded.type == event.type
            assert decoded.source == event.source
            assert decoded.subject == event.subject
            assert decoded.key == event.key
            assert decoded.data == event.data
            assert decoded.time == event.time

    def test_concurrent_appenders_never_lose_or_duplicate(self, log: Log, topic: str) -> None:
        def produce(worker: int) -> None:
            for batch in range(10):
                log.append(topic, [Message(f"{worker}:{batch}:{i}".encode(), partition=0) for i in range(5)])

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records = log.read(topic, 0, 0, limit=1000)
        assert [r.offset for r in records] == list(range(200))
        assert len({r.value for r in records}) == 200
        for worker in range(4):
            mine = [r.value for r in records if r.value is not None and r.value.startswith(f"{worker}:".encode())]
            assert mine == [f"{worker}:{b}:{i}".encode() for b in range(10) for i in range(5)]

    @on_a_backend(max_examples=25)
    @given(
        batches=st.lists(
            st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.binary(max_size=20)), max_size=8),
            min_size=1,
            max_size=6,
        )
    )
    def test_offsets_and_per_key_order_hold_for_any_batches(
        self, log: Log, batches: list[list[tuple[str | None, bytes]]]
    ) -> None:
        name = unique_topic("prop")
        log.create_topic(name, TopicConfig(partitions=2))
        expected: dict[int, list[tuple[bytes | None, bytes]]] = {0: [], 1: []}
        for batch in batches:
            messages = [Message(value, key=None if key is None else key.encode()) for key, value in batch]
            positions = log.append(name, messages)
            for message, position in zip(messages, positions, strict=True):
                assert position.offset == len(expected[position.partition])
                if message.key is not None:
                    assert position.partition == partition_for_key(message.key, 2)
                assert message.value is not None
                expected[position.partition].append((message.key, message.value))
        for partition, appended in expected.items():
            records = log.read(name, partition, 0, limit=10_000)
            assert [r.offset for r in records] == list(range(len(appended)))
            assert [(r.key, r.value) for r in records] == appended
            assert log.latest_offset(name, partition) == len(appended)

    @on_a_backend(max_examples=25)
    @given(
        reads=st.lists(
            st.tuples(st.integers(0, 2), st.none() | st.integers(0, 320), st.integers(1, 120)), min_size=1, max_size=20
        )
    )
    def test_any_sequence_of_reads_returns_the_records_asked_for(
        self, log: Log, reads: list[tuple[int, int | None, int]]
    ) -> None:
        """Reads of a partition go on where its last read ended (None) or jump anywhere, past
        the end too, interleaved with reads of the others: each returns exactly the records
        from its offset up to its limit or the partition's end (a Kafka backend buffers what
        it fetched of one partition while reading another and re-positions for a jump)."""
        name = unique_topic("reads")
        log.create_topic(name, TopicConfig(partitions=3))
        ends = {0: 300, 1: 150, 2: 0}
        for partition, end in ends.items():
            log.append(name, [Message(b"%d-%d" % (partition, i), partition=partition) for i in range(end)])
        next_offset = dict.fromkeys(ends, 0)
        for partition, jump, limit in reads:
            offset = next_offset[partition] if jump is None else jump
            records = log.read(name, partition, offset, limit=limit)
            expected = range(offset, min(ends[partition], offset + limit))
            assert [(r.offset, r.value) for r in records] == [(i, b"%d-%d" % (partition, i)) for i in expected]
            next_offset[partition] = offset + len(records)
        log.delete_topic(name)

    # --- waiting --------------------------------------------------------------------------
    def test_wait_returns_at_once_when_records_exist(self, log: Log, topic: str) -> None:
        _fill(log, topic, 1)
        assert log.wait(topic, {0: 0}, timeout=5)

    def test_wait_times_out(self, log: Log, topic: str) -> None:
        _fill(log, topic, 2)
        started = time.monotonic()
        assert not log.wait(topic, {0: 2, 1: 0}, timeout=0.2)
        assert time.monotonic() - started >= 0.19

    def test_wait_wakes_on_append(self, log: Log, topic: str) -> None:
        woke = threading.Event()

        def waiter() -> None:
            if log.wait(topic, {1: 0}, timeout=30):
                woke.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        log.append(topic, [Message(b"wake", partition=1)])
        thread.join(timeout=30)
        assert woke.is_set()

    # --- time -----------------------------------------------------------------------------
    def test_offset_for_time(self, log: Log, topic: str) -> None:
        _fill(log, topic, 3)
        stamps = [r.timestamp for r in log.read(topic, 0, 0)]
        assert log.offset_for_time(topic, 0, 0) == 0
        assert log.offset_for_time(topic, 0, stamps[0]) == 0
        assert log.offset_for_time(topic, 0, stamps[-1] + 60_000) == 3
        deadline = time.monotonic() + 5
        while int(time.time() * 1000) <= stamps[-1] and time.monotonic() < deadline:
            time.sleep(0.001)
        _fill(log, topic, 2)
        later = log.read(topic, 0, 3)
        assert log.offset_for_time(topic, 0, later[0].timestamp) == 3
        assert log.offset_for_time(topic, 1, 0) == 0

    # --- groups ---------------------------------------------------------------------------
    def test_commit_and_read_committed(self, log: Log, topic: str) -> None:
        group = unique_topic("group")
        assert log.committed(group, topic) == {}
        log.commit(group, topic, {0: 5, 2: 1})
        log.commit(group, topic, {0: 7})
        assert log.committed(group, topic) == {0: 7, 2: 1}
        assert group in log.list_groups()
        assert log.group_topics(group) == [topic]
        assert log.committed(unique_topic("other"), topic) == {}
        assert log.group_topics(unique_topic("other")) == []

    def test_commit_to_unknown_partition(self, log: Log, topic: str) -> None:
        with pytest.raises(UnknownPartition):
            log.commit("g", topic, {9: 1})

    def test_delete_topic_drops_records_and_offsets(self, log: Log) -> None:
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=1))
        _fill(log, name, 10)
        log.commit("g-del", name, {0: 3})
        log.delete_topic(name)
        log.create_topic(name, TopicConfig(partitions=1))
        assert log.read(name, 0, 0) == []
        assert log.latest_offset(name, 0) == 0
        assert log.committed("g-del", name) == {}

    # --- retention ------------------------------------------------------------------------
    def test_retention_by_time(self, log: Log) -> None:
        if not self.manual_retention:
            pytest.skip("retention runs on the broker's clock")
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=1, retention_ms=60_000))
        _fill(log, name, 5)
        stamp = log.read(name, 0, 4)[0].timestamp
        assert log.enforce_retention(now_ms=stamp + 30_000) == 0
        assert log.enforce_retention(now_ms=stamp + 61_000) == 5
        assert log.read(name, 0, 0) == []
        assert log.latest_offset(name, 0) == 5
        _fill(log, name, 1)
        assert [r.offset for r in log.read(name, 0, 0)] == [5]

    def test_retention_by_size(self, log: Log) -> None:
        if not self.manual_retention:
            pytest.skip("retention runs on the broker's clock")
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=1, retention_bytes=1000))
        log.append(name, [Message(b"x" * 100, partition=0) for _ in range(25)])
        log.enforce_retention()
        kept = log.read(name, 0, 0, limit=100)
        assert 1 <= len(kept) <= 10
        assert kept[-1].offset == 24
        assert [r.offset for r in kept] == list(range(25 - len(kept), 25))
        assert log.earliest_offset(name, 0) == kept[0].offset

    def test_compaction_keeps_newest_per_key(self, log: Log) -> None:
        if not self.manual_retention:
            pytest.skip("compaction runs on the broker's schedule")
        name = unique_topic()
        log.create_topic(name, TopicConfig(partitions=1, compact=True))
        log.append(
            name,
            [
                Message(b"a1", key=b"a", partition=0),
                Message(b"b1", key=b"b", partition=0),
                Message(b"a2", key=b"a", partition=0),
                Message(b"c1", key=b"c", partition=0),
                Message(None, key=b"b", partition=0),
            ],
        )
        log.enforce_retention()
        assert [(r.offset, r.value) for r in log.read(name, 0, 0)] == [(2, b"a2"), (3, b"c1"), (4, None)]
        stamp = log.read(name, 0, 4)[0].timestamp
        log.enforce_retention(now_ms=stamp + 2 * 24 * 3600 * 1000)
        assert [(r.offset, r.value) for r in log.read(name, 0, 0)] == [(2, b"a2"), (3, b"c1")]
        assert log.latest_offset(name, 0) == 5
