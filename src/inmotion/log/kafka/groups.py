"""Consumer groups on Kafka: Kafka's own group protocol drives the runtime's assignment.

A `KafkaMembership` is a confluent-kafka consumer subscribed with the group's id and the
cooperative-sticky assignor (the classic protocol: it lets the client set the session timeout).
It never reads records: the partitions Kafka assigns are paused at once, and the runtime reads
them through the log, as on every backend. Its `heartbeat` polls, which serves Kafka's rebalance
callbacks:

- assigned partitions join `owned`;
- revoked partitions are handed over inside the callback: `revoke_now` (set by the runtime)
  finishes their in-flight events and commits them before Kafka gives them to another member;
- lost partitions (this member's session expired) are dropped without a commit.

While a member is joined, `KafkaLog.commit` for its group goes through its consumer: Kafka
refuses offset changes from the admin client while a group has members.

Dedupe records of idempotent subscriptions live in a topic per group,
`__inmotion-handled-<group>` (one partition; records expire with the dedupe window through
`retention.ms`; `forget` writes tombstones, records without a value). A coordinator reads the
topic into memory when first asked and keeps up with it; a member reads to its end again
whenever it is assigned partitions, so it knows what the previous owner handled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from inmotion.errors import BrokerUnavailable, InmotionError, InvalidConfig, TopicExists
from inmotion.log.base import TopicConfig, check_group_name
from inmotion.log.groups import (
    DEFAULT_SESSION_TIMEOUT,
    Assignment,
    Coordinator,
    MemberInfo,
    Membership,
    TopicPartition,
    new_member_id,
)
from inmotion.log.kafka.errors import translate
from inmotion.log.kafka.log import KafkaLog

logger = logging.getLogger("inmotion.log.kafka")

_ACTIVE_STATES = {"STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE", "ASSIGNING", "RECONCILING"}
_MEMBER_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")
_DEDUPE_RETENTION_MS = 7 * 24 * 3600 * 1000
_CATCH_UP_POLL = 0.05


def handled_topic(group: str) -> str:
    """The topic that keeps `group`'s dedupe records: the group's name where a topic name
    allows it, else a readable form of it plus a hash."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", group)
    if safe != group or len(safe) > 200:
        safe = f"{safe[:180]}-{hashlib.sha256(group.encode()).hexdigest()[:12]}"
    return f"__inmotion-handled-{safe}"


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state)).upper()


