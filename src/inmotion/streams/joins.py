"""Interval joins of two streams: each side's rows are kept (as Arrow tables) while a row of the
other side may still come that matches them; a new batch of one side is joined with what the
other side keeps (Arrow's hash join on the keys, then the time interval), then kept itself.

With `lower <= left time - right time <= upper`, a left row can still match once the right
side's watermark `w` allows right rows later than `w`: it is dropped when `time - lower <= w`;
a right row when `time + upper <= w`. A row that could match nothing kept or to come is late:
`time <= w - (upper - lower)`. Each pair is joined once, by the later of its two rows. The
kept rows are the state: a checkpoint writes the chunks that changed (Arrow IPC)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.expressions import as_array
from inmotion.streams.plan import IntervalJoin, Side
from inmotion.streams.windows import column_of, event_times

_TIME = "__time"


class IntervalJoinState:
    def __init__(self, join: IntervalJoin) -> None:
        self.join = join
        self.kept: tuple[dict[int, pa.Table], dict[int, pa.Table]] = ({}, {})
        """Per side, by chunk number: rows with their keys (`__k0`...) and time (`__time`)."""
        self._numbers = itertools.count()
        self._changed: set[tuple[int, int]] = set()
        self.fired = False

    def add(self, side: int, rows: pa.Table, watermarks: Any) -> tuple[int, pa.Table | None]:
        """Join a batch of one side (0 left, 1 right) with what the other keeps, then keep it:
        (late rows dropped, the joined rows or None)."""
        spec = self.join.sides[side]
        rows = rows.rename_columns([f"{spec.alias}.{name}" for name in rows.column_names])
        if spec.where is not None and rows.num_rows:
            keep = as_array(spec.where(rows), rows.num_rows)
            rows, watermarks = rows.filter(keep), watermarks.filter(keep)
        times = event_times(rows, spec.time)
        rows = self._keyed(spec, rows).append_column(_TIME, times)
        width = self.join.upper - self.join.lower
        late = pc.fill_null(pc.less_equal(times, pc.subtract(watermarks, width)), pc.is_null(times))
        count = pc.sum(late).as_py() or 0
        if count:
            rows = rows.filter(pc.invert(late))
        if not rows.num_rows:
            return count, None
        joined = self._probe(side, rows)
        number = next(self._numbers)
        self.kept[side][number] = rows
        self._changed.add((side, number))
        return count, joined

    def _keyed(self, spec: Side, rows: pa.Table) -> pa.Table:
        keys = [column_of(key(rows), rows.num_rows) for key in spec.keys] or [pa.repeat(pa.scalar(0), rows.num_rows)]
        for i, values in enumerate(keys):
            rows = rows.append_column(f"__k{i}", values)
        return rows

    def _probe(self, side: int, rows: pa.Table) -> pa.Table | None:
        other = [t for t in self.kept[1 - side].values() if t.num_rows]
        if not other:
            return None
        kept = pa.concat_tables(other)
        left, right = (rows, kept) if side == 0 else (kept, rows)
        keys = [name for name in rows.column_names if name.startswith("__k")]
        # the right's keys and time, renamed: Arrow's join wants distinct names beside the keys
        right = right.rename_columns([f"{n}_r" if n.startswith("__") else n for n in right.column_names])
        for key in keys:  # equal keys of two types (INT and BIGINT, say) meet as the left's
            index = right.schema.get_field_index(f"{key}_r")
            right = right.set_column(index, f"{key}_r", pc.cast(right.column(index), left.schema.field(key).type))
        joined = left.join(right, keys=keys, right_keys=[f"{k}_r" for k in keys], join_type="inner", use_threads=False)
        gap = pc.subtract(joined.column(_TIME), joined.column(f"{_TIME}_r"))
        joined = joined.filter(pc.and_(pc.greater_equal(gap, self.join.lower), pc.less_equal(gap, self.join.upper)))
        joined = joined.drop_columns([n for n in joined.column_names if n.startswith("__")])
        residual = self.join.residual
        if residual is not None and joined.num_rows:
            joined = joined.filter(as_array(residual(joined), joined.num_rows))
        return joined if joined.num_rows else None

    def expire(self, left_watermark: int | None, right_watermark: int | None) -> None:
        """Drop the rows no row to come can match: left rows by the right side's watermark, right
        rows by the left's."""
        bounds = ((right_watermark, -self.join.lower), (left_watermark, self.join.upper))
        for side, (watermark, shift) in enumerate(bounds):
            if watermark is None:
                continue
            for number, rows in list(self.kept[side].items()):
                alive = pc.greater(pc.add(rows.column(_TIME), shift), watermark)
                if pc.all(alive).as_py():
                    continue
                self._changed.add((side, number))
                self.fired = True
                rows = rows.filter(alive)
                if rows.num_rows:
                    self.kept[side][number] = rows
                else:
                    del self.kept[side][number]

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        changed: dict[bytes, bytes | None] = {}
        for side, number in self._changed:
            rows = self.kept[side].get(number)
            changed[msgspec.msgpack.encode([side, number])] = None if rows is None else _ipc(rows)
        self._changed.clear()
        self.fired = False
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.kept = ({}, {})
        for key, value in entries.items():
            side, number = msgspec.msgpack.decode(key)
            self.kept[side][number] = pa.ipc.open_stream(value).read_all()
        self._numbers = itertools.count(max((n for kept in self.kept for n in kept), default=-1) + 1)
        self._changed.clear()


def _ipc(rows: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return bytes(sink.getvalue().to_pybytes())
