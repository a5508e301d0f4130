"""Windows: assigning rows to TUMBLE, HOP and CUMULATE windows, and the window aggregation's
keyed state.

A batch is aggregated by Arrow (group by window and key: one partial row per group), and the
partial rows are merged into the state: one entry per window and key, held until the watermark
passes the window's end, then fired once and dropped. The entries changed since the last
checkpoint are what the checkpoint writes (incremental), each under a key of its own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.plan import Aggregate, Plan, Window

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
    """The window aggregation's state: per window end, per (window start, key...), the
    aggregates' partial values."""

    def __init__(self, plan: Plan, time_type: pa.DataType) -> None:
        self.plan = plan
        self.time_type = time_type
        self.windows: dict[int, dict[tuple[Any, ...], list[Any]]] = {}
        self._changed: set[tuple[int, tuple[Any, ...]]] = set()
        self._slots = [_slots(a, i) for i, a in enumerate(plan.aggregates)]

    def add(self, rows: pa.Table) -> None:
        """Merge rows already assigned to windows (see `assign`)."""
        if not rows.num_rows:
            return
        columns = {
            "start": pc.cast(rows.column("window_start"), _INT64),
            "end": pc.cast(rows.column("window_end"), _INT64),
        }
        keys = [f"k{i}" for i in range(len(self.plan.keys))]
        for name, output in zip(keys, self.plan.keys, strict=True):
            columns[name] = _column(output.value(rows), rows.num_rows)
        specs: list[tuple[Any, str]] = []
        for i, aggregate in enumerate(self.plan.aggregates):
            if aggregate.argument is not None:
                columns[f"a{i}"] = _column(aggregate.argument(rows), rows.num_rows)
            specs.extend(spec for spec in self._slots[i] if spec not in specs)
        partial = pa.table(columns).group_by(["end", "start", *keys], use_threads=False).aggregate(specs)
        names = [_output(spec) for slots in self._slots for spec in slots]
        values = [partial.column(name).to_pylist() for name in names]
        kinds = [spec[1] for slots in self._slots for spec in slots]
        groups = zip(
            partial.column("end").to_pylist(),
            zip(*(partial.column(name).to_pylist() for name in ["start", *keys]), strict=True),
            zip(*values, strict=True) if values else ([] for _ in range(partial.num_rows)),
            strict=True,
        )
        for end, key, partials in groups:
            window = self.windows.setdefault(end, {})
            current = window.get(key)
            window[key] = (
                list(partials)
                if current is None
                else [_merge(k, a, b) for k, a, b in zip(kinds, current, partials, strict=True)]
            )
            self._changed.add((end, key))

    def fire(self, watermark: int) -> pa.Table | None:
        """The groups of every window whose end the watermark passed, as a table of
        window_start, window_end, window_time, the keys and the aggregates (or None: none)."""
        ends = sorted(end for end in self.windows if end - 1 <= watermark)
        if not ends:
            return None
        rows: list[tuple[int, tuple[Any, ...], list[Any]]] = []
        for end in ends:
            for key, partials in self.windows.pop(end).items():
                rows.append((end, key, partials))
                self._changed.add((end, key))
        return self._table(rows)

    def _table(self, rows: list[tuple[int, tuple[Any, ...], list[Any]]]) -> pa.Table:
        ends = pa.array([end for end, _, _ in rows], _INT64)
        columns: dict[str, Any] = {
            "window_start": pc.cast(pa.array([key[0] for _, key, _ in rows], _INT64), self.time_type),
            "window_end": pc.cast(ends, self.time_type),
            "window_time": pc.cast(pc.subtract(ends, 1), self.time_type),
        }
        for i, key in enumerate(self.plan.keys, 1):
            columns[key.name] = pa.array([k[i] for _, k, _ in rows])
        slot = 0
        for aggregate, slots in zip(self.plan.aggregates, self._slots, strict=True):
            parts = [partials[slot : slot + len(slots)] for _, _, partials in rows]
            columns[aggregate.column] = pa.array([_final(aggregate, part) for part in parts])
            slot += len(slots)
        return pa.table(columns)

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The entries changed since the last call: their new value, None for those gone."""
        changed = {}
        for end, key in self._changed:
            partials = self.windows.get(end, {}).get(key)
            changed[_encoder.encode([end, *key])] = None if partials is None else _encoder.encode(partials)
        self._changed.clear()
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.windows.clear()
        self._changed.clear()
        for raw_key, raw_value in entries.items():
            end, *key = _decoder.decode(raw_key)
            self.windows.setdefault(end, {})[tuple(key)] = _decoder.decode(raw_value)

    def __len__(self) -> int:
        return sum(len(groups) for groups in self.windows.values())

    def entries(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        for end, groups in self.windows.items():
            for key in groups:
                yield end, key


def _slots(aggregate: Aggregate, index: int) -> list[tuple[Any, str]]:
    """The partial values Arrow computes for an aggregate, as (column, Arrow's function)."""
    if aggregate.argument is None:
        return [([], "count_all")]
    column = f"a{index}"
    kinds = {"COUNT": ["count"], "SUM": ["sum"], "MIN": ["min"], "MAX": ["max"], "AVG": ["sum", "count"]}
    return [(column, kind) for kind in kinds[aggregate.function]]


def _output(spec: tuple[Any, str]) -> str:
    column, kind = spec
    return kind if column == [] else f"{column}_{kind}"


def _merge(kind: str, current: Any, partial: Any) -> Any:
    if current is None:
        return partial
    if partial is None:
        return current
    if kind in ("count", "count_all", "sum"):
        return current + partial
    return min(current, partial) if kind == "min" else max(current, partial)


def _final(aggregate: Aggregate, partials: list[Any]) -> Any:
    if aggregate.function != "AVG":
        return partials[0]
    total, count = partials
    if not count:
        return None
    if isinstance(total, int):  # Flink's AVG of integers is an integer (Java's division)
        quotient = abs(total) // count
        return quotient if total >= 0 else -quotient
    return total / count


def _column(values: Any, rows: int) -> Any:
    return pa.repeat(values, rows) if isinstance(values, pa.Scalar) else values
