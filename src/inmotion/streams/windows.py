"""Windows: assigning rows to TUMBLE, HOP and CUMULATE windows, and the window aggregation's
keyed state.

A batch is aggregated by Arrow (group by window and key: one partial row per group), and the
partial rows are merged into the state: one entry per window and key, held until the watermark
passes the window's end, then fired once and dropped. The entries changed since the last
checkpoint are what the checkpoint writes (incremental), each under a key of its own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.expressions import as_array
from inmotion.streams.operators import Aggregate, Plan, Window, project

_INT64 = pa.int64()
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def event_times(batch: pa.Table, column: str) -> pa.ChunkedArray:
    """The event-time column as milliseconds since the epoch."""
    return pc.cast(batch.column(column), _INT64)


def floor_to(values: Any, unit: int) -> Any:
    """Each value rounded down to a multiple of `unit` (also below zero)."""
    remainder = pc.subtract(values, pc.multiply(pc.divide(values, unit), unit))
    remainder = pc.if_else(pc.less(remainder, 0), pc.add(remainder, unit), remainder)
    return pc.subtract(values, remainder)


def assign(window: Window, batch: pa.Table, time_type: pa.DataType) -> pa.Table:
    """Each row once per window it falls in, with `window_start`, `window_end` and
    `window_time` (the end's last millisecond) in the time column's type. Rows without an
    event time fall in no window."""
    times = event_times(batch, window.column)
    if times.null_count:
        keep = pc.is_valid(times)
        batch, times = batch.filter(keep), times.filter(keep)
    rows = pa.array(range(batch.num_rows), _INT64)
    parts: list[tuple[Any, Any]] = []  # (row indices, window starts)
    if window.kind == "TUMBLE":
        parts.append((rows, pc.add(floor_to(pc.subtract(times, window.offset), window.size), window.offset)))
    elif window.kind == "HOP":
        base = pc.add(floor_to(pc.subtract(times, window.offset), window.step), window.offset)
        parts.extend((rows, pc.subtract(base, k * window.step)) for k in range(window.size // window.step))
    else:  # CUMULATE: [start, start + step), [start, start + 2 step), ... up to the size
        start = floor_to(times, window.size)
        for j in range(1, window.size // window.step + 1):
            within = pc.greater(pc.add(start, j * window.step), times)
            parts.append((rows.filter(within), start.filter(within)))
    indices = pa.chunked_array([p[0] for p in parts], _INT64)
    starts = pa.chunked_array([p[1] for p in parts], _INT64)
    if window.kind == "CUMULATE":
        sizes = pa.chunked_array(
            [pa.repeat(pa.scalar(j * window.step), len(p[0])) for j, p in enumerate(parts, 1)], _INT64
        )
        ends = pc.add(starts, sizes)
    else:
        ends = pc.add(starts, window.size)
    out = batch.take(indices)
    for name, values in (("window_start", starts), ("window_end", ends), ("window_time", pc.subtract(ends, 1))):
        out = out.append_column(name, pc.cast(values, time_type))
    return out


def late(window: Window, batch: pa.Table, watermarks: Any) -> Any:
    """Which rows are late: their slice of the window (see `Window.slice`) ended at or before
    the watermark each row met (`watermarks`: one per row, NULL before there is one), so its
    windows have fired. Rows without an event time are late too."""
    times = event_times(batch, window.column)
    slice_end = pc.add(floor_to(pc.subtract(times, window.offset), window.slice), window.offset + window.slice)
    return pc.fill_null(pc.less_equal(pc.subtract(slice_end, 1), watermarks), pc.is_null(times))


class WindowState:
    """The window aggregation's state, in slices (as Flink's slicing window operators): per
    slice end, per key, the aggregates' partial values. A slice is `Window.slice` long; a
    window is the slices it spans, merged when it fires, so a row is aggregated once however
    many HOP or CUMULATE windows it falls in. A slice is dropped once the last window that
    spans it has fired."""

    def __init__(self, plan: Plan, time_type: pa.DataType) -> None:
        assert plan.window is not None
        self.plan = plan
        self.window: Window = plan.window
        self.time_type = time_type
        self.slices: dict[int, dict[tuple[Any, ...], list[Any]]] = {}
        self._changed: set[tuple[int, tuple[Any, ...]]] = set()
        self.fired = False
        """Windows fired since the last checkpoint: their entries are to be deleted."""
        self._slots = [partial_specs(a, i) for i, a in enumerate(plan.aggregates)]
        self._kinds = [spec[1] for slots in self._slots for spec in slots]

    def add(self, rows: pa.Table, watermarks: Any) -> int:
        """Merge rows into their slices, but the late ones (see `late`): how many those were."""
        window = self.window
        dropped = late(window, rows, watermarks)
        count = pc.sum(dropped).as_py() or 0
        if count:
            rows = rows.filter(pc.invert(dropped))
        if rows.num_rows:
            self._add(rows)
        return count

    def _add(self, rows: pa.Table) -> None:
        window = self.window
        times = event_times(rows, window.column)
        length = window.slice
        ends = pc.add(floor_to(pc.subtract(times, window.offset), length), window.offset + length)
        for (end,), key, partials in group_partials(self.plan, self._slots, rows, {"end": ends}):
            found = self.slices.setdefault(end, {})
            current = found.get(key)
            found[key] = list(partials) if current is None else self._merge(current, partials)
            self._changed.add((end, key))

    def _merge(self, current: list[Any], partials: Sequence[Any]) -> list[Any]:
        return merge(self._kinds, current, partials)

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        """The groups of the windows whose end the watermark has passed since `previous`, as a
        table of window_start, window_end, window_time, the keys and the aggregates (None: no
        window). Slices no later window spans are dropped."""
        ends = {
            end
            for slice_end in self.slices
            for end in self._windows_of(slice_end)
            if end - 1 <= watermark and (previous is None or end - 1 > previous)
        }
        rows: list[tuple[int, int, tuple[Any, ...], list[Any]]] = []
        for end in sorted(ends):
            start = self._start(end)
            merged: dict[tuple[Any, ...], list[Any]] = {}
            for slice_end in range(start + self.window.slice, end + 1, self.window.slice):
                for key, partials in self.slices.get(slice_end, {}).items():
                    current = merged.get(key)
                    merged[key] = list(partials) if current is None else self._merge(current, partials)
            rows.extend((start, end, key, partials) for key, partials in merged.items())
        for slice_end in [e for e in self.slices if max(self._windows_of(e)) - 1 <= watermark]:
            self._changed.update((slice_end, key) for key in self.slices.pop(slice_end))
            self.fired = True
        return fired_table(self.plan, self.time_type, rows) if rows else None

    def _windows_of(self, slice_end: int) -> list[int]:
        """The ends of the windows that span the slice ending at `slice_end`."""
        window = self.window
        if window.kind == "TUMBLE":
            return [slice_end]
        if window.kind == "HOP":  # windows end every `step`; one spans the slice if it starts at or before it
            first = slice_end + (-(slice_end - window.offset)) % window.step
            return list(range(first, slice_end - window.slice + window.size + 1, window.step))
        start = floor_to_int(slice_end - window.slice, window.size)  # CUMULATE: within its largest window
        return list(range(slice_end, start + window.size + 1, window.step))

    def _start(self, end: int) -> int:
        window = self.window
        if window.kind == "CUMULATE":
            return floor_to_int(end - 1, window.size)
        return end - window.size

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The entries changed since the last call: their new value, None for those gone."""
        changed = {}
        for end, key in self._changed:
            partials = self.slices.get(end, {}).get(key)
            changed[_encoder.encode([end, *key])] = None if partials is None else _encoder.encode(partials)
        self._changed.clear()
        self.fired = False
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.slices.clear()
        self._changed.clear()
        for raw_key, raw_value in entries.items():
            end, *key = _decoder.decode(raw_key)
            self.slices.setdefault(end, {})[tuple(key)] = _decoder.decode(raw_value)


