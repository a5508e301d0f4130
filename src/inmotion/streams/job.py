"""The embedded engine: a script's queries run over the log, continuously with checkpoints
(`Job.run`) or once over what the topics hold now (`Job.query`).

Each query is a `Pipeline`: it reads its sources (a `Scan` each: partitions in batches, event
times, watermarks), decodes the columns it uses, filters, and hands the rows to its state (window
slices, sessions, groups or a join's kept rows; none for a projection), which gives results as
the watermark passes windows' ends, or at once (projections, interval joins), or at each
checkpoint (the groups of an updating GROUP BY).

`run` checkpoints every `interval` (sooner when caught up, so results wait little): one
transaction with the results, the changed state, the offsets and the watermarks (see
`inmotion.streams.checkpoints`). Results become visible only with their checkpoint, and the ids
of the events a job appends are its name, the checkpoint's number and the result's place in it:
after a crash the job resumes from its last checkpoint and appends what it had not."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from inmotion.streams.expressions import ARROW_TYPES, as_array
from inmotion.streams.joins import StreamJoinState, WindowJoinState
from inmotion.streams.operators import Plan, WindowJoin, project
from inmotion.streams.over import OverState
from inmotion.streams.plan import plans
from inmotion.streams.rank import RankState, top_n
from inmotion.streams.scan import Scan
from inmotion.streams.sessions import SessionState
from inmotion.streams.sql import OPTIONS, Setting, Table, parse
from inmotion.streams.updates import Groups, GroupState, RegroupState, group_state
from inmotion.streams.windows import WindowState, assign, window_state

_logger = logging.getLogger("inmotion.streams")

FINAL = 2**62
"""The watermark at the end of a bounded input: every window fires."""
_RANK = b"rank:"
_GROUP = b"group:"
"""The prefixes of the state entries of a stream Top-N and of a GROUP BY of a join's rows,
beside those of the rest of its query (whose keys never begin so: MessagePack arrays, or a
one-letter prefix and one)."""
PROGRESS_EVERY = 10.0
"""Seconds between a running job's progress lines (logged at info)."""

Results = Callable[[Plan, pa.Table], None]
"""Where the rows of a SELECT go (a query without INSERT INTO): printed, by the CLI."""


class Progress(msgspec.Struct):
    """What a checkpoint records of a pipeline besides its offsets and state."""

    times: list[dict[int, int]] = msgspec.field(default_factory=list)
    """By source, by partition: the newest event time read (ms)."""
    watermark: int | None = None
    read: int = 0
    late: int = 0
    malformed: int = 0
    emitted: int = 0


State = WindowState | SessionState | Groups | StreamJoinState | WindowJoinState | OverState


