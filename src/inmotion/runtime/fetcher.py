"""The fetcher of one topic of a subscription: reads its owned partitions and hands records to
their workers, from the log or straight from this app's publisher."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Mapping

from inmotion.errors import CorruptRecord, InmotionError
from inmotion.log import Log, Record, TopicPartition
from inmotion.runtime.publisher import Publisher
from inmotion.runtime.worker import Worker

logger = logging.getLogger("inmotion.runtime")

_FETCH_LIMIT = 1000
_WAIT = 0.1


class Fetcher:
    def __init__(
        self, log: Log, publisher: Publisher, topic: str, group: str, workers: Mapping[TopicPartition, Worker]
    ) -> None:
        self.log = log
        self.publisher = publisher
        self.topic = topic
        self.group = group
        self.workers = workers
        self.wake = asyncio.Event()
        """Set when a worker has room again, or has just been assigned."""
        self._wait_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-fetch:{topic}")
        # reads that wait (a Kafka seek, or records not fetched yet), apart from `Log.wait`
        self._read_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-read:{topic}")

    def close(self) -> None:
        self._wait_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)

    async def run(self) -> None:
        """Read the owned partitions of the topic and hand records to their workers.

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
        stop_listening = self.publisher.listen(self.topic, lambda records: self._take_local(records, behind))
        waiter: asyncio.Future[bool] | None = None
        announced = False  # a waiter saw records past the positions: read them even if it waits
        failing: str | None = None  # the error the last reads failed with
        try:
            while True:
                ready = {tp.partition: w for tp, w in self.workers.items() if tp.topic == self.topic and w.wants_more()}
                if not ready:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), _WAIT)
                    continue
                positions = {p: w.next_fetch for p, w in ready.items()}
                behind.clear()  # before reading: local records left over from now on set it
                try:
                    version = self.log.data_version() if self.log.poll is not None else None
                    batches, damaged = await self.read(positions, announced)
                    announced = False
                    failing = None
                except InmotionError as exc:
                    if str(exc) != failing:  # once, not ten times a second (a deleted topic)
                        logger.warning("fetch from %s failed: %s", self.topic, exc, extra={"group": self.group})
                        failing = str(exc)
                    await asyncio.sleep(_WAIT)
                    continue
                for partition, records in batches.items():
                    if records:
                        ready[partition].dispatch(records)
                        positions[partition] = records[-1].offset + 1
                for partition, error in damaged.items():  # its worker stops there or goes past them
                    ready[partition].corrupt(error)
                if behind.is_set() or damaged or any(len(records) == _FETCH_LIMIT for records in batches.values()):
                    await asyncio.sleep(0)  # let the handlers run, then read what is already there
                    continue
                if version is not None:
                    await self._poll(version, behind)
                    continue
                # Nothing more for now. The waiter returns at once if others appended meanwhile.
                if waiter is None or waiter.done():
                    waiter = loop.run_in_executor(self._wait_pool, self.log.wait, self.topic, positions, _WAIT)
                local: asyncio.Future[object] = asyncio.ensure_future(behind.wait())
                try:
                    await asyncio.wait((waiter, local), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    local.cancel()
                if waiter.done() and waiter.exception() is not None:
                    logger.warning(
                        "waiting on %s failed: %s", self.topic, waiter.exception(), extra={"group": self.group}
                    )
                    waiter = None
                    await asyncio.sleep(_WAIT)
                elif waiter.done():
                    announced = waiter.result()
        finally:
            stop_listening()

    async def read(
        self, positions: Mapping[int, int], announced: bool
    ) -> tuple[dict[int, list[Record]], dict[int, CorruptRecord]]:
        """A batch of records from each partition: what the log hands over at once, else (the
        log cannot tell without waiting, or `announced` says there is more than it handed
        over) what a read in a thread returns. And the partitions whose next records the log
        cannot decode, apart: the others' reads go on."""
        batches = {}
        damaged = {}
        for partition, offset in positions.items():
            try:
                records = self.log.read_now(self.topic, partition, offset, _FETCH_LIMIT)
                if records is None or (announced and not records):
                    records = await asyncio.get_running_loop().run_in_executor(
                        self._read_pool, self.log.read, self.topic, partition, offset, _FETCH_LIMIT
                    )
            except CorruptRecord as error:
                damaged[partition] = error
                continue
            batches[partition] = records
        return batches, damaged

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

    def _take_local(self, records: list[Record] | None, behind: asyncio.Event) -> None:
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
            worker = self.workers.get(TopicPartition(self.topic, partition))
            if worker is None:
                continue
            if batch[0].offset <= worker.next_fetch and worker.wants_more():
                worker.dispatch(batch)
            else:
                behind.set()