class CascadeState(WindowState):
    """A window aggregation of a window aggregation's groups (see `Cascade`): its state is the
    inner aggregation's; as the inner windows fire, their groups are aggregated again."""

    def __init__(self, plan: Plan, time_type: pa.DataType) -> None:
        assert plan.cascade is not None
        assert plan.cascade.bounds is not None
        super().__init__(plan.cascade.inner, time_type)
        self.cascade = plan.cascade
        self.bounds = plan.cascade.bounds
        self.outer = plan
        self._outer_slots = [partial_specs(a, i) for i, a in enumerate(plan.aggregates)]

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        fired = super().fire(watermark, previous)
        if fired is None:
            return None
        inner = self.cascade.inner
        if inner.having is not None:
            fired = fired.filter(as_array(inner.having(fired), fired.num_rows))
        groups = project(fired, inner.select)
        start, end = (pc.cast(groups.column(name), _INT64) for name in self.bounds)
        bounds = {"window_start": start, "window_end": end, "window_time": pc.subtract(end, 1)}
        for name, millis in bounds.items():
            values = pc.cast(millis, self.time_type)
            index = groups.schema.get_field_index(name)
            groups = groups.append_column(name, values) if index < 0 else groups.set_column(index, name, values)
        if self.cascade.where is not None:
            groups = groups.filter(as_array(self.cascade.where(groups), groups.num_rows))
        if not groups.num_rows:
            return None
        by = {bound: pc.cast(groups.column(f"window_{bound}"), _INT64) for bound in ("start", "end")}
        partials = group_partials(self.outer, self._outer_slots, groups, by)
        rows = [(start, end, key, list(values)) for (start, end), key, values in partials]
        return fired_table(self.outer, self.time_type, rows)


def window_state(plan: Plan, time_type: pa.DataType) -> WindowState:
    """The state of a window aggregation (of rows, or of another's groups)."""
    return CascadeState(plan, time_type) if plan.cascade is not None else WindowState(plan, time_type)


