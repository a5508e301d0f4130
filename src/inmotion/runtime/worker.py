"""A worker: the events of one owned partition, from the fetch position to the commit point.

Events wait in per-key chains: a chain runs its events one after the other through the
subscription's pipeline, and at most `concurrency` events run at once. With `concurrency=1`
every event is in one chain, so the partition is handled strictly in order. A partition's
commit point is the lowest offset whose handling has not finished, so a commit never passes
unfinished work (at-least-once).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from inmotion.errors import CorruptRecord
from inmotion.log import Record, TopicPartition
from inmotion.runtime.metrics import Counter
from inmotion.runtime.offsets import OffsetTracker
from inmotion.runtime.pipeline import ABANDONED, HANDLED, Pipeline

logger = logging.getLogger("inmotion.runtime")

BUFFER = 4000
"""Events a worker holds (fetched, not finished) before the fetcher stops reading for it."""
_TALLY = 64
"""Events a worker handles before it adds them to the consumed metric (and whenever it runs out
of events): one locked add per event was a few percent of a busy consumer's time."""


class Worker:
    def __init__(
        self,
        pipeline: Pipeline,
        tp: TopicPartition,
        start: int,
        concurrency: int,
        consumed: Counter,
        room: Callable[[], None],
    ) -> None:
        self.pipeline = pipeline
        self.tp = tp
        self.offsets = OffsetTracker(start)
        self.committed = start
        self.stopping = asyncio.Event()
        self.halted = False
        """Stopped at records the log cannot decode (`on_corrupt="stop"`): nothing more is read."""
        self.lapsed = False
        """Stopped because a transaction found the partition's lease lapsed: the consumer starts
        the partition over from its committed offset if the group still gives it to this member."""
        self._room = room
        """Called when the worker has room for more events (the fetcher may read again)."""
        self._ordered = concurrency == 1
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._chains: dict[object, collections.deque[Record]] = {}
        self._consumed = consumed
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def next_fetch(self) -> int:
        return self.offsets.next_offset

    def wants_more(self) -> bool:
        return not self.stopping.is_set() and not self.halted and len(self.offsets) < BUFFER

    def commit_point(self, finishing: int | None = None) -> int:
        return self.offsets.commit_point(finishing)

    def dispatch(self, records: list[Record]) -> None:
        if self.stopping.is_set():
            return
        offsets, chains = self.offsets, self._chains
        if self._ordered:  # one chain for the whole partition: the batch joins it at once
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
            # events without a key need no order: they share `concurrency` chains, not a task each
            chain = record.key if record.key is not None else offset % self._concurrency
            waiting = chains.get(chain)
            if waiting is not None:
                waiting.append(record)
            else:
                chains[chain] = collections.deque([record])
                self._start_chain(chain)

    def corrupt(self, error: CorruptRecord) -> None:
        """The log cannot decode the records from the fetch position to `error.last`: stop the
        partition there, so that its commit point stays before them, or skip or dead-letter
        them (the subscription's `on_corrupt`)."""
        if self.stopping.is_set() or self.halted or error.last < self.offsets.next_offset:
            return
        if self.pipeline.subscription.on_corrupt == "stop":
            self.halted = True
            logger.error(
                "stopped reading %s/%d at offset %d: %s (on_corrupt='skip' or 'dead-letter' goes past it)",
                self.tp.topic,
                self.tp.partition,
                self.offsets.next_offset,
                error,
                extra={"group": self.pipeline.group},
            )
            return
        offsets = list(range(self.offsets.next_offset, error.last + 1))
        self.offsets.start_many(offsets)
        self._spawn(self._pass_corrupt(error, offsets))

    async def _pass_corrupt(self, error: CorruptRecord, offsets: list[int]) -> None:
        faults = 0  # in a row: the dead-letter append failed
        while not self.stopping.is_set():
            try:
                await self.pipeline.pass_corrupt(error, offsets[0])
            except Exception as fault:
                faults += 1
                if not await self._fault(offsets[0], fault, faults):
                    return
                continue
            for offset in offsets:
                self.offsets.finish(offset)
            self._room()
            return

    def _start_chain(self, chain: object) -> None:
        self._spawn(self._run_chain(chain))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_chain(self, chain: object) -> None:
        waiting = self._chains[chain]
        consumed = 0  # handled, not yet counted in the consumed metric (counted every _TALLY)
        deliver = self.pipeline.deliver
        finish = self.offsets.finish
        stopping = self.stopping
        faults = 0  # in a row, on the first waiting record
        try:
            while waiting and not stopping.is_set():
                record = waiting[0]
                try:
                    if self._ordered:
                        outcome = await deliver(record, self)
                    else:
                        async with self._slots:
                            if stopping.is_set():
                                return
                            outcome = await deliver(record, self)
                except Exception as fault:  # not the handler's: the log failed (a dead-letter append)
                    faults += 1
                    if not await self._fault(record.offset, fault, faults):
                        return
                    continue  # the same record again: it is not finished, so nothing passes it
                if outcome is ABANDONED:
                    if not stopping.is_set():  # not stopped: its transaction found the lease lapsed
                        self.lapsed = True
                        self.abort()
                    return
                faults = 0
                if outcome is HANDLED:
                    consumed += 1
                if finish(record.offset) <= BUFFER // 2:
                    self._room()
                waiting.popleft()
                if consumed >= _TALLY:
                    self._consumed.add(consumed)
                    consumed = 0
            if not waiting:
                del self._chains[chain]
        finally:
            if consumed:
                self._consumed.add(consumed)

    async def _fault(self, offset: int, fault: Exception, faults: int) -> bool:
        """Log a fault that handling the record at `offset` ran into outside the handler and
        wait a backoff before the record is tried again; False if the worker stops meanwhile."""
        logger.error(
            "handling %s/%d@%d failed: %s: %s; trying it again in %.1fs",
            self.tp.topic,
            self.tp.partition,
            offset,
            type(fault).__name__,
            fault,
            self.pipeline.delay(faults),
            exc_info=fault,
            extra={"group": self.pipeline.group},
        )
        return await self.pipeline.backoff(faults, self)

    async def drain(self) -> None:
        """Finish the events being handled, drop the waiting ones (they stay uncommitted)."""
        self.stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def abort(self) -> None:
        """The partition is gone: stop at once, commit nothing."""
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