class _Handled:
    """One group's dedupe records: the topic, a producer for new ones, a reader for all."""

    def __init__(self, log: KafkaLog, group: str) -> None:
        self.log = log
        self.group = group
        self.topic = handled_topic(group)
        self.lock = threading.Lock()
        self.known: dict[tuple[str, str], int] = {}
        self.cutoff_ms = 0
        """Records older than this were forgotten: the reader, still behind, must not bring them back."""
        self.retention_ms = _DEDUPE_RETENTION_MS
        with contextlib.suppress(TopicExists):
            log.create_topic(self.topic, TopicConfig(partitions=1, retention_ms=_DEDUPE_RETENTION_MS))
        client = log.config.client()
        self.producer = Producer({**client, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
        self.reader = Consumer(
            {
                **client,
                "group.id": f"inmotion-dedupe-{new_member_id()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )
        self.reader.assign([KafkaPartition(self.topic, 0, 0)])
        self.position = 0
        self.catch_up()

    def catch_up(self) -> None:
        """Take in every record up to the topic's end (waiting for fetches, up to the timeout)."""
        with self.lock:
            self._take_in(self.log.latest_offset(self.topic, 0))

    def _take_in(self, high: int) -> None:
        """Take in the records that the reader fetched, and wait for more until `high` (-1:
        no wait). Holding the lock."""
        deadline = time.monotonic() + self.log.config.timeout
        while True:
            # consume() returns once it has its 1,000 messages or its time is up: short waits,
            # or a catch-up of a few records would take the whole timeout
            wait = min(_CATCH_UP_POLL, max(0.0, deadline - time.monotonic())) if self.position < high else 0.0
            messages = self.reader.consume(1000, wait)
            for msg in messages:
                if msg.error() is None:
                    source, _, event_id = (msg.key() or b"").decode().partition("\x00")
                    if msg.value() is None:  # forgotten
                        self.known.pop((source, event_id), None)
                    elif (stamp := msg.timestamp()[1]) >= self.cutoff_ms:
                        self.known[(source, event_id)] = stamp
                    self.position = (msg.offset() or 0) + 1
            if not messages and (self.position >= high or time.monotonic() >= deadline):
                return

    def seen(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Never waits (the consumer asks on its event loop): takes in what the reader already
        fetched, unless a full catch-up holds the lock, then answers from what is known."""
        if self.lock.acquire(blocking=False):
            try:
                self._take_in(-1)
            finally:
                self.lock.release()
        known = self.known
        return {key for key in keys if key in known}

    def remember(self, keys: Sequence[tuple[str, str]]) -> None:
        now = int(time.time() * 1000)
        for source, event_id in keys:
            self.producer.produce(self.topic, value=b"", key=f"{source}\x00{event_id}".encode(), timestamp=now)
        with self.lock:
            self.known.update(dict.fromkeys(keys, now))
        self.producer.poll(0)

    def flush(self) -> None:
        """Wait until the remembered records are stored (before the offsets past them are committed)."""
        remaining = self.producer.flush(self.log.config.timeout)
        if remaining:
            # at-least-once still holds: without their records the events may be handled again
            logger.warning("%d dedupe record(s) of group %s not stored yet", remaining, self.group)

    def forget(self, keys: Sequence[tuple[str, str]]) -> int:
        with self.lock:
            # take in every record stored so far first: one still on its way to the reader
            # would bring a forgotten key back until the tombstone behind it arrives
            self._take_in(self.log.latest_offset(self.topic, 0))
            forgotten = [key for key in set(keys) if self.known.pop(key, None) is not None]
        for source, event_id in forgotten:
            self.producer.produce(self.topic, value=None, key=f"{source}\x00{event_id}".encode())
        if self.producer.flush(self.log.config.timeout):
            raise BrokerUnavailable(f"forgetting dedupe records of group {self.group}: not all stored in time")
        return len(forgotten)

    def forget_before(self, cutoff_ms: int) -> int:
        with self.lock:
            self.cutoff_ms = max(self.cutoff_ms, cutoff_ms)
            old = [key for key, at in self.known.items() if at < cutoff_ms]
            for key in old:
                del self.known[key]
        window_ms = max(60_000, int(time.time() * 1000) - cutoff_ms)
        if abs(window_ms - self.retention_ms) > window_ms // 10:
            self.log.set_retention(self.topic, window_ms)
            self.retention_ms = window_ms
        return len(old)

    def close(self) -> None:
        self.producer.flush(self.log.config.timeout)
        self.reader.close()


class KafkaCoordinator(Coordinator):
    """The groups of a Kafka cluster, as Kafka's group coordinator keeps them."""

    def __init__(self, log: KafkaLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._handled: dict[str, _Handled] = {}

    def join(
        self,
        group: str,
        partitions: Mapping[str, int],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        member_id: str | None = None,
    ) -> Membership:
        check_group_name(group)
        return KafkaMembership(self, group, member_id or new_member_id(), sorted(partitions), session_timeout)

    def _described(self, group: str) -> Any:
        return self.log.describe_groups([group])[group]

    def groups(self) -> list[str]:
        described = self.log.describe_groups(self.log.list_groups())
        return [group for group, description in described.items() if _state_name(description.state) in _ACTIVE_STATES]

    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        description = self._described(group)
        found = []
        for member in description.members:
            # inmotion members use their inmotion member id as client.id: host-pid-random
            member_id = member.client_id or member.member_id
            pid = _MEMBER_PID.search(member_id)
            topics = tuple(sorted({tp.topic for tp in member.assignment.topic_partitions}))
            host = member.host.lstrip("/")
            found.append(MemberInfo(member_id, host, int(pid.group(1)) if pid else 0, topics, None, None, None))
        return sorted(found, key=lambda m: m.member_id)

    def owners(self, group: str) -> dict[TopicPartition, str]:
        description = self._described(group)
        return {
            TopicPartition(tp.topic, tp.partition): member.client_id or member.member_id
            for member in description.members
            for tp in member.assignment.topic_partitions
        }

    def _dedupe(self, group: str) -> _Handled:
        with self._lock:
            handled = self._handled.get(group)
            if handled is None:
                handled = self._handled[group] = _Handled(self.log, group)
            return handled

    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return self._dedupe(group).seen(keys)

    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        self._dedupe(group).remember(keys)

    def forget_before(self, group: str, cutoff_ms: int) -> int:
        return self._dedupe(group).forget_before(cutoff_ms)

    def forget(self, group: str, keys: Sequence[tuple[str, str]]) -> int:
        return self._dedupe(group).forget(keys)

    def assigned(self, group: str) -> None:
        """A member of `group` got partitions: what their previous owner handled is news."""
        with self._lock:
            handled = self._handled.get(group)
        if handled is not None:
            handled.catch_up()

    def flush(self, group: str) -> None:
        with self._lock:
            handled = self._handled.get(group)
        if handled is not None:
            handled.flush()

    def close(self) -> None:
        with self._lock:
            handled, self._handled = list(self._handled.values()), {}
        for h in handled:
            h.close()


class KafkaMembership(Membership):
    """One member: a group consumer that only takes part in the group protocol."""

    def __init__(
        self, coordinator: KafkaCoordinator, group: str, member_id: str, topics: list[str], session_timeout: float
    ) -> None:
        super().__init__(group, member_id, session_timeout)
        self._coordinator = coordinator
        self._log = coordinator.log
        self._owned: set[TopicPartition] = set()
        self._lock = threading.Lock()
        self._left = False
        self._fatal: KafkaError | None = None  # set by error_cb, which poll may run
        session_ms = int(session_timeout * 1000)
        self._consumer = Consumer(
            {
                **self._log.config.client(),
                "client.id": member_id,
                "group.id": group,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 5),
                "max.poll.interval.ms": max(300_000, session_ms),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                # the member never reads records: keep what a paused partition prefetches small
                "queued.max.messages.kbytes": 64,
                "max.partition.fetch.bytes": 65536,
                "error_cb": self._error,
            }
        )
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._log.attach_member(group, self._consumer)

    def _error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            self._fatal = error

    # --- rebalance callbacks (run inside poll, on the heartbeat thread) -------------------
    @staticmethod
    def _tps(partitions: Iterable[Any]) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(p.topic, p.partition) for p in partitions)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        consumer.incremental_assign(partitions)
        if partitions:
            consumer.pause(partitions)
            try:  # before the partitions count as owned: learn what their last owner handled
                self._coordinator.assigned(self.group)
            except InmotionError as exc:  # an exception here would leave the callback half done
                logger.warning("reading the dedupe records of group %s failed: %s", self.group, exc)
        with self._lock:
            self._owned |= self._tps(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        taken = self._tps(partitions)
        hand_over = self.revoke_now
        try:
            points = hand_over(taken) if hand_over is not None and taken else {}
            if points:
                # committed here: librdkafka holds any other thread's commit until the rebalance is over
                self._coordinator.flush(self.group)
                offsets = [KafkaPartition(tp.topic, tp.partition, offset) for tp, offset in points.items()]
                consumer.commit(offsets=offsets, asynchronous=False)
        except (KafkaException, InmotionError) as exc:  # handled again by the next owner: at-least-once
            logger.warning("committing the handed-over partitions of group %s failed: %s", self.group, exc)
        finally:
            with self._lock:
                self._owned -= taken
            consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        with self._lock:
            self._owned -= self._tps(partitions)
        consumer.incremental_unassign(partitions)

    # --- Membership -----------------------------------------------------------------------
    def heartbeat(self) -> Assignment:
        if self._left:
            raise InvalidConfig(f"member {self.member_id} has left group {self.group}")
        try:
            msg = self._consumer.poll(0)
        except KafkaException as exc:
            self._fail(exc.args[0])
        error = self._fatal if msg is None else msg.error()  # it reads nothing: a message reports an error
        if error is not None:
            self._fail(error)
        with self._lock:
            return Assignment(frozenset(self._owned), frozenset())

    def _fail(self, error: KafkaError) -> NoReturn:
        if error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            raise InvalidConfig(
                f"Kafka refused session_timeout={self.session_timeout:g}s for group {self.group}: it must lie within"
                " the broker's group.min.session.timeout.ms and group.max.session.timeout.ms"
            )
        raise translate(error, f"taking part in group {self.group}")

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Nothing to do: Kafka takes revoked partitions back when the callback returns."""

    def leave(self) -> None:
        if self._left:
            return
        self._left = True
        self.revoke_now = None
        self._log.detach_member(self.group, self._consumer)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            raise InmotionError(f"leaving group {self.group}: {exc}") from exc
        with self._lock:
            self._owned.clear()