def group_partials(
    plan: Plan, slots: Sequence[Sequence[tuple[Any, str]]], rows: pa.Table, by: Mapping[str, Any]
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]]:
    """The aggregates' partial values (`slots`: their `partial_specs`) per group of rows with
    equal `by` columns and plan keys: (by values, key, partial values) per group."""
    columns = dict(by)
    keys = [f"k{i}" for i in range(len(plan.keys))]
    for name, output in zip(keys, plan.keys, strict=True):
        columns[name] = column_of(output.value(rows), rows.num_rows)
    specs: list[tuple[Any, str]] = []
    for i, aggregate in enumerate(plan.aggregates):
        if aggregate.argument is not None:
            columns[f"a{i}"] = column_of(aggregate.argument(rows), rows.num_rows)
        specs.extend(spec for spec in slots[i] if spec not in specs)
    partial = pa.table(columns).group_by([*by, *keys], use_threads=False).aggregate(specs)
    values = [partial.column(output_name(spec)).to_pylist() for spec_list in slots for spec in spec_list]
    return zip(
        zip(*(partial.column(name).to_pylist() for name in by), strict=True),
        zip(*(partial.column(name).to_pylist() for name in keys), strict=True) if keys else repeat(()),
        zip(*values, strict=True) if values else repeat(()),
        strict=False,  # repeat() is endless: the columns' lengths are Arrow's to keep equal
    )


def floor_to_int(value: int, unit: int) -> int:
    return value - value % unit


Fired = list[tuple[int, int, tuple[Any, ...], list[Any]]]
"""Fired groups: (window start, window end, key, partial values)."""


def fired_table(plan: Plan, time_type: pa.DataType, rows: Fired) -> pa.Table:
    """Fired groups as a table of window_start, window_end, window_time, the keys and the
    aggregates' final values."""
    ends = pa.array([end for _, end, _, _ in rows], _INT64)
    columns: dict[str, Any] = {
        "window_start": pc.cast(pa.array([start for start, _, _, _ in rows], _INT64), time_type),
        "window_end": pc.cast(ends, time_type),
        "window_time": pc.cast(pc.subtract(ends, 1), time_type),
    }
    for i, key in enumerate(plan.keys):
        columns[key.name] = pa.array([k[i] for _, _, k, _ in rows])
    slot = 0
    for i, aggregate in enumerate(plan.aggregates):
        width = len(partial_specs(aggregate, i))
        columns[aggregate.column] = pa.array([final(aggregate, p[slot : slot + width]) for _, _, _, p in rows])
        slot += width
    return pa.table(columns)


def partial_specs(aggregate: Aggregate, index: int) -> list[tuple[Any, str]]:
    """The partial values Arrow computes for an aggregate, as (column, Arrow's function)."""
    if aggregate.argument is None:
        return [([], "count_all")]
    column = f"a{index}"
    if aggregate.distinct:
        return [(column, "distinct")]
    kinds = {"COUNT": ["count"], "SUM": ["sum"], "MIN": ["min"], "MAX": ["max"], "AVG": ["sum", "count"]}
    return [(column, kind) for kind in kinds[aggregate.function]]


def output_name(spec: tuple[Any, str]) -> str:
    column, kind = spec
    return kind if column == [] else f"{column}_{kind}"


def merge(kinds: Sequence[str], current: Sequence[Any], partials: Sequence[Any]) -> list[Any]:
    """Two lists of partial values of the same aggregates as one."""
    return [_merge(kind, a, b) for kind, a, b in zip(kinds, current, partials, strict=True)]


def _merge(kind: str, current: Any, partial: Any) -> Any:
    if current is None:
        return partial
    if partial is None:
        return current
    if kind in ("count", "count_all", "sum"):
        return current + partial
    if kind == "distinct":  # sets (lists, as Arrow gives them or a checkpoint keeps them)
        return set(current).union(partial)
    return min(current, partial) if kind == "min" else max(current, partial)


def final(aggregate: Aggregate, partials: list[Any]) -> Any:
    if aggregate.distinct:
        values = partials[0]
        if aggregate.function == "COUNT":
            return len(values)
        if not values:
            return None
        if aggregate.function in ("MIN", "MAX"):
            return min(values) if aggregate.function == "MIN" else max(values)
        partials = [sum(values), len(values)]
        if aggregate.function == "SUM":
            return partials[0]
    elif aggregate.function != "AVG":
        return partials[0]
    total, count = partials
    if not count:
        return None
    if isinstance(total, int):  # Flink's AVG of integers is an integer (Java's division)
        quotient = abs(total) // count
        return quotient if total >= 0 else -quotient
    return total / count


def column_of(values: Any, rows: int) -> Any:
    """A computed value per row (a constant repeated)."""
    return pa.repeat(values, rows) if isinstance(values, pa.Scalar) else values
