"""A job split across processes: each process that runs it split joins the consumer group
`sql.<job>` over the job's topic, and runs a shard for each partition the group gives it: the
job's queries over that partition alone, checkpointed as a job of its own (`<job>#<partition>`).
A partition moves between processes with its state: its next owner resumes from the shard's
last checkpoint (a process that stops checkpoints its shards and leaves; one killed loses its
partitions when its session times out). Each shard's watermark is its partition's own.

A job splits only if its state is per key of the topic's partitioning (events of one key share a
partition): its queries read one topic, join nothing, and every GROUP BY, Top-N partition and
OVER partition includes a column of the events' key, declared with `'key.fields' = 'column'` in
the table's WITH (Flink's option) or as a column `METADATA FROM 'key'`. Queries without state
always split."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from inmotion.errors import InvalidConfig
from inmotion.log import Log
from inmotion.log.groups import Membership
from inmotion.streams.checkpoints import JobTakenOver
from inmotion.streams.job import Job, Results
from inmotion.streams.operators import Plan
from inmotion.streams.sql import Table

_logger = logging.getLogger("inmotion.streams")

SEPARATOR = "#"
"""Between a split job's name and a shard's partition: `<job>#<partition>`."""


def split_topic(plans: Sequence[Plan]) -> str:
    """The one topic the queries read, if their state is per key of its partitioning; else an
    `InvalidConfig` saying why the job cannot split."""
    topics = set()
    for number, plan in enumerate(plans, 1):
        if plan.join is not None:
            raise InvalidConfig(f"query {number} joins two tables: a job with joins runs in one process")
        keys = key_columns(plan.source)
        for level in [plan, *([plan.cascade.inner] if plan.cascade is not None else [])]:
            if level.grouped and not any(key.name in keys for key in level.keys):
                grouped = ", ".join(key.name for key in level.keys) or "nothing"
                raise _unkeyed(number, f"groups by {grouped}", plan.source)
        if plan.rank is not None and not any(column in keys for column in plan.rank.partition):
            raise _unkeyed(number, f"ranks by {', '.join(plan.rank.partition) or 'nothing'}", plan.source)
        if plan.over is not None and not any(key.name in keys for key in plan.over.partition):
            over = ", ".join(key.name for key in plan.over.partition) or "nothing"
            raise _unkeyed(number, f"aggregates OVER partitions by {over}", plan.source)
        topics.add(plan.source.topic)
    if len(topics) != 1:
        read = ", ".join(sorted(topics))
        raise InvalidConfig(f"the queries read {len(topics)} topics ({read}): a split job reads one")
    return topics.pop()


def key_columns(table: Table) -> set[str]:
    """The columns of the events' key: 'key.fields', and those METADATA FROM 'key'."""
    return set(table.key_fields) | {column.name for column in table.columns if column.metadata == "key"}


def _unkeyed(number: int, what: str, table: Table) -> InvalidConfig:
    declared = ", ".join(sorted(key_columns(table))) or "none declared"
    return InvalidConfig(
        f"query {number} {what}, no column of the events' key ({declared}: 'key.fields' = 'column' in"
        f" {table.name}'s WITH, or a column METADATA FROM 'key'): split by partition, a key's rows would"
        " meet in different processes"
    )


class Shards:
    """This process's shards of a split job, as its group membership deals them."""

    def __init__(
        self,
        log: Log,
        sql: str,
        name: str,
        *,
        idle_timeout: float = 5.0,
        interval: float = 0.2,
        session_timeout: float = 10.0,
    ) -> None:
        self.log = log
        self.sql = sql
        self.name = name
        self.idle_timeout = idle_timeout
        self.interval = interval
        self.topic = split_topic(Job(log, sql, name=name).plans)
        self.session_timeout = session_timeout
        self.running: dict[int, tuple[threading.Thread, threading.Event, list[BaseException]]] = {}

    def run(self, stop: threading.Event, results: Results | None = None) -> None:
        """Run this process's shards until `stop` is set, following the group's deal; then stop
        them (each checkpoints) and leave the group."""
        partitions = {self.topic: self.log.partition_count(self.topic)}
        membership = self.log.group_coordinator().join(
            f"sql.{self.name}", partitions, session_timeout=self.session_timeout
        )
        try:
            while not stop.is_set():
                self._follow(membership, results)
                stop.wait(membership.heartbeat_interval)
        finally:
            for partition in list(self.running):
                self._stop(partition)
            membership.leave()

    def _follow(self, membership: Membership, results: Results | None) -> None:
        assignment = membership.heartbeat()
        for partition in [p for p, (thread, _, _) in self.running.items() if not thread.is_alive()]:
            _, _, errors = self.running.pop(partition)
            if errors and not isinstance(errors[0], JobTakenOver):
                raise errors[0]
            _logger.warning("job %s: partition %d was taken over by another process", self.name, partition)
        for revoked in assignment.revoke:
            if revoked.partition in self.running:
                self._stop(revoked.partition)
            membership.release([revoked])
        for owned in sorted(assignment.owned - assignment.revoke, key=lambda tp: tp.partition):
            if owned.partition not in self.running:
                self._start(owned.partition, results)

    def _start(self, partition: int, results: Results | None) -> None:
        name = f"{self.name}{SEPARATOR}{partition}"
        job = Job(
            self.log,
            self.sql,
            name=name,
            idle_timeout=self.idle_timeout,
            interval=self.interval,
            partitions=[partition],
        )
        stop, errors = threading.Event(), []

        def run() -> None:
            try:
                job.run(stop, results)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"inmotion-sql-{job.name}", daemon=True)
        thread.start()
        self.running[partition] = (thread, stop, errors)
        _logger.info("job %s: runs partition %d of %s", self.name, partition, self.topic)

    def _stop(self, partition: int) -> None:
        thread, stop, errors = self.running.pop(partition)
        stop.set()
        thread.join()
        if errors and not isinstance(errors[0], JobTakenOver):
            raise errors[0]
        _logger.info("job %s: let partition %d go", self.name, partition)
