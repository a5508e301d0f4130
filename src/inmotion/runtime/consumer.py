"""The consumer loop of one subscription: group membership, fetching, per-partition workers,
retries, dead letters, idempotency and offset commits.

Delivery is at-least-once: a partition's committed offset is the lowest offset whose handling
has not finished (succeeded, skipped or dead-lettered), so it never passes unfinished work.
Each owned partition has a worker that chains events by key: events of one key are handled
in order while up to `concurrency` keys run in parallel, and an event waiting out a retry
backoff holds up only its own key's events (with `concurrency=1`, its whole partition).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from inmotion.errors import InmotionError, InvalidEvent, TopicExists, UnknownTopic
from inmotion.events import Event
from inmotion.events.codec import JSON_CONTENT_TYPE, source_and_id
from inmotion.log import Assignment, Coordinator, Log, Membership, Record, TopicPartition, Transaction
from inmotion.runtime import deadletter
from inmotion.runtime.handler import Context
from inmotion.runtime.metrics import Counter
from inmotion.runtime.offsets import OffsetTracker
from inmotion.runtime.publisher import soon, to_message
from inmotion.runtime.subscription import Subscription

if TYPE_CHECKING:
    from inmotion.runtime.app import App

T = TypeVar("T")
logger = logging.getLogger("inmotion.runtime")

_FETCH_LIMIT = 1000
_BUFFER = 4000
_TALLY = 64
"""Events a worker handles before it adds them to the consumed metric (and whenever it runs out
of events): one locked add per event was a few percent of a busy consumer's time."""
_WAIT = 0.1
_NOT_PLAIN: Any = object()
_HAND_OVER_LIMIT = 300
"""Seconds a revoked partition's in-flight events may take to finish (Kafka's max.poll.interval)."""
_JSON_BYTES = JSON_CONTENT_TYPE.encode()
_JSON_HEADER = ("content-type", _JSON_BYTES)


async def begin(transaction: Transaction, pool: concurrent.futures.Executor) -> None:
    """Begin `transaction` in a thread of `pool` (it may wait for another process's write lock).
    When the caller is cancelled meanwhile (its partition was lost), the lock may still come
    later: wait for it and give it back, so that no abandoned transaction keeps every process
    on the file from writing."""
    began = asyncio.get_running_loop().run_in_executor(pool, transaction.begin)
    try:
        await asyncio.shield(began)
    except asyncio.CancelledError:
        while True:  # cancelled again meanwhile: the lock must still be given back
            try:
                await asyncio.shield(began)
            except asyncio.CancelledError:
                continue
            except Exception:
                raise asyncio.CancelledError from None  # it never began: nothing to give back
            break
        transaction.rollback()
        raise


class _Abandon(Exception):
    """The worker stops (revoked, lost or shutting down) before this event finished."""


