"""Reading one source table of a query: its topic's partitions in batches from their offsets,
and its watermark.

The watermark of a source is the smallest of its partitions' (the newest event time read from
each, less the table's delay), leaving out partitions that have nothing to read and have been
silent for `idle_timeout`, so that an idle partition never holds windows back. Within a
partition the watermark moves row by row (`row_watermarks`), so which rows are late does not
depend on how reads were batched: a job restarted from a checkpoint drops the same ones."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from inmotion.log import Log, Record
from inmotion.streams.decode import Decoder
from inmotion.streams.sql import Table
from inmotion.streams.windows import event_times

BATCH = 10_000
"""Records read from a partition at a time."""
NEVER = -(2**62)
"""Before any event time."""


class Scan:
    def __init__(self, table: Table, reads: tuple[str, ...], idle_timeout: float) -> None:
        self.table = table
        self.topic = table.topic
        self.decoder = Decoder(table, reads)
        self.idle_timeout = idle_timeout
        watermark = table.watermark
        self.delay = watermark.delay_ms if watermark is not None else 0
        self.time_column = watermark.column if watermark is not None else None
        self.offsets: dict[int, int] = {}
        """By partition: the next offset to read."""
        self.ends: dict[int, int] | None = None
        """A bounded run's last offsets (exclusive) per partition."""
        self.times: dict[int, int] = {}
        """By partition: the newest event time read (ms); checkpointed with the offsets."""
        self.heard: dict[int, float] = {}
        """By partition: when it last had records to read."""

    def start(
        self,
        log: Log,
        offsets: dict[int, int] | None,
        now: float,
        *,
        bounded: bool,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Read from `offsets` (None: where the table says a new job starts), every partition
        of the topic or only `partitions`."""
        topic = self.topic
        chosen = range(log.partition_count(topic)) if partitions is None else partitions
        if offsets is None:
            first = log.earliest_offset if self.table.start == "earliest-offset" else log.latest_offset
            offsets = {p: first(topic, p) for p in chosen}
        self.offsets = {p: offsets.get(p, log.earliest_offset(topic, p)) for p in chosen}
        self.heard = dict.fromkeys(chosen, now)
        if bounded:
            self.ends = {p: log.latest_offset(topic, p) for p in chosen}

    def read(self, log: Log, now: float) -> Iterator[tuple[int, list[Record]]]:
        """A batch from each partition that has records: (partition, records)."""
        for partition, offset in self.offsets.items():
            limit = BATCH if self.ends is None else min(BATCH, self.ends[partition] - offset)
            if limit <= 0:
                continue
            records = log.read(self.topic, partition, offset, limit)
            if self.ends is not None:
                records = [r for r in records if r.offset < self.ends[partition]]
            if records:
                self.heard[partition] = now
                self.offsets[partition] = records[-1].offset + 1
                yield partition, records

    def remaining(self) -> int:
        """A bounded run's records left to read."""
        assert self.ends is not None
        return sum(max(0, end - self.offsets[p]) for p, end in self.ends.items())

    # --- watermarks ---------------------------------------------------------------------------
    def watermark(self, now: float) -> int | None:
        """The smallest watermark of the partitions that are not idle (all idle: the newest
        time read, less the delay); None until each has one, and for a table without one."""
        if self.time_column is None:
            return None
        marks = self.marks(now)
        if marks is None:
            return None
        if not marks:
            return max(self.times.values()) - self.delay if self.times else None
        return min(marks)

    def marks(self, now: float, leave_out: int | None = None) -> list[int] | None:
        """The watermarks of the partitions (but `leave_out`) that are not idle; None if one
        of them has none yet. Idle: nothing to read, and no records for `idle_timeout`."""
        found = []
        for partition in self.offsets:
            if partition == leave_out or now - self.heard[partition] >= self.idle_timeout:
                continue
            time = self.times.get(partition)
            if time is None:
                return None
            found.append(time - self.delay)
        return found

    def row_watermarks(self, partition: int, batch: pa.Table, now: float, bound: int | None, held: bool) -> Any:
        """The watermark each row of `batch` (from `partition`) meets, NULL where there is none,
        and the partition's newest event time moved past the batch. `bound`: the smallest
        watermark of the query's other sources (None: no bound); `held`: one of them has none."""
        previous = self.times.get(partition)
        if self.time_column is None or not batch.num_rows:
            return pa.nulls(batch.num_rows, pa.int64())
        times = event_times(batch, self.time_column).combine_chunks()
        newest = pc.cumulative_max(pc.fill_null(times, NEVER))
        start = NEVER if previous is None else previous
        before = pc.max_element_wise(pa.concat_arrays([pa.array([start], pa.int64()), newest[:-1]]), start)
        last = newest[-1].as_py()
        if last > NEVER:
            self.times[partition] = last if previous is None else max(last, previous)
        marks = pc.if_else(pc.equal(before, NEVER), pa.scalar(None, pa.int64()), pc.subtract(before, self.delay))
        others = self.marks(now, leave_out=partition)
        if others is None or held:  # another partition or source holds the watermark back
            return pa.nulls(batch.num_rows, pa.int64())
        lowest = min([*others, *([bound] if bound is not None else [])], default=None)
        return marks if lowest is None else pc.min_element_wise(marks, lowest, skip_nulls=False)
