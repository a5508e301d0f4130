"""The committer of a subscription: stores its workers' commit points as the group's offsets,
every `commit_interval` and when partitions are handed over or the consumer stops."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable, Mapping

from inmotion.errors import InmotionError, UnknownTopic
from inmotion.log import Coordinator, Log
from inmotion.runtime.dedupe import Dedupe
from inmotion.runtime.publisher import soon
from inmotion.runtime.worker import Worker

logger = logging.getLogger("inmotion.runtime")


class Committer:
    def __init__(
        self, log: Log, coordinator: Coordinator, group: str, dedupe: Dedupe | None, topic_ids: Mapping[str, str | None]
    ) -> None:
        self.log = log
        self.topic_ids = topic_ids
        """The id each topic had when its workers started (see `Log.topic_id`)."""
        self.coordinator = coordinator
        self.group = group
        self.dedupe = dedupe
        # Commits wait on a thread of their own: on Kafka one made during a rebalance waits for
        # it to end, which may wait for handlers that need the consumer's other threads.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"inmotion-commit:{group}")

    async def run(self, interval: float, workers: Callable[[], list[Worker]], stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            await asyncio.sleep(interval)
            try:
                await self.commit(workers())
            except InmotionError as exc:
                logger.warning("commit failed: %s", exc, extra={"group": self.group})

    async def commit(self, workers: list[Worker]) -> None:
        by_topic: dict[str, dict[int, int]] = {}
        points = {}
        for worker in workers:
            point = worker.commit_point()
            if point != worker.committed:
                by_topic.setdefault(worker.tp.topic, {})[worker.tp.partition] = point
                points[worker] = point
        loop = asyncio.get_running_loop()
        if by_topic and self.dedupe is not None:  # the dedupe records of what the offsets pass first
            await self.dedupe.written()
            await loop.run_in_executor(self._pool, self.coordinator.flush, self.group)
        for topic, offsets in by_topic.items():
            if not self._same_topic(topic):
                continue
            # forward only: a commit made late (the process was paused past its session) must not
            # take the group back over events another member has handled since
            commit_now = functools.partial(self.log.commit_now, self.group, topic, offsets, forward_only=True)
            if not await soon(self.log, commit_now):
                commit = functools.partial(self.log.commit, self.group, topic, offsets, forward_only=True)
                await loop.run_in_executor(self._pool, commit)
        for worker, point in points.items():
            worker.committed = point

    def _same_topic(self, topic: str) -> bool:
        """Is `topic` still the one the workers started on? Offsets of a topic deleted (and
        created again) under them would skip the new topic's first records; the consumer
        starts such workers over at its next heartbeat."""
        started = self.topic_ids.get(topic)
        if started is None:  # the backend cannot tell
            return True
        try:
            return self.log.topic_id(topic) == started
        except UnknownTopic:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=True)