class _Worker:
    """The events of one owned partition, from the fetch position to the commit point.

    Events wait in per-key chains: a chain runs its events one after the other, and at most
    `concurrency` events run at once. With `concurrency=1` every event is in one chain, so
    the partition is handled strictly in order.
    """

    def __init__(self, consumer: Consumer, tp: TopicPartition, start: int) -> None:
        self.consumer = consumer
        self.tp = tp
        self.offsets = OffsetTracker(start)
        self.committed = start
        self.stopping = asyncio.Event()
        self._ordered = consumer.subscription.concurrency == 1
        self._slots = asyncio.Semaphore(consumer.subscription.concurrency)
        self._chains: dict[object, collections.deque[Record]] = {}
        self._consumed = consumer.counter("consumed", tp.topic)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def next_fetch(self) -> int:
        return self.offsets.next_offset

    def wants_more(self) -> bool:
        return not self.stopping.is_set() and len(self.offsets) < _BUFFER

    def dispatch(self, records: list[Record]) -> None:
        if self.stopping.is_set():
            return
        offsets, chains, ordered = self.offsets, self._chains, self._ordered
        if ordered:  # one chain for the whole partition: the batch joins it at once
            if records and records[0].offset < offsets.next_offset:
                records = [record for record in records if record.offset >= offsets.next_offset]
            if records:
                offsets.start_many([record.offset for record in records])
                waiting = chains.get(None)
                if waiting is not None:
                    waiting.extend(records)
                else:
                    chains[None] = collections.deque(records)
                    self._start_chain(None)
            return
        for record in records:  # once per event: names are local, lookups few
            offset = record.offset
            if offset < offsets.next_offset:
                continue
            offsets.start(offset)
            chain = record.key if record.key is not None else offset
            waiting = chains.get(chain)
            if waiting is not None:
                waiting.append(record)
            else:
                chains[chain] = collections.deque([record])
                self._start_chain(chain)

    def _start_chain(self, chain: object) -> None:
        task = asyncio.create_task(self._run_chain(chain))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def commit_point(self, finishing: int | None = None) -> int:
        return self.offsets.commit_point(finishing)

    async def _run_chain(self, chain: object) -> None:
        waiting = self._chains[chain]
        consumed = 0  # handled, not yet counted in the consumed metric (counted every _TALLY)
        consumer = self.consumer
        plain = consumer.plain and self._ordered
        plain_payload = consumer.plain_payload
        function = consumer.subscription.handler.function
        finish = self.offsets.finish
        stopping = self.stopping
        faults = 0  # in a row, on the first waiting record
        try:
            while waiting and not stopping.is_set():
                record = waiting[0]
                try:
                    if plain and (payload := plain_payload(record)) is not _NOT_PLAIN:
                        try:  # the usual record: no coroutine but the handler's own
                            await function(payload)
                            consumed += 1
                        except _Abandon:
                            raise
                        except Exception as error:
                            consumed += await consumer.call_with_retries(record, payload, None, self, error)
                    elif self._ordered:
                        consumed += await consumer.process(record, self)
                    else:
                        async with self._slots:
                            if stopping.is_set():
                                return
                            consumed += await consumer.process(record, self)
                except _Abandon:
                    return
                except Exception as fault:  # not the handler's: the log failed (a dead-letter append)
                    faults += 1
                    if not await self._fault(record, fault, faults):
                        return
                    continue  # the same record again: it is not finished, so nothing passes it
                faults = 0
                if finish(record.offset) <= _BUFFER // 2:  # room for the fetch loop to read more
                    consumer.wake.set()
                waiting.popleft()
                if consumed >= _TALLY:
                    self._consumed.add(consumed)
                    consumed = 0
            if not waiting:
                del self._chains[chain]
        finally:
            if consumed:
                self._consumed.add(consumed)

    async def _fault(self, record: Record, fault: Exception, faults: int) -> bool:
        """Log a fault that handling `record` ran into outside the handler (a handler's own
        errors are retried and dead-lettered by the consumer) and wait a backoff before the
        record is tried again; False if the worker stops meanwhile."""
        retry = self.consumer.subscription.retry
        delay = retry.delay(min(faults, retry.attempts))
        logger.error(
            "handling %s/%d@%d failed: %s: %s; trying it again in %.1fs",
            record.topic,
            record.partition,
            record.offset,
            type(fault).__name__,
            fault,
            delay,
            exc_info=fault,
            extra={"group": self.consumer.group},
        )
        try:
            await self.consumer._pause(delay, self)
        except _Abandon:
            return False
        return True

    async def drain(self) -> None:
        """Finish the events being handled, drop the waiting ones (they stay uncommitted)."""
        self.stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def abort(self) -> None:
        """The partition is gone: stop at once, commit nothing."""
        self.stopping.set()
        for task in self._tasks:
            task.cancel()


