"""The embedded engine: a script's queries run over the log, continuously with checkpoints
(`Job.run`) or once over what the topics hold now (`Job.query`).

Each query is a `Pipeline`: it reads its source topic's partitions in batches, decodes the
columns it uses, filters, assigns windows and aggregates (see `inmotion.streams.windows`), and
fires windows as the watermark passes their end. The watermark of a source is the smallest of
its partitions' (the newest event time read from each, less the table's delay), leaving out
partitions that have nothing to read and have been silent for `idle_timeout`, so that an idle
partition never holds windows back.

`run` checkpoints every `interval` (sooner when caught up, so results wait little): one
transaction with the results, the changed state, the offsets and the watermarks (see
`inmotion.streams.checkpoints`). Results become visible only with their checkpoint, and the ids
of the events a job appends are its name, the checkpoint's number and the result's place in it:
after a crash the job resumes from its last checkpoint and appends what it had not."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.clock import Clock, SystemClock
from inmotion.errors import InvalidConfig, InvalidSql
from inmotion.events import Event
from inmotion.events.envelope import PARTITIONKEY
from inmotion.log import Log, Message, Record, TopicConfig
from inmotion.streams.checkpoints import Checkpoint, Checkpoints, Source, open_checkpoints
from inmotion.streams.decode import Decoder
from inmotion.streams.expressions import ARROW_TYPES, as_array
from inmotion.streams.plan import Output, Plan, plans
from inmotion.streams.rank import top_n
from inmotion.streams.sessions import SessionState
from inmotion.streams.sql import Table, parse
from inmotion.streams.updates import GroupState
from inmotion.streams.windows import WindowState, assign, event_times

_logger = logging.getLogger("inmotion.streams")

BATCH = 10_000
"""Records read from a partition at a time."""
FINAL = 2**62
"""The watermark at the end of a bounded input: every window fires."""

Results = Callable[[Plan, pa.Table], None]
"""Where the rows of a SELECT go (a query without INSERT INTO): printed, by the CLI."""


class Progress(msgspec.Struct):
    """What a checkpoint records of a pipeline besides its offsets and state."""

    times: dict[int, int] = msgspec.field(default_factory=dict)
    """By partition: the newest event time read (ms)."""
    watermark: int | None = None
    read: int = 0
    late: int = 0
    malformed: int = 0
    emitted: int = 0


class Pipeline:
    """One query: its source's offsets and event times, its window state and the results it
    has not yet handed over."""

    def __init__(self, index: int, plan: Plan, idle_timeout: float) -> None:
        self.index = index
        self.plan = plan
        self.idle_timeout = idle_timeout
        self.source: Table = plan.source
        self.decoder = Decoder(plan.source, plan.reads)
        watermark = plan.source.watermark
        self.delay = watermark.delay_ms if watermark is not None else 0
        self.time_column = watermark.column if watermark is not None else None
        self.state: WindowState | SessionState | GroupState | None = None
        if plan.updating:
            self.state = GroupState(plan)
        elif plan.grouped:
            assert plan.window is not None
            state = SessionState if plan.window.kind == "SESSION" else WindowState
            self.state = state(plan, self._time_type())
        self.offsets: dict[int, int] = {}
        self.ends: dict[int, int] | None = None
        """A bounded run's last offsets (exclusive) per partition."""
        self.progress = Progress()
        self.heard: dict[int, float] = {}
        """By partition: when it last had records to read."""
        self.results: list[pa.Table] = []
        self.deletes: list[pa.Table] = []
        """An updating query's rows whose key is to be deleted from the sink."""

    def _time_type(self) -> pa.DataType:
        window = self.plan.window
        column = self.source.column(window.column) if window is not None else None
        assert column is not None  # the planner checked: windows are over the watermarked column
        return ARROW_TYPES[column.type]

    # --- reading --------------------------------------------------------------------------
    def start(self, log: Log, offsets: dict[int, int] | None, now: float, *, bounded: bool) -> None:
        topic = self.source.topic
        count = log.partition_count(topic)
        if offsets is None:
            first = log.earliest_offset if self.source.start == "earliest-offset" else log.latest_offset
            offsets = {p: first(topic, p) for p in range(count)}
        self.offsets = {p: offsets.get(p, log.earliest_offset(topic, p)) for p in range(count)}
        self.heard = dict.fromkeys(range(count), now)
        if bounded:
            self.ends = {p: log.latest_offset(topic, p) for p in range(count)}

    def poll(self, log: Log, now: float) -> int:
        """Read and process a batch from each partition; how many records were read."""
        read = 0
        for partition, offset in self.offsets.items():
            limit = BATCH if self.ends is None else min(BATCH, self.ends[partition] - offset)
            if limit <= 0:
                continue
            records = log.read(self.source.topic, partition, offset, limit)
            if self.ends is not None:
                records = [r for r in records if r.offset < self.ends[partition]]
            if not records:
                continue
            self.heard[partition] = now
            self.offsets[partition] = records[-1].offset + 1
            self.process(partition, records, now)
            read += len(records)
        return read

    def remaining(self) -> int:
        """A bounded run's records left to read."""
        assert self.ends is not None
        return sum(max(0, end - self.offsets[p]) for p, end in self.ends.items())

    def process(self, partition: int, records: Sequence[Record], now: float) -> None:
        batch, malformed = self.decoder.decode(records)
        self.progress.read += len(records)
        self.progress.malformed += malformed
        windowed = self.state is not None and self.plan.window is not None
        marks = self.row_watermarks(partition, batch, now) if windowed else None
        plan = self.plan
        if plan.where is not None and batch.num_rows:
            keep = as_array(plan.where(batch), batch.num_rows)
            batch = batch.filter(keep)
            marks = marks.filter(keep) if marks is not None else None
        if self.state is not None:
            self.progress.late += self.state.add(batch, marks)
        elif plan.window is not None:
            self.emit(assign(plan.window, batch, batch.schema.field(plan.window.column).type))
        else:
            self.emit(batch)

    def row_watermarks(self, partition: int, batch: pa.Table, now: float) -> Any:
        """The watermark each row meets (NULL: none yet), and the partition's newest event
        time moved past the batch. Within a partition the watermark moves row by row (the
        newest time before the row, less the delay), so which rows are late does not depend on
        how reads were batched: a job restarted from a checkpoint drops the same ones."""
        previous = self.progress.times.get(partition)
        if self.time_column is None or not batch.num_rows:
            return pa.nulls(batch.num_rows, pa.int64())
        times = event_times(batch, self.time_column).combine_chunks()
        newest = pc.cumulative_max(pc.fill_null(times, -FINAL))
        start = -FINAL if previous is None else previous
        before = pc.max_element_wise(pa.concat_arrays([pa.array([start], pa.int64()), newest[:-1]]), start)
        last = newest[-1].as_py()
        if last > -FINAL:
            self.progress.times[partition] = last if previous is None else max(last, previous)
        marks = pc.if_else(pc.equal(before, -FINAL), pa.scalar(None, pa.int64()), pc.subtract(before, self.delay))
        others = self.marks(now, leave_out=partition)
        if others is None:  # another partition holds the watermark back
            marks = pa.nulls(batch.num_rows, pa.int64())
        elif others:
            marks = pc.min_element_wise(marks, min(others), skip_nulls=False)
        floor = self.progress.watermark
        return marks if floor is None else pc.max_element_wise(marks, floor)

    # --- watermarks and results ----------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Move the watermark on, firing the windows it passes (all of them at a bounded end)."""
        if self.ends is not None and not self.remaining():
            watermark: int | None = FINAL
        else:
            watermark = self.watermark(now)
        if watermark is None or (self.progress.watermark is not None and watermark <= self.progress.watermark):
            return
        previous = self.progress.watermark
        if watermark != FINAL:
            self.progress.watermark = watermark
        if self.state is not None and not isinstance(self.state, GroupState):
            fired = self.state.fire(watermark, previous)
            if fired is not None:
                plan = self.plan
                if plan.having is not None:
                    fired = fired.filter(as_array(plan.having(fired), fired.num_rows))
                self.emit(fired)

    def watermark(self, now: float) -> int | None:
        """The source's watermark: the smallest of its partitions' that are not idle (all
        idle: the newest time read, less the delay); None until each has one."""
        if self.time_column is None:
            return None
        marks = self.marks(now)
        if marks is None:
            return None
        if not marks:
            times = self.progress.times.values()
            return max(times) - self.delay if times else None
        return min(marks)

    def marks(self, now: float, leave_out: int | None = None) -> list[int] | None:
        """The watermarks of the partitions (but `leave_out`) that are not idle; None if one
        of them has none yet. Idle: nothing to read, and no records for `idle_timeout`."""
        found = []
        for partition in self.offsets:
            if partition == leave_out or now - self.heard[partition] >= self.idle_timeout:
                continue
            time = self.progress.times.get(partition)
            if time is None:
                return None
            found.append(time - self.delay)
        return found

    def emit(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        results = _project(rows, self.plan.select)
        if self.plan.rank is not None:
            results = _project(top_n(results, self.plan.rank), self.plan.rank.outputs)
        self.results.append(results)

    def flush_updates(self) -> None:
        """An updating query's changed groups become results (upserts and deletes)."""
        if isinstance(self.state, GroupState):
            upserts, deletes = self.state.updates()
            if upserts is not None:
                self.emit(upserts)
            if deletes is not None:
                self.deletes.append(_project(deletes, self.plan.select))

    def take_deletes(self) -> pa.Table | None:
        deletes, self.deletes = self.deletes, []
        return pa.concat_tables(deletes) if deletes else None

    def changed(self) -> bool:
        """Window state changed without reads (windows fired, their results filtered out)."""
        return self.state is not None and not isinstance(self.state, GroupState) and self.state.fired

    def take_results(self) -> pa.Table | None:
        if not self.results:
            return None
        results = self.results
        self.results = []
        table = pa.concat_tables(results, promote_options="permissive") if len(results) > 1 else results[0]
        self.progress.emitted += table.num_rows
        return table


def iso_millis(value: datetime) -> str:
    """A timestamp as Flink's JSON format writes it with ISO-8601: UTC, milliseconds, a Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _project(rows: pa.Table, outputs: Sequence[Output]) -> pa.Table:
    return pa.table([as_array(o.value(rows), rows.num_rows) for o in outputs], names=[o.name for o in outputs])


class Job:
    """A script's queries over `log`. Tables are CREATE TABLEs of the script."""

    def __init__(
        self,
        log: Log,
        sql: str,
        *,
        name: str = "job",
        clock: Clock | None = None,
        idle_timeout: float = 5.0,
        interval: float = 0.2,
    ) -> None:
        if not 0 < idle_timeout < math.inf or not 0 <= interval < math.inf:
            raise InvalidConfig("idle_timeout must be positive and interval 0 or more seconds")
        self.log = log
        self.sql = sql
        self.name = name
        self.clock = clock or SystemClock()
        self.idle_timeout = idle_timeout
        self.interval = interval
        self.plans = plans(parse(sql), sql)
        if not self.plans:
            raise InvalidSql("the SQL has no query: add a SELECT, or an INSERT INTO a table SELECT ...")
        self.pipelines = [Pipeline(i, plan, idle_timeout) for i, plan in enumerate(self.plans)]
        self.sequence = 0

    # --- bounded ------------------------------------------------------------------------------
    def query(self, progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[Plan, pa.Table]]:
        """Run the queries over what their topics hold now, to the end: each SELECT's rows as
        they come (windows fire as the watermark passes them, the rest at the end).
        `progress(done, total)` hears how far the reading is."""
        for plan in self.plans:
            if plan.sink is not None:
                raise InvalidSql(
                    f"INSERT INTO {plan.sink.name} appends to a topic: run the script as a job (inmotion sql run)"
                )
        now = self.clock.time()
        for pipeline in self.pipelines:
            pipeline.start(self.log, None, now, bounded=True)
        total = sum(p.remaining() for p in self.pipelines)
        while True:
            now = self.clock.time()
            for pipeline in self.pipelines:
                pipeline.poll(self.log, now)
                pipeline.advance(now)
                table = pipeline.take_results()
                if table is not None:
                    yield pipeline.plan, table
            left = sum(p.remaining() for p in self.pipelines)
            if progress is not None:
                progress(total - left, total)
            if not left:
                for pipeline in self.pipelines:  # the final watermark, for windows still open
                    pipeline.advance(now)
                    pipeline.flush_updates()  # an updating query's rows, as they end
                    table = pipeline.take_results()
                    if table is not None:
                        yield pipeline.plan, table
                return

    # --- continuous ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, results: Results | None = None, owner: str = "") -> None:
        """Run until `stop` is set, then checkpoint and return. Each checkpoint appends the
        results of INSERT INTO queries; `results` hears those of SELECTs once checkpointed."""
        for plan in self.plans:
            if plan.updating and plan.sink is None:
                raise InvalidSql(
                    "a GROUP BY without a window updates its rows: a job writes them INSERT INTO a table with a"
                    " PRIMARY KEY (inmotion sql query prints them once)"
                )
        checkpoints = open_checkpoints(self.log)
        script = hashlib.sha256(self.sql.encode()).hexdigest()
        checkpoint = checkpoints.claim(self.name, script, owner)
        self._restore(checkpoint)
        epoch = checkpoint.epoch
        last, unsaved = self.clock.time(), 0
        try:
            while not stop.is_set():
                now = self.clock.time()
                read = 0
                for pipeline in self.pipelines:
                    read += pipeline.poll(self.log, now)
                    pipeline.advance(now)
                unsaved += read
                # results wait for nothing; offsets and state, for a lull or the interval
                if any(p.results or p.changed() for p in self.pipelines) or (
                    unsaved and (not read or now - last >= self.interval)
                ):
                    self._checkpoint(checkpoints, epoch, results)
                    last, unsaved = now, 0
                if not read:
                    self._wait(stop)
            self._checkpoint(checkpoints, epoch, results)
        except BaseException as exc:
            checkpoints.finish(self.name, epoch, "failed", f"{type(exc).__name__}: {exc}")
            raise
        checkpoints.finish(self.name, epoch, "stopped")

    def _wait(self, stop: threading.Event) -> None:
        first = self.pipelines[0]
        waited = self.log.wait(first.source.topic, first.offsets, 0.05 if len(self.pipelines) > 1 else 0.2)
        if not waited and stop.is_set():
            return

    def _restore(self, checkpoint: Checkpoint) -> None:
        progress = msgspec.msgpack.decode(checkpoint.progress, type=list[Progress]) if checkpoint.progress else []
        now = self.clock.time()
        self.sequence = checkpoint.sequence
        for pipeline in self.pipelines:
            offsets = checkpoint.positions.get(str(pipeline.index))
            pipeline.start(self.log, dict(offsets) if offsets is not None else None, now, bounded=False)
            if pipeline.index < len(progress):
                pipeline.progress = progress[pipeline.index]
            if pipeline.state is not None:
                pipeline.state.restore({k: v for (op, k), v in checkpoint.state.items() if op == pipeline.index})

    def _checkpoint(self, checkpoints: Checkpoints, epoch: int, results: Results | None) -> None:
        self.sequence += 1
        appended: list[tuple[str, list[Message], TopicConfig]] = []
        selected: list[tuple[Plan, pa.Table]] = []
        state: dict[tuple[int, bytes], bytes | None] = {}
        count = 0
        for pipeline in self.pipelines:
            pipeline.flush_updates()
            table, deletes = pipeline.take_results(), pipeline.take_deletes()
            if pipeline.state is not None:
                state.update({(pipeline.index, k): v for k, v in pipeline.state.changes().items()})
            sink = pipeline.plan.sink
            if sink is None:
                if table is not None:
                    selected.append((pipeline.plan, table))
                continue
            messages = self._messages(pipeline.plan, table, count) if table is not None else []
            messages += self._tombstones(pipeline.plan, deletes) if deletes is not None else []
            count += len(messages)
            # an updating query's rows are upserts: newest per key, on a compacted topic
            appended.append((sink.topic, messages, TopicConfig(compact=bool(sink.primary_key))))
        checkpoints.save(
            self.name,
            epoch,
            self.sequence,
            [Source(str(p.index), p.source.topic, dict(p.offsets)) for p in self.pipelines],
            state,
            msgspec.msgpack.encode([p.progress for p in self.pipelines]),
            appended,
        )
        if results is not None:
            for plan, table in selected:
                results(plan, table)

    def _messages(self, plan: Plan, table: pa.Table, first: int) -> list[Message]:
        """Result rows as events of the sink's table: its data columns by position; the `key`,
        `type` and `subject` metadata columns set the event's."""
        sink = plan.sink
        assert sink is not None
        columns = [c for c in sink.columns if not c.virtual]
        values = [column.to_pylist() for column in table.columns]
        source = f"/inmotion/sql/{self.name}"
        messages = []
        for n, row in enumerate(zip(*values, strict=True), first):
            data: dict[str, Any] = {}
            attributes: dict[str, Any] = {}
            for column, value in zip(columns, row, strict=True):
                if column.metadata is None:
                    data[column.name] = iso_millis(value) if isinstance(value, datetime) else value
                elif value is not None:
                    attributes[column.metadata] = value
            key = attributes.pop("key", None)
            if sink.primary_key:
                key = _primary_key(sink, data)
            event = Event(
                type=str(attributes.get("type", sink.name)),
                source=source,
                id=f"{self.name}:{self.sequence}:{n}",
                subject=attributes.get("subject"),
                data=data,
                extensions={PARTITIONKEY: str(key)} if key is not None else {},
            )
            messages.append(Message.from_event(event))
        return messages

    def _tombstones(self, plan: Plan, table: pa.Table) -> list[Message]:
        """Deletes of an updating query's rows: a record without a value under the row's key."""
        sink = plan.sink
        assert sink is not None
        names = [c.name for c in sink.columns if not c.virtual]
        return [
            Message(None, _primary_key(sink, dict(zip(names, row, strict=True))).encode())
            for row in zip(*(column.to_pylist() for column in table.columns), strict=True)
        ]


def _primary_key(sink: Table, data: dict[str, Any]) -> str:
    """The sink's primary key of a row: its values, joined by | if several."""
    return "|".join(str(data.get(name)) for name in sink.primary_key)


def job_results(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts (tests, printing)."""
    return [
        dict(zip(table.column_names, row, strict=True))
        for row in zip(*(c.to_pylist() for c in table.columns), strict=True)
    ]
