"""Joins of two streams: each side's rows are kept (as Arrow tables) while a row of the other
side may still come that matches them; a new batch of one side is joined with what the other
side keeps (Arrow's hash join on the keys, then the time interval), then kept itself. A regular
join (no interval) keeps every row for good, or with a time to live (Flink's
table.exec.state.ttl) until that long after it came; an interval join lets rows go as follows.

With `lower <= left time - right time <= upper`, a left row can still match once the right
side's watermark `w` allows right rows later than `w`: it is dropped when `time - lower <= w`;
a right row when `time + upper <= w`. A row that could match nothing kept or to come is late:
`time <= w - (upper - lower)`. Each pair is joined once, by the later of its two rows. The
kept rows are the state: a checkpoint writes the chunks that changed (Arrow IPC)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.expressions import ARROW_TYPES, as_array
from inmotion.streams.operators import Plan, Side, StreamJoin, WindowJoin, WindowSide, project
from inmotion.streams.windows import WindowState, assign, column_of, event_times, late, window_state

_TIME = "__time"
_END = "__end"
_CAME = "__came"
"""When a kept row came (ms, the job's clock): with a time to live, it goes that long after."""
_ID = "__id"
_ALONE = "__alone"
"""Of a row an outer join keeps: 0 once matched; 1 alone and not yet given with NULLs; 2 alone
and given (a match to come deletes that row)."""


class StreamJoinState:
    def __init__(self, join: StreamJoin, ttl_ms: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.join = join
        self.ttl_ms = ttl_ms
        self.clock = clock
        self.kept: Chunks = ({}, {})
        """Per side, by chunk number: rows with their keys (`__k0`...) and time (`__time`)."""
        self.groups = [WindowState(side.plan, _time_type(side.plan)) if side.plan else None for side in join.sides]
        """A side that is a window aggregation: its groups, which join as their windows fire."""
        self._numbers = itertools.count()
        self._changed: set[tuple[int, int]] = set()
        self.fired = False
        self.keeps = {"INNER": (), "LEFT": (0,), "RIGHT": (1,), "FULL": (0, 1)}[join.kind]
        """The sides whose every row an outer join gives, with NULLs for the other side's if alone."""
        self._ids = itertools.count()
        self._deletes: list[pa.Table] = []
        """Rows given alone that a match has come for since the last `updates`."""

    def add(self, side: int, rows: pa.Table, watermarks: Any) -> tuple[int, pa.Table | None]:
        """Join a batch of one side (0 left, 1 right) with what the other keeps, then keep it:
        (late rows dropped, the joined rows or None). A window aggregation's rows go to its
        groups instead."""
        spec = self.join.sides[side]
        groups = self.groups[side]
        if groups is not None:
            assert spec.plan is not None
            if spec.plan.where is not None and rows.num_rows:
                keep = as_array(spec.plan.where(rows), rows.num_rows)
                rows = rows.filter(keep)
                watermarks = watermarks.filter(keep) if watermarks is not None else None
            return groups.add(rows, watermarks), None
        return self._arrive(side, rows, watermarks)

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        """Join the groups of the windows the watermark passed, as rows of their side come."""
        joined = []
        for side, groups in enumerate(self.groups):
            fired = groups.fire(watermark, previous) if groups is not None else None
            plan = self.join.sides[side].plan
            if fired is None or plan is None:
                continue
            self.fired = True
            if plan.having is not None:
                fired = fired.filter(as_array(plan.having(fired), fired.num_rows))
            found = self._arrive(side, project(fired, plan.select), None)[1] if fired.num_rows else None
            if found is not None:
                joined.append(found)
        return pa.concat_tables(joined, promote_options="permissive") if joined else None

    def _arrive(self, side: int, rows: pa.Table, watermarks: Any) -> tuple[int, pa.Table | None]:
        spec = self.join.sides[side]
        rows = rows.rename_columns([f"{spec.alias}.{name}" for name in rows.column_names])
        if spec.where is not None and rows.num_rows:
            keep = as_array(spec.where(rows), rows.num_rows)
            rows = rows.filter(keep)
            watermarks = watermarks.filter(keep) if watermarks is not None else None
        rows = self._keyed(spec, rows)
        count = 0
        if self.join.interval is not None:
            assert spec.time is not None
            times = event_times(rows, spec.time)
            rows = rows.append_column(_TIME, times)
            lower, upper = self.join.interval
            late = pc.fill_null(pc.less_equal(times, pc.subtract(watermarks, upper - lower)), pc.is_null(times))
            count = pc.sum(late).as_py() or 0
            if count:
                rows = rows.filter(pc.invert(late))
        if not rows.num_rows:
            return count, None
        now_ms = int(self.clock() * 1000)
        if self.ttl_ms:  # rows past their time to live match nothing, gone or not yet
            self._outlived(now_ms - self.ttl_ms)
        if side in self.keeps:
            ids = pa.array(itertools.islice(self._ids, rows.num_rows), pa.int64())
            rows = rows.append_column(_ID, ids).append_column(_ALONE, pa.repeat(pa.scalar(1, pa.int8()), rows.num_rows))
        joined, rows = self._probe(side, rows)
        if self.ttl_ms:
            rows = rows.append_column(_CAME, pa.repeat(pa.scalar(now_ms, pa.int64()), rows.num_rows))
        number = next(self._numbers)
        self.kept[side][number] = rows
        self._changed.add((side, number))
        return count, joined

    def _keyed(self, spec: Side, rows: pa.Table) -> pa.Table:
        keys = [column_of(key(rows), rows.num_rows) for key in spec.keys] or [pa.repeat(pa.scalar(0), rows.num_rows)]
        for i, values in enumerate(keys):
            rows = rows.append_column(f"__k{i}", values)
        return rows

    def _probe(self, side: int, rows: pa.Table) -> tuple[pa.Table | None, pa.Table]:
        """The rows joined with what the other side keeps (None: no match), and the rows as
        they are to be kept (an outer join's marked matched)."""
        other = [t for t in self.kept[1 - side].values() if t.num_rows]
        if not other:
            return None, rows
        kept = pa.concat_tables(other, promote_options="permissive")  # chunks kept before a TTL lack _CAME
        left, right = (rows, kept) if side == 0 else (kept, rows)
        keys = [name for name in rows.column_names if name.startswith("__k")]
        # the right's keys and time, renamed: Arrow's join wants distinct names beside the keys
        right = right.rename_columns([f"{n}_r" if n.startswith("__") else n for n in right.column_names])
        for key in keys:  # equal keys of two types (INT and BIGINT, say) meet as the left's
            index = right.schema.get_field_index(f"{key}_r")
            right = right.set_column(index, f"{key}_r", pc.cast(right.column(index), left.schema.field(key).type))
        joined = left.join(right, keys=keys, right_keys=[f"{k}_r" for k in keys], join_type="inner", use_threads=False)
        if self.join.interval is not None:
            lower, upper = self.join.interval
            gap = pc.subtract(joined.column(_TIME), joined.column(f"{_TIME}_r"))
            joined = joined.filter(pc.and_(pc.greater_equal(gap, lower), pc.less_equal(gap, upper)))
        if self.keeps and joined.num_rows:
            rows = self._matched(side, rows, joined)
        return self._given(joined), rows

    def _given(self, joined: pa.Table) -> pa.Table | None:
        """Joined rows as the join gives them: without the state's columns, where the rest of
        the conditions hold (an outer join's WHERE)."""
        joined = joined.drop_columns([n for n in joined.column_names if n.startswith("__")])
        residual = self.join.residual
        if residual is not None and joined.num_rows:
            joined = joined.filter(as_array(residual(joined), joined.num_rows))
        return joined if joined.num_rows else None

    def _matched(self, side: int, rows: pa.Table, joined: pa.Table) -> pa.Table:
        """Mark the rows of kept sides that `joined` matched: the new `rows` (returned) and those
        the other side keeps; a kept row given alone before is to be deleted."""
        names = {side: _ID if side == 0 else f"{_ID}_r", 1 - side: _ID if side == 1 else f"{_ID}_r"}
        if 1 - side in self.keeps:
            matched = pc.unique(joined.column(names[1 - side]))
            for number, kept in list(self.kept[1 - side].items()):
                hit = pc.is_in(kept.column(_ID), value_set=matched)
                if not pc.any(hit).as_py():
                    continue
                given = pc.and_(hit, pc.equal(kept.column(_ALONE), 2))
                if pc.any(given).as_py():
                    self._deletes.append(self._alone(1 - side, kept.filter(given)))
                self.kept[1 - side][number] = _mark(kept, hit)
                self._changed.add((1 - side, number))
        if side in self.keeps:
            rows = _mark(rows, pc.is_in(rows.column(_ID), value_set=pc.unique(joined.column(names[side]))))
        return rows

    def _alone(self, side: int, rows: pa.Table) -> pa.Table:
        """Kept rows of one side, with NULLs for the other side's columns, as joined rows."""
        other = self.join.sides[1 - side]
        nulls = {
            f"{other.alias}.{name}": pa.nulls(rows.num_rows, ARROW_TYPES[column.type])
            for name in other.reads
            if (column := other.table.column(name)) is not None
        }
        own = {name: rows.column(name) for name in rows.column_names if not name.startswith("__")}
        columns = {**own, **nulls} if side == 0 else {**nulls, **own}
        return pa.table(columns)

    def updates(self) -> tuple[pa.Table | None, pa.Table | None]:
        """An outer join's changes since the last call: (the kept rows still alone, not given
        before, with NULLs for the other side; the rows given alone that a match came for). An
        interval join gives its rows alone as they expire instead (`expire`): no change."""
        if self.join.interval is not None:
            return None, None
        alone = []
        for side in self.keeps:
            for number, kept in list(self.kept[side].items()):
                new = pc.equal(kept.column(_ALONE), 1)
                if not pc.any(new).as_py():
                    continue
                alone.append(self._alone(side, kept.filter(new)))
                self.kept[side][number] = kept.set_column(
                    kept.schema.get_field_index(_ALONE),
                    _ALONE,
                    pc.if_else(new, pa.scalar(2, pa.int8()), kept.column(_ALONE)),
                )
                self._changed.add((side, number))
        deletes, self._deletes = self._deletes, []
        upserts = self._given(pa.concat_tables(alone, promote_options="permissive")) if alone else None
        gone = self._given(pa.concat_tables(deletes, promote_options="permissive")) if deletes else None
        return upserts, gone

    def expire(self, left_watermark: int | None, right_watermark: int | None) -> pa.Table | None:
        """Drop the rows no row to come can match: left rows by the right side's watermark, right
        rows by the left's (an interval join's); and those past their time to live. An outer
        interval join gives the rows it keeps that matched nothing, with NULLs, as they go."""
        if self.ttl_ms:
            self._outlived(int(self.clock() * 1000) - self.ttl_ms)
        if self.join.interval is None:
            return None
        lower, upper = self.join.interval
        bounds = ((right_watermark, -lower), (left_watermark, upper))
        alone = []
        for side, (watermark, shift) in enumerate(bounds):
            if watermark is None:
                continue
            for number, rows in list(self.kept[side].items()):
                alive = pc.greater(pc.add(rows.column(_TIME), shift), watermark)
                if pc.all(alive).as_py():
                    continue
                self._changed.add((side, number))
                self.fired = True
                if side in self.keeps:
                    unmatched = pc.and_(pc.invert(alive), pc.equal(rows.column(_ALONE), 1))
                    if pc.any(unmatched).as_py():
                        alone.append(self._alone(side, rows.filter(unmatched)))
                rows = rows.filter(alive)
                if rows.num_rows:
                    self.kept[side][number] = rows
                else:
                    del self.kept[side][number]
        return self._given(pa.concat_tables(alone, promote_options="permissive")) if alone else None

    def _outlived(self, cutoff: int) -> None:
        """Drop the chunks of rows that came at or before `cutoff` (those kept before the job had
        a time to live count from now)."""
        for side in (0, 1):
            for number, rows in list(self.kept[side].items()):
                if _CAME not in rows.column_names:
                    came = pa.repeat(pa.scalar(cutoff + self.ttl_ms, pa.int64()), rows.num_rows)
                    self.kept[side][number] = rows.append_column(_CAME, came)
                    self._changed.add((side, number))
                elif rows.column(_CAME)[0].as_py() <= cutoff:  # a chunk's rows came at once
                    del self.kept[side][number]
                    self._changed.add((side, number))
                    self.fired = True

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        return _chunk_changes(self.kept, self._changed, self) | _group_changes(self.groups)

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self._numbers = _restore_chunks(self.kept, _restore_groups(self.groups, entries))
        ids = [pc.max(t.column(_ID)).as_py() for side in self.keeps for t in self.kept[side].values() if t.num_rows]
        self._ids = itertools.count(max(ids, default=-1) + 1)
        self._changed.clear()


def _mark(rows: pa.Table, matched: Any) -> pa.Table:
    """Rows of an outer join's kept side with those `matched` marked so (0)."""
    index = rows.schema.get_field_index(_ALONE)
    return rows.set_column(index, _ALONE, pc.if_else(matched, pa.scalar(0, pa.int8()), rows.column(_ALONE)))


def _projected(spec: WindowSide, windowed: pa.Table) -> pa.Table:
    """A side's query over its rows (with their windows), columns named `alias.column`."""
    outputs = spec.plan.select
    values = [as_array(o.value(windowed), windowed.num_rows) for o in outputs]
    return pa.table(values, names=[f"{spec.alias}.{o.name}" for o in outputs])


def _no_rows(spec: WindowSide) -> pa.Table:
    """No rows of a side's source, with their windows' columns: what its columns' types are."""
    window = spec.plan.window
    assert window is not None
    columns = [spec.plan.source.column(name) for name in spec.plan.reads]
    rows = pa.table({c.name: pa.array([], ARROW_TYPES[c.type]) for c in columns if c is not None})
    return assign(window, rows, rows.schema.field(window.column).type)


Chunks = tuple[dict[int, pa.Table], dict[int, pa.Table]]


def _chunk_changes(kept: Chunks, changed: set[tuple[int, int]], state: Any) -> dict[bytes, bytes | None]:
    """The chunks of rows changed since the last checkpoint (Arrow IPC; None: gone)."""
    found: dict[bytes, bytes | None] = {}
    for side, number in changed:
        rows = kept[side].get(number)
        found[msgspec.msgpack.encode([side, number])] = None if rows is None else _ipc(rows)
    changed.clear()
    state.fired = False
    return found


def _restore_chunks(kept: Chunks, entries: Mapping[bytes, bytes]) -> itertools.count[int]:
    """Fill `kept` from a checkpoint's chunks; the numbers for new chunks."""
    for side in kept:
        side.clear()
    for key, value in entries.items():
        side, number = msgspec.msgpack.decode(key)
        kept[side][number] = pa.ipc.open_stream(value).read_all()
    return itertools.count(max((n for side in kept for n in side), default=-1) + 1)


def _ipc(rows: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return bytes(sink.getvalue().to_pybytes())


class WindowJoinState:
    """A window join's state: each side's rows (projected, with their window's end and keys),
    until the watermark passes their window's end; then the window's rows of both sides are
    joined (inner or outer) and dropped. A side that is a window aggregation keeps its groups
    (a `WindowState` of its own), whose rows join as its windows fire."""

    def __init__(self, join: WindowJoin) -> None:
        self.join = join
        self.kept: Chunks = ({}, {})
        self.groups = [
            window_state(side.plan, _time_type(side.plan)) if side.plan.grouped else None for side in join.sides
        ]
        self._numbers = itertools.count()
        self._changed: set[tuple[int, int]] = set()
        self.fired = False

    def add(self, side: int, rows: pa.Table, watermarks: Any) -> int:
        """Keep a batch of one side (0 left, 1 right), but its late rows: how many those were."""
        spec = self.join.sides[side]
        plan, window = spec.plan, self.join.window
        if plan.where is not None and rows.num_rows:
            keep = as_array(plan.where(rows), rows.num_rows)
            rows = rows.filter(keep)
            watermarks = watermarks.filter(keep) if watermarks is not None else None
        groups = self.groups[side]
        if groups is not None:
            return groups.add(rows, watermarks)
        dropped = late(window, rows, watermarks)
        count = pc.sum(dropped).as_py() or 0
        if count:
            rows = rows.filter(pc.invert(dropped))
        if not rows.num_rows:
            return count
        windowed = assign(window, rows, rows.schema.field(window.column).type)
        keyed = _side_rows(spec, windowed)
        number = next(self._numbers)
        self.kept[side][number] = keyed
        self._changed.add((side, number))
        return count

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        """The joined rows of the windows whose end the watermark passed (None: none)."""
        due: list[pa.Table | None] = []
        for side in (0, 1):
            groups = self.groups[side]
            if groups is not None:
                due.append(self._fired_groups(side, groups, watermark, previous))
                continue
            parts = []
            for number, rows in list(self.kept[side].items()):
                ready = pc.less_equal(pc.subtract(rows.column(_END), 1), watermark)
                if not pc.any(ready).as_py():
                    continue
                parts.append(rows.filter(ready))
                rest = rows.filter(pc.invert(ready))
                self._changed.add((side, number))
                if rest.num_rows:
                    self.kept[side][number] = rest
                else:
                    del self.kept[side][number]
            due.append(pa.concat_tables(parts) if parts else None)
        if due == [None, None]:
            return None
        self.fired = True
        left, right = due
        joined = self._unmatched(left, right) if left is None or right is None else self._joined(left, right)
        if joined is None:
            return None
        joined = joined.drop_columns([n for n in joined.column_names if n.startswith("__")])
        residual = self.join.residual
        if residual is not None and joined.num_rows:
            joined = joined.filter(as_array(residual(joined), joined.num_rows))
        return joined if joined.num_rows else None

    def _fired_groups(self, side: int, groups: WindowState, watermark: int, previous: int | None) -> pa.Table | None:
        """The rows of a window-aggregation side whose windows the watermark passed."""
        fired = groups.fire(watermark, previous)
        if fired is None:
            return None
        self.fired = True
        having = self.join.sides[side].plan.having
        if having is not None:
            fired = fired.filter(as_array(having(fired), fired.num_rows))
        return _side_rows(self.join.sides[side], fired) if fired.num_rows else None

    def _joined(self, left: pa.Table, right: pa.Table) -> pa.Table:
        keys = [_END, *(f"__k{i}" for i in range(len(self.join.left.keys)))]
        right = right.rename_columns([f"{n}_r" if n in keys else n for n in right.column_names])
        for key in keys[1:]:  # equal keys of two types meet as the left's
            index = right.schema.get_field_index(f"{key}_r")
            right = right.set_column(index, f"{key}_r", pc.cast(right.column(index), left.schema.field(key).type))
        kinds = {"INNER": "inner", "LEFT": "left outer", "RIGHT": "right outer", "FULL": "full outer"}
        return left.join(
            right,
            keys=keys,
            right_keys=[f"{k}_r" for k in keys],
            join_type=kinds[self.join.kind],
            coalesce_keys=False,
            use_threads=False,
        )

    def _unmatched(self, left: pa.Table | None, right: pa.Table | None) -> pa.Table | None:
        """One side's rows alone (the other has none in these windows), with NULL for the other
        side's columns: what an outer join keeps of them; nothing for an inner join."""
        kept = left if left is not None else right
        assert kept is not None
        if self.join.kind not in ("FULL", "LEFT" if left is not None else "RIGHT"):
            return None
        columns: dict[str, Any] = {}
        for spec, rows in zip(self.join.sides, (left, right), strict=True):
            shape = _projected(spec, _no_rows(spec)).schema if rows is None else rows.schema
            for output in spec.plan.select:
                name = f"{spec.alias}.{output.name}"
                missing = pa.nulls(kept.num_rows, shape.field(name).type)
                columns[name] = rows.column(name) if rows is not None else missing
        return pa.table(columns)

    def changes(self) -> dict[bytes, bytes | None]:
        return _chunk_changes(self.kept, self._changed, self) | _group_changes(self.groups)

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self._numbers = _restore_chunks(self.kept, _restore_groups(self.groups, entries))
        self._changed.clear()


_GROUPS = (b"groups0:", b"groups1:")
"""The prefixes of a side's groups' entries (a chunk's key is a MessagePack array: never so)."""


def _group_changes(groups: Sequence[WindowState | None]) -> dict[bytes, bytes | None]:
    return {
        _GROUPS[side] + key: value
        for side, state in enumerate(groups)
        if state is not None
        for key, value in state.changes().items()
    }


def _restore_groups(groups: Sequence[WindowState | None], entries: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """Restore the sides' groups from their entries; the rest (the chunks of rows)."""
    for side, state in enumerate(groups):
        if state is not None:
            prefix = _GROUPS[side]
            state.restore({k.removeprefix(prefix): v for k, v in entries.items() if k.startswith(prefix)})
    return {key: value for key, value in entries.items() if not key.startswith(_GROUPS)}


def _side_rows(spec: WindowSide, windowed: pa.Table) -> pa.Table:
    """A side's rows (with their windows, or its fired groups) projected, with their window's
    end and the join's keys."""
    projected = _projected(spec, windowed)
    keyed = projected.append_column(_END, pc.cast(windowed.column("window_end"), pa.int64()))
    for i, key in enumerate(spec.keys):
        keyed = keyed.append_column(f"__k{i}", column_of(key(projected), projected.num_rows))
    return keyed


def _time_type(plan: Plan) -> pa.DataType:
    window = plan.window
    assert window is not None
    column = plan.source.column(window.column)
    assert column is not None
    return ARROW_TYPES[column.type]