class Consumer:
    def __init__(self, app: App, subscription: Subscription, coordinator: Coordinator) -> None:
        self.app = app
        self.log: Log = app.log
        self.subscription = subscription
        self.coordinator = coordinator
        self.group = subscription.group
        self.workers: dict[TopicPartition, _Worker] = {}
        self.wake = asyncio.Event()
        self._revoking: set[TopicPartition] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-io:{self.group}")
        # heartbeats apart from other I/O: on Kafka a heartbeat can wait for a hand-over, which
        # commits through `_io`
        self._group_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-group:{self.group}")
        self._commit_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-commit:{self.group}")
        self._fetch_pools = {
            topic: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-fetch:{topic}")
            for topic in subscription.topics
        }
        # reads that wait (a Kafka seek, or records not fetched yet), apart from `Log.wait`
        self._read_pools = {
            topic: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-read:{topic}")
            for topic in subscription.topics
        }
        self._tx_lock = asyncio.Lock()
        self._to_remember: list[tuple[str, str]] = []
        self._unwritten: set[tuple[str, str]] = set()
        """Keys of handled events whose dedupe records are being written: already seen."""
        self._remembering: asyncio.Task[None] | None = None
        self._membership: Membership | None = None
        self._last_prune = 0.0
        self._counter_cache: dict[str, dict[str, Counter]] = {}
        self._needs_event = (
            subscription.filter is not None or subscription.transaction or subscription.handler.wants_event
        )
        handler = subscription.handler
        self.plain = (
            not self._needs_event
            and not subscription.idempotent
            and handler.is_async
            and handler.context_argument is None
        )
        """Is handling a record just decoding its payload and awaiting the handler with it (no
        filter, envelope, context, dedupe or transaction)? Workers then do that themselves and
        call `process` only for the records that need more."""
        self._decode_record = handler.decode_record
        self._transaction: Transaction | None = (
            coordinator.transaction(self.group) if subscription.transaction else None
        )

    async def _call(self, function: Callable[..., T], *args: Any, pool: concurrent.futures.Executor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool or self._io, function, *args)

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self, stopped: asyncio.Event) -> None:
        partitions = {topic: await self._call(self._prepare_topic, topic) for topic in self.subscription.topics}
        if self.subscription.dead_letter is not None:
            await self._call(deadletter.ensure_topic, self.log, self.subscription.dead_letter)
        membership = self._membership = self.coordinator.join(
            self.group, partitions, session_timeout=self.app.session_timeout
        )
        loop = asyncio.get_running_loop()
        membership.revoke_now = lambda partitions: self._hand_over_from_thread(loop, partitions)
        logger.info("joined group", extra={"group": self.group, "member": membership.member_id})
        fetchers = [asyncio.create_task(self._fetch(topic)) for topic in self.subscription.topics]
        committer = asyncio.create_task(self._commit_loop(stopped))
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
            await asyncio.gather(*(w.drain() for w in self.workers.values()))
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._remembered()
            committer.cancel()
            await asyncio.gather(committer, *fetchers, return_exceptions=True)
            with contextlib.suppress(InmotionError):
                await self._commit(list(self.workers.values()))
            self.workers.clear()
            membership.revoke_now = None
            with contextlib.suppress(InmotionError):
                await self._call(membership.leave, pool=self._group_io)
            logger.info("left group", extra={"group": self.group, "member": membership.member_id})
            self._io.shutdown(wait=True)
            self._group_io.shutdown(wait=True)
            self._commit_io.shutdown(wait=True)
            for pool in [*self._fetch_pools.values(), *self._read_pools.values()]:
                pool.shutdown(wait=True)
            if self._transaction is not None:
                self._transaction.close()

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
        for tp in [tp for tp in self.workers if tp not in assignment.owned]:
            logger.warning("lost partition %s/%d", tp.topic, tp.partition, extra={"group": self.group})
            self.workers.pop(tp).abort()
        for tp in assignment.revoke:
            if tp in self.workers and tp not in self._revoking:
                self._revoking.add(tp)
                self._spawn(self._revoke(tp, self.workers[tp]))
        started = False
        for tp in sorted(assignment.owned - self.workers.keys() - assignment.revoke):
            start = await self._call(self._start_offset, tp)
            self.workers[tp] = _Worker(self, tp, start)
            started = True
            logger.info("assigned %s/%d from offset %d", tp.topic, tp.partition, start, extra={"group": self.group})
        if started:
            self.wake.set()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _revoke(self, tp: TopicPartition, worker: _Worker) -> None:
        try:
            await worker.drain()
            await self._commit([worker])
            if self.workers.get(tp) is worker:
                del self.workers[tp]
            assert self._membership is not None
            await self._call(self._membership.release, [tp], pool=self._group_io)
            logger.info("handed over %s/%d", tp.topic, tp.partition, extra={"group": self.group})
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
        await self._remembered()  # the membership flushes them and commits past them
        for worker in workers:
            logger.info("handing over %s/%d", worker.tp.topic, worker.tp.partition, extra={"group": self.group})
        return {worker.tp: point for worker in workers if (point := worker.commit_point()) != worker.committed}

    def _start_offset(self, tp: TopicPartition) -> int:
        committed = self.log.committed(self.group, tp.topic).get(tp.partition)
        return self.log.earliest_offset(tp.topic, tp.partition) if committed is None else committed

    # --- fetching -------------------------------------------------------------------------
    async def _fetch(self, topic: str) -> None:
        """Read the owned partitions of `topic` and hand records to their workers.

        What this app's publisher appends reaches the workers without a read (`_take_local`);
        this loop reads everything else. Reads run on the event loop (`Log.read_now`: WAL reads
        never wait for a lock, and a thread hop costs more than a short read; a Kafka reader
        hands over what it has fetched), and on a thread where the log cannot answer at once or
        a waiter saw records that the loop's read did not get. When there is nothing new it waits
        for whichever comes first: local records that the workers could not take as they came,
        or news from other publishers and processes: a changed `Log.data_version`, polled on
        the loop when the log has a cheap one (a thread waiting on a busy process's GIL
        notices late), else `Log.wait` in a thread.
        """
        loop = asyncio.get_running_loop()
        behind = asyncio.Event()
        stop_listening = self.app.publisher.listen(topic, lambda records: self._take_local(topic, records, behind))
        waiter: asyncio.Future[bool] | None = None
        announced = False  # a waiter saw records past the positions: read them even if it waits
        try:
            while True:
                ready = {tp.partition: w for tp, w in self.workers.items() if tp.topic == topic and w.wants_more()}
                if not ready:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), _WAIT)
                    continue
                positions = {p: w.next_fetch for p, w in ready.items()}
                behind.clear()  # before reading: local records left over from now on set it
                try:
                    version = self.log.data_version() if self.log.poll is not None else None
                    batches = await self._read(topic, positions, announced)
                    announced = False
                except InmotionError as exc:
                    logger.warning("fetch from %s failed: %s", topic, exc, extra={"group": self.group})
                    await asyncio.sleep(_WAIT)
                    continue
                for partition, records in batches.items():
                    if records:
                        ready[partition].dispatch(records)
                        positions[partition] = records[-1].offset + 1
                if behind.is_set() or any(len(records) == _FETCH_LIMIT for records in batches.values()):
                    await asyncio.sleep(0)  # let the handlers run, then read what is already there
                    continue
                if version is not None:
                    await self._poll(version, behind)
                    continue
                # Nothing more for now. The waiter returns at once if others appended meanwhile.
                if waiter is None or waiter.done():
                    waiter = loop.run_in_executor(self._fetch_pools[topic], self.log.wait, topic, positions, _WAIT)
                local: asyncio.Future[object] = asyncio.ensure_future(behind.wait())
                try:
                    await asyncio.wait((waiter, local), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    local.cancel()
                if waiter.done() and waiter.exception() is not None:
                    logger.warning("waiting on %s failed: %s", topic, waiter.exception(), extra={"group": self.group})
                    waiter = None
                    await asyncio.sleep(_WAIT)
                elif waiter.done():
                    announced = waiter.result()
        finally:
            stop_listening()

    async def _read(self, topic: str, positions: Mapping[int, int], announced: bool) -> dict[int, list[Record]]:
        """A batch of records from each partition: what the log hands over at once, else (the
        log cannot tell without waiting, or `announced` says there is more than it handed
        over) what a read in a thread returns."""
        batches = {}
        for partition, offset in positions.items():
            records = self.log.read_now(topic, partition, offset, _FETCH_LIMIT)
            if records is None or (announced and not records):
                records = await asyncio.get_running_loop().run_in_executor(
                    self._read_pools[topic], self.log.read, topic, partition, offset, _FETCH_LIMIT
                )
            batches[partition] = records
        return batches

    async def _poll(self, version: int, behind: asyncio.Event) -> None:
        """Return once the log's data version is no longer `version` (taken before the last
        read), local records were left over, or _WAIT seconds passed."""
        poll = self.log.poll
        assert poll is not None
        deadline = time.monotonic() + _WAIT
        while not behind.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            try:
                if self.log.data_version() != version:
                    return
            except InmotionError as exc:
                logger.warning("polling %s failed: %s", self.log.url, exc, extra={"group": self.group})
                await asyncio.sleep(_WAIT)
                return

    def _take_local(self, topic: str, records: list[Record] | None, behind: asyncio.Event) -> None:
        """Records this app's publisher has just appended to `topic`. Each owned partition's go
        straight to its worker when they continue from (or overlap) its fetch position; when
        they do not (others appended in between, the buffer is full, or the log did not say
        which records it wrote), `behind` makes the fetch loop read from the log instead.
        Partitions this member does not own are left alone."""
        if records is None:
            behind.set()
            return
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            batch = by_partition.get(record.partition)
            if batch is None:
                by_partition[record.partition] = [record]
            else:
                batch.append(record)
        for partition, batch in by_partition.items():
            worker = self.workers.get(TopicPartition(topic, partition))
            if worker is None:
                continue
            if batch[0].offset <= worker.next_fetch and worker.wants_more():
                worker.dispatch(batch)
            else:
                behind.set()

    # --- committing -----------------------------------------------------------------------
    async def _commit_loop(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            await asyncio.sleep(self.app.commit_interval)
            try:
                await self._commit([w for tp, w in self.workers.items() if tp not in self._revoking])
            except InmotionError as exc:
                logger.warning("commit failed: %s", exc, extra={"group": self.group})

    async def _commit(self, workers: list[_Worker]) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        points = {}
        for worker in workers:
            point = worker.commit_point()
            if point != worker.committed:
                by_topic.setdefault(worker.tp.topic, {})[worker.tp.partition] = point
                points[worker] = point
        # Commits wait on a thread of their own: on Kafka one made during a rebalance waits for
        # it to end, which may wait for handlers that need `_io`.
        if by_topic and self.subscription.idempotent:
            await self._remembered()
            await self._call(self.coordinator.flush, self.group, pool=self._commit_io)
        for topic, offsets in by_topic.items():
            if not await soon(self.log, functools.partial(self.log.commit_now, self.group, topic, offsets)):
                await self._call(self.log.commit, self.group, topic, offsets, pool=self._commit_io)
        for worker, point in points.items():
            worker.committed = point

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
        if self.subscription.idempotent and now - self._last_prune > 60:
            self._last_prune = now
            cutoff = int((now - self.subscription.dedupe_window) * 1000)
            await self._call(self.coordinator.forget_before, self.group, cutoff)

    # --- handling -------------------------------------------------------------------------
    def counter(self, name: str, topic: str) -> Counter:
        """One of this group's counters for `topic`: consumed, skipped, failed, retried, dead_lettered."""
        counters = self._counter_cache.get(topic)
        if counters is None:
            counters = self._counter_cache[topic] = {
                kind: self.app.metrics.counter(f"inmotion_{kind}_total", group=self.group, topic=topic)
                for kind in ("consumed", "skipped", "failed", "retried", "dead_lettered")
            }
        return counters[name]

    async def process(self, record: Record, worker: _Worker) -> bool:
        """Hand one record to the handler (with retries, dead-lettering, dedupe); True when the
        handler finished with it, for the worker to count in the consumed metric."""
        sub = self.subscription
        handler = sub.handler
        content_type, elsewhere = self._content_type(record)
        if elsewhere:
            self.counter("skipped", record.topic).add()  # redriven for another group only
            return False
        event: Event | None = None
        try:
            if self._needs_event:
                event = record.event()
                if sub.filter is not None and not sub.filter.matches(event):
                    self.counter("skipped", record.topic).add()
                    return False
                payload = handler.decode(event)
            else:  # the handler needs only the payload: skip building the envelope
                payload = handler.decode_record(record, content_type)
            if event is not None:
                key = (event.source, event.id)
            else:
                key = source_and_id(record.headers) if sub.idempotent else ("", "")
        except InvalidEvent as exc:
            await self._dead_letter(record, exc, 1)
            return False
        if sub.idempotent and not sub.transaction and await self._seen(key, worker):
            self.counter("skipped", record.topic).add()
            return False
        if not await self.call_with_retries(record, payload, event, worker):
            return False
        if sub.idempotent and not sub.transaction:
            self._remember(key)
        return True

    async def call_with_retries(
        self, record: Record, payload: Any, event: Event | None, worker: _Worker, failure: Exception | None = None
    ) -> bool:
        """Call the handler until it finishes (True) or its retries run out and the record is
        dead-lettered, or a transactional handler finds it handled before (False). `failure`:
        the first try already failed with it."""
        sub = self.subscription
        handler = sub.handler
        attempt = 1
        while True:
            if failure is None:
                context = None if event is None else Context(event, record, self.group, attempt, self.app)
                try:
                    if sub.transaction:
                        assert context is not None
                        return await self._handle_in_transaction(payload, context, worker)
                    await handler.call(payload, context)
                    return True
                except _Abandon:
                    raise
                except Exception as error:
                    failure = error
            self.counter("failed", record.topic).add()
            retry = sub.retry.should_retry(failure, attempt) or sub.dead_letter is None
            logger.warning(
                "handler failed (attempt %d%s): %s: %s",
                attempt,
                ", will retry" if retry else "",
                type(failure).__name__,
                failure,
                extra={
                    "group": self.group,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                },
            )
            if not retry:
                await self._dead_letter(record, failure, attempt)
                return False
            self.counter("retried", record.topic).add()
            await self._pause(sub.retry.delay(min(attempt, sub.retry.attempts)), worker)
            attempt += 1
            failure = None

    def _content_type(self, record: Record) -> tuple[str | None, bool]:
        """The record's content type, and whether it was redriven for another group only (its
        last header is `deadletter.FOR_GROUP`, naming another group)."""
        headers = record.headers
        if not headers:
            return None, False
        last = headers[-1]
        if last == _JSON_HEADER:  # what inmotion writes: content type last, no redrive mark
            return JSON_CONTENT_TYPE, False
        elsewhere = last[0] == deadletter.FOR_GROUP and (last[1] or b"").decode("utf-8", "replace") != self.group
        content_type = None
        for name, value in headers:  # a Kafka header may have no value (None)
            if (name == "content-type" or name == "Content-Type") and value is not None:
                content_type = JSON_CONTENT_TYPE if value == _JSON_BYTES else value.decode("utf-8", "replace")
        return content_type, elsewhere

    def plain_payload(self, record: Record) -> Any:
        """The payload of a record for a plain subscription (see `plain`); `_NOT_PLAIN` for a
        record redriven for another group or whose payload does not decode, which `process`
        then handles in full (skipping or dead-lettering it)."""
        content_type, elsewhere = self._content_type(record)
        if elsewhere:
            return _NOT_PLAIN
        try:
            return self._decode_record(record, content_type)
        except InvalidEvent:
            return _NOT_PLAIN

    async def _seen(self, key: tuple[str, str], worker: _Worker) -> bool:
        """Has the group handled this event already? Asks again (after a backoff) while the
        dedupe records cannot be read: handling it without knowing could repeat its effects."""
        attempt = 1
        while True:
            if key in self._unwritten:
                return True
            try:
                # every coordinator answers without waiting (a WAL read, or memory): on the loop
                return bool(self.coordinator.seen(self.group, [key]))
            except InmotionError as exc:
                logger.warning("reading dedupe records failed: %s", exc, extra={"group": self.group})
                await self._pause(self.subscription.retry.delay(min(attempt, self.subscription.retry.attempts)), worker)
                attempt += 1

    def _remember(self, key: tuple[str, str]) -> None:
        """Record `key` as handled, in one write with the keys of every event that finishes
        meanwhile, without waiting for it: the worker goes on to its next event, a copy of
        this one is caught by `_unwritten` until the write is done, and offsets are committed
        only after the records of the events they pass (`_remembered`). A failed write is
        logged, not raised: the event was handled, and without its record a later copy is
        merely handled again."""
        self._unwritten.add(key)
        self._to_remember.append(key)
        if self._remembering is None or self._remembering.done():
            self._remembering = asyncio.create_task(self._write_remembered())

    async def _write_remembered(self) -> None:
        while self._to_remember:
            batch, self._to_remember = self._to_remember, []
            try:
                await self._call(self.coordinator.remember, self.group, batch)
            except Exception as exc:  # commits wait for this task: it must not die
                logger.warning("recording %d dedupe record(s) failed: %s", len(batch), exc, extra={"group": self.group})
            finally:
                self._unwritten.difference_update(batch)

    async def _remembered(self) -> None:
        """Return once the dedupe records of every event handled so far are written (or their
        write failed): before offsets past those events are committed."""
        while self._remembering is not None and not self._remembering.done():
            await asyncio.shield(self._remembering)

    async def _pause(self, seconds: float, worker: _Worker) -> None:
        """Wait out a backoff, unless the worker stops first."""
        sleeping = asyncio.ensure_future(self.app.clock.sleep(seconds))
        stopping = asyncio.ensure_future(worker.stopping.wait())
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        sleeping.cancel()
        stopping.cancel()
        if worker.stopping.is_set():
            raise _Abandon

    async def _dead_letter(self, record: Record, error: BaseException, attempts: int) -> None:
        topic = self.subscription.dead_letter
        if topic is None:  # nowhere to put it (only an undecodable event gets here): the worker
            raise error  # logs it and tries it again after a backoff, holding up its partition
        message = deadletter.dead_letter(record, error, attempts, self.group, self.app.clock.time())
        await self.app.publisher.send(topic, message)
        self.counter("dead_lettered", record.topic).add()
        logger.error(
            "dead-lettered %s/%d@%d to %s after %d attempt(s): %s: %s",
            record.topic,
            record.partition,
            record.offset,
            topic,
            attempts,
            type(error).__name__,
            error,
            extra={"group": self.group},
        )

    async def _handle_in_transaction(self, payload: Any, context: Context, worker: _Worker) -> bool:
        """Run the handler inside one transaction with the dedupe record, the events it
        publishes and the group's position (the backend's `Transaction`); False when the group
        had handled the event already."""
        transaction = self._transaction
        assert transaction is not None
        assert self._membership is not None
        event = context.event
        key = (event.source, event.id)
        deferred: list[tuple[str, Event, Mapping[str, str] | None]] = []
        published: dict[str, int] = {}
        async with self._tx_lock:
            await begin(transaction, self._io)
            try:
                if transaction.seen(key):
                    transaction.rollback()
                    self.counter("skipped", worker.tp.topic).add()
                    return False
                context.db = transaction.connection
                context.deferred = deferred
                await self.subscription.handler.call(payload, context)
                # the events the handler published go into the log in the same transaction:
                # stored with its effects and its position, or not at all
                for topic, follow_up, headers in deferred:
                    transaction.append(topic, [to_message(follow_up, headers)], self.app.topic_config)
                    published[topic] = published.get(topic, 0) + 1
                point = worker.commit_point(finishing=context.record.offset)
                if not transaction.commit(key, worker.tp, point, self._membership.member_id):
                    raise _Abandon  # the partition is another member's now
            except BaseException:
                transaction.rollback()
                raise
        for topic, count in published.items():
            self.app.metrics.add("inmotion_published_total", count, topic=topic)
        return True