class Pipeline:
    """One query: its sources (a `Scan` each), its state (windows, groups or a join's rows)
    and the results it has not yet handed over."""

    def __init__(self, index: int, plan: Plan, idle_timeout: float, ttl_ms: int, clock: Clock) -> None:
        self.index = index
        self.plan = plan
        sides = [(plan.source, plan.reads)] if plan.join is None else [(s.table, s.reads) for s in plan.join.sides]
        self.scans = [Scan(table, reads, idle_timeout) for table, reads in sides]
        self.state: State | None = None
        self.grouping: Groups | None = None
        """A GROUP BY of a join's rows."""
        if isinstance(plan.join, WindowJoin):
            self.state = WindowJoinState(plan.join)
        elif plan.join is not None:
            self.state = StreamJoinState(plan.join, ttl_ms, clock.time)
            if plan.grouped:
                self.grouping = group_state(plan, ttl_ms, clock.time)
        elif plan.grouped and plan.window is None:
            self.state = group_state(plan, ttl_ms, clock.time)
        elif plan.over is not None:
            self.state = OverState(plan)
        elif plan.grouped:
            assert plan.window is not None
            state = SessionState if plan.window.kind == "SESSION" else window_state
            self.state = state(plan, self._time_type())
        # a Top-N over a stream: ranks the rows the rest of the query gives (a join's, say)
        self.ranking = RankState(plan.rank) if plan.rank is not None and not plan.grouped else None
        self.progress = Progress()
        self.results: list[pa.Table] = []
        self.deletes: list[pa.Table] = []
        """An updating query's rows whose key is to be deleted from the sink."""

    @property
    def groups(self) -> Groups | None:
        """The groups of a GROUP BY without a window (of the rows, or of a join's)."""
        return self.grouping if self.grouping is not None else _groups(self.state)

    def _time_type(self) -> pa.DataType:
        window = self.plan.window
        column = self.plan.source.column(window.column) if window is not None else None
        assert column is not None  # the planner checked: windows are over the watermarked column
        return ARROW_TYPES[column.type]

    def trackers(self) -> list[str]:
        """The names of the sources' positions: the query's number, then `.1` for a join's right."""
        return [str(self.index) if i == 0 else f"{self.index}.{i}" for i in range(len(self.scans))]

    # --- reading --------------------------------------------------------------------------
    def start(
        self,
        log: Log,
        offsets: Sequence[dict[int, int] | None],
        now: float,
        *,
        bounded: bool,
        partitions: Sequence[int] | None = None,
    ) -> None:
        for scan, start in zip(self.scans, offsets, strict=True):
            scan.start(log, start, now, bounded=bounded, partitions=partitions)

    def poll(self, log: Log, now: float) -> int:
        """Read and process a batch from each partition of each source; how many records."""
        groups = self.groups
        if groups is not None:
            groups.expire()  # before the rows it reads touch their groups again
        read = 0
        for side, scan in enumerate(self.scans):
            for partition, records in scan.read(log, now):
                self.process(side, partition, records, now)
                read += len(records)
        return read

    def remaining(self) -> int:
        """A bounded run's records left to read."""
        return sum(scan.remaining() for scan in self.scans)

    def process(self, side: int, partition: int, records: Sequence[Record], now: float) -> None:
        scan = self.scans[side]
        batch, malformed = scan.decoder.decode(records, now)
        self.progress.read += len(records)
        self.progress.malformed += malformed
        # windows and interval joins drop late rows: they need the watermark each row meets
        join = self.plan.join
        window = self.plan.window
        timed = (join is not None and (isinstance(join, WindowJoin) or join.timed)) or (
            self.state is not None and (window is not None or self.plan.over is not None)
        )
        if timed and window is not None and window.proctime:  # rows stamped by the clock are never late
            marks = pa.nulls(batch.num_rows, pa.int64())
        else:  # (which also moves the partition's newest event time on)
            marks = self.row_watermarks(side, partition, batch, now) if timed else None
        if isinstance(self.state, OverState):  # late: behind rows given already (Flink's operator watermark)
            marks = self.progress.watermark
        if isinstance(self.state, StreamJoinState):
            late, joined = self.state.add(side, batch, marks)
            self.progress.late += late
            if joined is not None and self.grouping is not None:
                self.grouping.add(joined, None)
            elif joined is not None:
                self.emit(joined)
            return
        if isinstance(self.state, WindowJoinState):
            self.progress.late += self.state.add(side, batch, marks)
            return
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

    def row_watermarks(self, side: int, partition: int, batch: pa.Table, now: float) -> Any:
        """The watermark each row meets (see `Scan.row_watermarks`), never below the query's."""
        others = [scan.watermark(now) for i, scan in enumerate(self.scans) if i != side]
        bound = min((w for w in others if w is not None), default=None)
        marks = self.scans[side].row_watermarks(partition, batch, now, bound, held=None in others)
        floor = self.progress.watermark
        return marks if floor is None else pc.max_element_wise(marks, floor)

    # --- watermarks and results ----------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Move the watermark on, firing the windows it passes (all of them at a bounded end)
        and letting go of a join's rows nothing can match any more."""
        if all(scan.ends is not None for scan in self.scans) and not self.remaining():
            watermark: int | None = FINAL
        elif self.plan.window is not None and self.plan.window.proctime:  # a window ends as the clock passes it
            watermark = int(now * 1000) - 1
        else:
            watermark = self.watermark(now)
        if isinstance(self.state, StreamJoinState):
            left, right = (FINAL, FINAL) if watermark == FINAL else (scan.watermark(now) for scan in self.scans)
            alone = self.state.expire(left, right)  # an outer interval join's rows that matched nothing
            if alone is not None:
                self.emit(alone)
        if watermark is None or (self.progress.watermark is not None and watermark <= self.progress.watermark):
            return
        previous = self.progress.watermark
        if watermark != FINAL:
            self.progress.watermark = watermark
        if isinstance(self.state, (WindowState, SessionState, WindowJoinState, StreamJoinState, OverState)):
            fired = self.state.fire(watermark, previous)
            if fired is not None:
                plan = self.plan
                if plan.having is not None:
                    fired = fired.filter(as_array(plan.having(fired), fired.num_rows))
                self.emit(fired)

    def watermark(self, now: float) -> int | None:
        """The query's watermark: its sources' smallest (None until each has one)."""
        marks = [scan.watermark(now) for scan in self.scans]
        return None if None in marks else min(m for m in marks if m is not None)

    def emit(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        results = project(rows, self.plan.select)
        if self.ranking is not None:
            self.ranking.add(results)
            return
        if self.plan.rank is not None:
            results = project(top_n(results, self.plan.rank), self.plan.rank.outputs)
        self.results.append(results)

    def flush_updates(self) -> None:
        """An updating query's changed groups, or partitions' first rows, become results
        (upserts and deletes)."""
        groups = self.groups
        if groups is not None:
            upserts, deletes = groups.updates()
            if upserts is not None:
                self.emit(upserts)
            if deletes is not None:
                self.deletes.append(project(deletes, self.plan.select))
        if isinstance(self.state, StreamJoinState) and self.state.keeps:
            upserts, deletes = self.state.updates()
            if upserts is not None:
                self.emit(upserts)
            if deletes is not None:
                self.deletes.append(project(deletes, self.plan.select))
        if self.ranking is not None:
            upserts, deletes = self.ranking.updates()
            if upserts is not None:
                self.results.append(upserts)
            if deletes is not None:
                self.deletes.append(deletes)

    def take_deletes(self) -> pa.Table | None:
        deletes, self.deletes = self.deletes, []
        return pa.concat_tables(deletes) if deletes else None

    def changed(self) -> bool:
        """State changed without reads (windows fired, their results filtered out; a join's
        rows let go)."""
        return self.state is not None and self.state.fired

    def changes(self) -> dict[bytes, bytes | None]:
        """The state's entries changed since the last checkpoint (a Top-N's under `rank:`)."""
        changed = self.state.changes() if self.state is not None else {}
        for prefix, state in ((_RANK, self.ranking), (_GROUP, self.grouping)):
            if state is not None:
                changed.update({prefix + key: value for key, value in state.changes().items()})
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        if self.state is not None:
            own = {key: value for key, value in entries.items() if not key.startswith((_RANK, _GROUP))}
            self.state.restore(own)
        for prefix, state in ((_RANK, self.ranking), (_GROUP, self.grouping)):
            if state is not None:
                state.restore({k.removeprefix(prefix): v for k, v in entries.items() if k.startswith(prefix)})

    def checkpointed(self) -> Progress:
        """The progress to checkpoint, with the sources' event times."""
        self.progress.times = [scan.times for scan in self.scans]
        return self.progress

    def take_results(self) -> pa.Table | None:
        if not self.results:
            return None
        results = self.results
        self.results = []
        table = pa.concat_tables(results, promote_options="permissive") if len(results) > 1 else results[0]
        self.progress.emitted += table.num_rows
        return table


def _groups(state: State | None) -> Groups | None:
    return state if isinstance(state, (GroupState, RegroupState)) else None


def iso_millis(value: datetime) -> str:
    """A timestamp as Flink's JSON format writes it with ISO-8601: UTC, milliseconds, a Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        partitions: Sequence[int] | None = None,
    ) -> None:
        if not 0 < idle_timeout < math.inf or not 0 <= interval < math.inf:
            raise InvalidConfig("idle_timeout must be positive and interval 0 or more seconds")
        self.log = log
        self.sql = sql
        self.name = name
        self.clock = clock or SystemClock()
        self.idle_timeout = idle_timeout
        self.interval = interval
        self.partitions = partitions
        """Only these partitions of the sources (a shard of a split job, see `inmotion.streams.shards`)."""
        statements = parse(sql)
        self.plans = plans(statements, sql)
        if not self.plans:
            raise InvalidSql("the SQL has no query: add a SELECT, or an INSERT INTO a table SELECT ...")
        # the script's SET options win over the arguments: the script says what its job needs
        settings = {s.option: s.duration_ms() for s in statements if isinstance(s, Setting) and s.option in OPTIONS}
        if "table.exec.source.idle-timeout" in settings:
            self.idle_timeout = settings["table.exec.source.idle-timeout"] / 1000 or math.inf
        if "execution.checkpointing.interval" in settings:
            self.interval = settings["execution.checkpointing.interval"] / 1000
        ttl = settings.get("table.exec.state.ttl", 0)
        self.pipelines = [Pipeline(i, plan, self.idle_timeout, ttl, self.clock) for i, plan in enumerate(self.plans)]
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
            pipeline.start(self.log, [None] * len(pipeline.scans), now, bounded=True)
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
    def run(self, stop: threading.Event, results: Results | None = None) -> None:
        """Run until `stop` is set, then checkpoint and return. Each checkpoint appends the
        results of INSERT INTO queries; `results` hears those of SELECTs once checkpointed."""
        for plan in self.plans:
            if plan.updating and plan.sink is None:
                raise InvalidSql(
                    f"{plan.updates} updates its rows: a job writes them INSERT INTO a table with a PRIMARY KEY"
                    " (inmotion sql query prints them once)"
                )
        checkpoints = open_checkpoints(self.log)
        script = hashlib.sha256(self.sql.encode()).hexdigest()
        # the owner `inmotion sql jobs` names, and checks on this host for a process gone
        checkpoint = checkpoints.claim(self.name, script, f"{socket.gethostname()}:{os.getpid()}")
        self._restore(checkpoint)
        epoch = checkpoint.epoch
        last, unsaved = self.clock.time(), 0
        told = last
        try:
            while not stop.is_set():
                now = self.clock.time()
                if now - told >= PROGRESS_EVERY:
                    self._tell()
                    told = now
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
                    self._wait()
            self._checkpoint(checkpoints, epoch, results)
        except BaseException as exc:
            checkpoints.finish(self.name, epoch, "failed", f"{type(exc).__name__}: {exc}")
            raise
        checkpoints.finish(self.name, epoch, "stopped")
        self._tell()

    def _tell(self) -> None:
        """Log how far the job has come: what a long run prints while it works."""
        progress = [p.progress for p in self.pipelines]
        marks = [p.watermark for p in progress if p.watermark is not None]
        _logger.info(
            "job %s: checkpoint %d, read %d, emitted %d, late %d, malformed %d, watermark %s",
            self.name,
            self.sequence,
            sum(p.read for p in progress),
            sum(p.emitted for p in progress),
            sum(p.late for p in progress),
            sum(p.malformed for p in progress),
            iso_millis(datetime.fromtimestamp(min(marks) / 1000, UTC)) if marks else "none yet",
        )

    def _wait(self) -> None:
        """Until the first source has records to read, for a moment (the others are looked at
        after it: several sources wait less)."""
        scans = [scan for pipeline in self.pipelines for scan in pipeline.scans]
        self.log.wait(scans[0].topic, scans[0].offsets, 0.05 if len(scans) > 1 else 0.2)

    def _restore(self, checkpoint: Checkpoint) -> None:
        progress = msgspec.msgpack.decode(checkpoint.progress, type=list[Progress]) if checkpoint.progress else []
        now = self.clock.time()
        self.sequence = checkpoint.sequence
        for pipeline in self.pipelines:
            offsets = [checkpoint.positions.get(tracker) for tracker in pipeline.trackers()]
            starts = [dict(o) if o is not None else None for o in offsets]
            pipeline.start(self.log, starts, now, bounded=False, partitions=self.partitions)
            if pipeline.index < len(progress):
                pipeline.progress = progress[pipeline.index]
                for scan, times in zip(pipeline.scans, pipeline.progress.times, strict=False):
                    scan.times = times
            pipeline.restore({k: v for (op, k), v in checkpoint.state.items() if op == pipeline.index})

    def _checkpoint(self, checkpoints: Checkpoints, epoch: int, results: Results | None) -> None:
        self.sequence += 1
        appended: list[tuple[str, list[Message], TopicConfig]] = []
        selected: list[tuple[Plan, pa.Table]] = []
        state: dict[tuple[int, bytes], bytes | None] = {}
        count = 0
        for pipeline in self.pipelines:
            pipeline.flush_updates()
            table, deletes = pipeline.take_results(), pipeline.take_deletes()
            state.update({(pipeline.index, k): v for k, v in pipeline.changes().items()})
            sink = pipeline.plan.sink
            if sink is None:
                if table is not None:
                    selected.append((pipeline.plan, table))
                continue
            messages = self._messages(pipeline.plan, table, count) if table is not None else []
            if deletes is not None:  # not of a key upserted anew (a Top-N's row number taken by another row)
                upserted = {message.key for message in messages}
                messages += [m for m in self._tombstones(pipeline.plan, deletes) if m.key not in upserted]
            count += len(messages)
            # an updating query's rows are upserts: newest per key, on a compacted topic
            appended.append((sink.topic, messages, TopicConfig(compact=bool(sink.primary_key))))
        checkpoints.save(
            self.name,
            epoch,
            self.sequence,
            [
                Source(tracker, scan.topic, dict(scan.offsets))
                for p in self.pipelines
                for tracker, scan in zip(p.trackers(), p.scans, strict=True)
            ],
            state,
            msgspec.msgpack.encode([p.checkpointed() for p in self.pipelines]),
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
