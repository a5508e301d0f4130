"""The consumer of one subscription: its seat in the group, and the delivery pipeline of the
partitions the group gives it.

A consumer is a fetcher per topic (reading the owned partitions), a worker per owned partition
(chaining its events by key through the subscription's `Pipeline`: decode, filter, dedupe,
handle with retries, dead-letter) and a committer (storing the workers' commit points). Its
own loop heartbeats the group and applies what each heartbeat says: partitions to take up,
to hand over (finish, commit, release) or lost (stop at once, commit nothing).

Delivery is at-least-once: a partition's committed offset is the lowest offset whose handling
has not finished (handled, skipped or dead-lettered), so it never passes unfinished work.
Idempotent subscriptions skip events whose (source, id) the group has handled; transactional
ones commit the handler's writes with the position (and, if idempotent, the event's dedupe
record) through the backend's `Transaction`: exactly-once effects.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from inmotion.errors import InmotionError, TopicExists, UnknownTopic
from inmotion.log import Assignment, Coordinator, Log, Membership, TopicPartition
from inmotion.runtime import deadletter
from inmotion.runtime.committer import Committer
from inmotion.runtime.dedupe import Dedupe
from inmotion.runtime.fetcher import Fetcher
from inmotion.runtime.metrics import Counter
from inmotion.runtime.pipeline import Pipeline
from inmotion.runtime.subscription import Subscription
from inmotion.runtime.worker import Worker

if TYPE_CHECKING:
    from inmotion.runtime.app import App

T = TypeVar("T")
logger = logging.getLogger("inmotion.runtime")

_HAND_OVER_LIMIT = 300
"""Seconds a revoked partition's in-flight events may take to finish (Kafka's max.poll.interval)."""


class Consumer:
    def __init__(self, app: App, subscription: Subscription, coordinator: Coordinator) -> None:
        self.app = app
        self.log: Log = app.log
        self.subscription = subscription
        self.coordinator = coordinator
        self.group = subscription.group
        self.workers: dict[TopicPartition, Worker] = {}
        self._revoking: set[TopicPartition] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-io:{self.group}")
        # heartbeats apart from other I/O: on Kafka a heartbeat can wait for a hand-over, which
        # commits through the committer's thread
        self._group_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-group:{self.group}")
        self._membership: Membership | None = None
        self._last_prune = 0.0
        self._counter_cache: dict[str, dict[str, Counter]] = {}
        self._topic_ids: dict[str, str | None] = {}
        """Each topic's id (`Log.topic_id`) when its workers started: another id means the topic
        was deleted and created again under them."""
        transaction = coordinator.transaction(self.group) if subscription.transaction else None
        idempotent = subscription.idempotent and transaction is None
        self.dedupe = Dedupe(self.log, coordinator, self.group, self._io) if idempotent else None
        self.pipeline = Pipeline(app, subscription, self.counter, self.dedupe, transaction, self._member_id, self._io)
        self.fetchers = {
            topic: Fetcher(self.log, app.publisher, topic, self.group, self.workers) for topic in subscription.topics
        }
        self.committer = Committer(self.log, coordinator, self.group, self.dedupe, self._topic_ids)

    def _member_id(self) -> str:
        assert self._membership is not None
        return self._membership.member_id

    async def _call(self, function: Callable[..., T], *args: Any, pool: concurrent.futures.Executor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool or self._io, function, *args)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stopped: asyncio.Event, hurry: asyncio.Event) -> None:
        """Take part in the group until `stopped` is set, then finish the events being handled
        (unless `hurry` is set meanwhile), commit and leave."""
        partitions = {topic: await self._call(self._prepare_topic, topic) for topic in self.subscription.topics}
        if self.subscription.dead_letter is not None:
            await self._call(deadletter.ensure_topic, self.log, self.subscription.dead_letter)
        membership = self._membership = self.coordinator.join(
            self.group, partitions, session_timeout=self.app.session_timeout
        )
        loop = asyncio.get_running_loop()
        membership.revoke_now = lambda partitions: self._hand_over_from_thread(loop, partitions)
        logger.info("joined group", extra={"group": self.group, "member": membership.member_id})
        fetchers = [asyncio.create_task(fetcher.run()) for fetcher in self.fetchers.values()]
        committer = asyncio.create_task(self.committer.run(self.app.commit_interval, self._committable, stopped))
        try:
            last_heartbeat = time.monotonic()
            while not stopped.is_set():
                try:
                    assignment = await self._call(membership.heartbeat, pool=self._group_io)
                except InmotionError as exc:
                    logger.warning("heartbeat failed: %s", exc, extra={"group": self.group})
                    if time.monotonic() - last_heartbeat > membership.session_timeout:
                        # Our leases have expired: another member may own the partitions now.
                        await self._apply(Assignment(frozenset(), frozenset()))
                else:
                    last_heartbeat = time.monotonic()
                    try:
                        await self._check_topics()
                        await self._apply(assignment)
                        await self._observe()
                    except InmotionError as exc:  # a new partition's offsets unreadable: next beat
                        logger.warning("taking up the assignment failed: %s", exc, extra={"group": self.group})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), membership.heartbeat_interval)
                for task in (*fetchers, committer):  # they handle the log's errors: this is a fault
                    if task.done() and not stopped.is_set():
                        raise task.exception() or RuntimeError(f"{task.get_coro()} ended")
        finally:
            for task in fetchers:
                task.cancel()
            await self._drain(hurry)
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.dedupe is not None:
                await self.dedupe.written()
            committer.cancel()
            await asyncio.gather(committer, *fetchers, return_exceptions=True)
            for tp in list(self.workers):
                await self._tell(tp, assigned=False)
            with contextlib.suppress(InmotionError):
                await self.committer.commit(list(self.workers.values()))
            self.workers.clear()
            membership.revoke_now = None
            with contextlib.suppress(InmotionError):
                await self._call(membership.leave, pool=self._group_io)
            logger.info("left group", extra={"group": self.group, "member": membership.member_id})
            self._io.shutdown(wait=True)
            self._group_io.shutdown(wait=True)
            self.committer.close()
            for fetcher in self.fetchers.values():
                fetcher.close()
            if self.pipeline.transaction is not None:
                self.pipeline.transaction.close()

    def _committable(self) -> list[Worker]:
        """The workers whose progress the periodic commit stores (not those being handed over,
        whose hand-over commits them)."""
        return [worker for tp, worker in self.workers.items() if tp not in self._revoking]

    async def _drain(self, hurry: asyncio.Event) -> None:
        """Let the workers finish the events being handled; when `hurry` is set first, cancel
        async handlers (their events stay uncommitted). Plain handlers run on in their threads
        whatever is cancelled, so they are waited for."""
        workers = list(self.workers.values())
        draining: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(w.drain() for w in workers)))
        hurrying: asyncio.Future[Any] = asyncio.ensure_future(hurry.wait())
        await asyncio.wait({draining, hurrying}, return_when=asyncio.FIRST_COMPLETED)
        hurrying.cancel()
        if not draining.done() and self.subscription.handler.is_async:
            logger.warning("cancelling the handlers still running", extra={"group": self.group})
            for worker in workers:
                worker.abort()
        await draining

    def _prepare_topic(self, topic: str) -> int:
        try:
            return self.log.partition_count(topic)
        except UnknownTopic:
            if self.app.topic_config is None:
                raise
            with contextlib.suppress(TopicExists):
                self.log.create_topic(topic, self.app.topic_config)
            return self.log.partition_count(topic)

    async def _apply(self, assignment: Assignment) -> None:
        for tp in [tp for tp, worker in self.workers.items() if worker.lapsed and tp not in self._revoking]:
            logger.warning("lease on %s/%d lapsed: starting over", tp.topic, tp.partition, extra={"group": self.group})
            del self.workers[tp]
            await self._tell(tp, assigned=False, lost=True)
        for tp in [tp for tp in self.workers if tp not in assignment.owned]:
            logger.warning("lost partition %s/%d", tp.topic, tp.partition, extra={"group": self.group})
            self.workers.pop(tp).abort()
            await self._tell(tp, assigned=False, lost=True)
        for tp in assignment.revoke:
            if tp in self.workers and tp not in self._revoking:
                self._revoking.add(tp)
                self._spawn(self._revoke(tp, self.workers[tp]))
        started = False
        for tp in sorted(assignment.owned - self.workers.keys() - assignment.revoke):
            if tp.topic not in self._topic_ids:
                self._topic_ids[tp.topic] = await self._call(self.log.topic_id, tp.topic)
            start = await self._call(self._start_offset, tp)
            self.workers[tp] = Worker(
                self.pipeline,
                tp,
                start,
                self.subscription.concurrency,
                self.counter("consumed", tp.topic),
                self.fetchers[tp.topic].wake.set,
            )
            started = True
            logger.info("assigned %s/%d from offset %d", tp.topic, tp.partition, start, extra={"group": self.group})
            await self._tell(tp, assigned=True)
        if started:
            for fetcher in self.fetchers.values():
                fetcher.wake.set()

    async def _tell(self, tp: TopicPartition, *, assigned: bool, lost: bool = False) -> None:
        """Tell the subscription's `PartitionWatcher` that `tp` came or goes (`lost`: another
        member may hold it already); its failure is logged, not the consumer's."""
        watcher = self.subscription.partitions
        if watcher is None:
            return
        try:
            await (watcher.assigned(tp) if assigned else watcher.released(tp, lost=lost))
        except Exception as exc:
            logger.error(
                "the partition watcher failed on %s/%d: %s",
                tp.topic,
                tp.partition,
                exc,
                exc_info=True,
                extra={"group": self.group},
            )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revoke(self, tp: TopicPartition, worker: Worker) -> None:
        try:
            await worker.drain()
            await self._tell(tp, assigned=False)
            await self.committer.commit([worker])
            if self.workers.get(tp) is worker:
                del self.workers[tp]
            assert self._membership is not None
            await self._call(self._membership.release, [tp], pool=self._group_io)
            logger.info("handed over %s/%d", tp.topic, tp.partition, extra={"group": self.group})
        except Exception as exc:  # a spawned task: nobody awaits it to hear of its failure
            logger.error(
                "could not hand over %s/%d: %s",
                tp.topic,
                tp.partition,
                exc,
                exc_info=not isinstance(exc, InmotionError),
                extra={"group": self.group},
            )
        finally:
            self._revoking.discard(tp)

    def _hand_over_from_thread(
        self, loop: asyncio.AbstractEventLoop, partitions: frozenset[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """`Membership.revoke_now`, called on the heartbeat thread: finish the partitions' events
        on the event loop, wait for that, and return the offsets to commit for them."""
        done = asyncio.run_coroutine_threadsafe(self._hand_over(partitions), loop)
        try:
            return done.result(timeout=_HAND_OVER_LIMIT)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            logger.error(
                "handing over %s took longer than %ds: gave them up uncommitted",
                ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)),
                _HAND_OVER_LIMIT,
                extra={"group": self.group},
            )
            return {}

    async def _hand_over(self, partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
        workers = [self.workers.pop(tp) for tp in sorted(partitions) if tp in self.workers]
        await asyncio.gather(*(worker.drain() for worker in workers))
        for worker in workers:
            await self._tell(worker.tp, assigned=False)
        if self.dedupe is not None:  # the membership flushes them and commits past them
            await self.dedupe.written()
        for worker in workers:
            logger.info("handing over %s/%d", worker.tp.topic, worker.tp.partition, extra={"group": self.group})
        return {worker.tp: point for worker in workers if (point := worker.commit_point()) != worker.committed}

    def _start_offset(self, tp: TopicPartition) -> int:
        committed = self.log.committed(self.group, tp.topic).get(tp.partition)
        return self.log.earliest_offset(tp.topic, tp.partition) if committed is None else committed

    async def _check_topics(self) -> None:
        """Start a topic's partitions over when the topic was deleted (and maybe created again)
        under their workers: the positions they hold belong to records that are gone. The next
        assignment takes the partitions up again from their committed offsets, which went with
        the topic (so from the start of a topic created anew)."""
        for topic in sorted({tp.topic for tp in self.workers}):
            try:
                current = await self._call(self.log.topic_id, topic)
                gone = False
            except UnknownTopic:
                current, gone = None, True
            if gone or current != self._topic_ids.get(topic):
                for tp in [tp for tp in self.workers if tp.topic == topic]:
                    self.workers.pop(tp).abort()
                    await self._tell(tp, assigned=False, lost=True)
                del self._topic_ids[topic]
                logger.warning(
                    "topic %s was deleted%s: its partitions start over",
                    topic,
                    "" if gone else " and created again",
                    extra={"group": self.group},
                )

    async def _observe(self) -> None:
        """Refresh the lag gauges and prune old dedupe records."""
        lags = {}
        for tp, worker in list(self.workers.items()):
            try:
                latest = await self._call(self.log.latest_offset, tp.topic, tp.partition)
            except InmotionError:
                continue
            lags[tp] = latest - worker.committed
        for tp, lag in lags.items():
            self.app.metrics.set("inmotion_lag", lag, group=self.group, topic=tp.topic, partition=str(tp.partition))
        now = self.app.clock.time()
        if self.subscription.keeps_dedupe_records and now - self._last_prune > 60:
            self._last_prune = now
            cutoff = int((now - self.subscription.dedupe_window) * 1000)
            await self._call(self.coordinator.forget_before, self.group, cutoff)

    def counter(self, name: str, topic: str) -> Counter:
        """One of this group's counters for `topic`: consumed, skipped, failed, retried, dead_lettered."""
        counters = self._counter_cache.get(topic)
        if counters is None:
            counters = self._counter_cache[topic] = {
                kind: self.app.metrics.counter(f"inmotion_{kind}_total", group=self.group, topic=topic)
                for kind in ("consumed", "skipped", "failed", "retried", "dead_lettered")
            }
        return counters[name]
