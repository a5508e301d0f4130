"""Top-N with ROW_NUMBER(): the first N rows of each partition in the query's order, numbered
from 1. Over a window aggregation (`top_n`) a window's rows are ranked once, as it fires. Over a
stream (`RankState`) a partition's first rows change as rows come: the input only grows, so a
row that falls out of the first N never comes back and only those N are kept (Flink's
append-only Top-N; with N = 1, deduplication)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.operators import Rank, project

_SEQUENCE = "__sequence"


def top_n(rows: pa.Table, rank: Rank) -> pa.Table:
    """`rows` (whole windows) cut to the first `rank.limit` of each partition, with the row
    number in `rank.column`. NULLs come first in an ascending order and last in a descending
    one, as Flink orders them."""
    order = pc.sort_indices(rows, sort_keys=_sort_keys(rank))
    ordered = rows.take(order)
    partitions = zip(*(ordered.column(c).to_pylist() for c in rank.partition), strict=True)
    kept: list[int] = []
    numbers: list[int] = []
    previous: object = object()
    number = 0
    for index, partition in enumerate(partitions):
        number = number + 1 if partition == previous else 1
        previous = partition
        if number <= rank.limit:
            kept.append(index)
            numbers.append(number)
    return ordered.take(pa.array(kept, pa.int64())).append_column(rank.column, pa.array(numbers, pa.int64()))


def _places(rows: pa.Table, partition: tuple[str, ...]) -> pa.Array:
    """Each row's place in its partition (from 0), `rows` sorted by the partition first."""
    count = rows.num_rows
    index = pa.array(range(count), pa.int64())
    starts = pc.equal(index, 0)  # a partition starts where a key differs from the row before's
    for name in partition:
        values = rows.column(name)
        after, before = values.slice(1), values.slice(0, count - 1)
        differs = pc.or_kleene(pc.not_equal(after, before), pc.xor(pc.is_null(after), pc.is_null(before)))
        starts = pc.or_(starts, pa.concat_arrays([pa.array([True]), pc.fill_null(differs, False).combine_chunks()]))
    first = pc.fill_null_forward(pc.if_else(starts, index, pa.scalar(None, pa.int64())))
    return pc.subtract(index, first)


def _sort_keys(rank: Rank) -> list[tuple[str, str, str]]:
    return [(c, "ascending", "at_start") for c in rank.partition] + [
        (c, "descending", "at_end") if descending else (c, "ascending", "at_start") for c, descending in rank.order
    ]


class RankState:
    """Per partition, its first rows in the rank's order ([arrival, *values] each), and the rows
    of the query's output the sink holds for it. At each checkpoint (`updates`) the partitions
    that changed give their rows: those new or renumbered to upsert, those gone to delete."""

    def __init__(self, rank: Rank) -> None:
        self.rank = rank
        self.partitions: dict[tuple[Any, ...], list[list[Any]]] = {}
        self.shown: dict[tuple[Any, ...], list[list[Any]]] = {}
        self.schema: pa.Schema | None = None
        """The ranked rows' columns (as the latest batch had them)."""
        self.arrivals = 0
        self._changed: set[tuple[Any, ...]] = set()
        self._unsaved: set[tuple[Any, ...]] = set()

    def add(self, rows: pa.Table) -> None:
        """Rank a batch's rows into their partitions."""
        if not rows.num_rows:
            return
        self.schema = rows.schema
        arrivals = pa.array(range(self.arrivals, self.arrivals + rows.num_rows), pa.int64())
        self.arrivals += rows.num_rows
        # the batch's own first rows of each partition are the only ones that can rank
        ranked = rows.append_column(_SEQUENCE, arrivals)
        tie = (_SEQUENCE, "descending" if self.rank.newest_first else "ascending")
        ranked = ranked.take(pc.sort_indices(ranked, sort_keys=[*_sort_keys(self.rank), tie]))
        ranked = ranked.filter(pc.less(_places(ranked, self.rank.partition), self.rank.limit))
        names = rows.column_names
        positions = [names.index(c) for c in self.rank.partition]
        candidates: dict[tuple[Any, ...], list[list[Any]]] = {}
        values = [ranked.column(_SEQUENCE).to_pylist(), *(ranked.column(n).to_pylist() for n in names)]
        for entry in zip(*values, strict=True):
            found = candidates.setdefault(tuple(entry[1 + p] for p in positions), [])
            if len(found) < self.rank.limit:
                found.append(list(entry))
        for partition, entries in candidates.items():
            current = self.partitions.get(partition, [])
            merged = self._first(current + entries, names)
            if merged != current:
                self.partitions[partition] = merged
                self._changed.add(partition)

    def _first(self, entries: list[list[Any]], names: list[str]) -> list[list[Any]]:
        """The first `limit` entries in the rank's order (ties by arrival, as the rank says):
        sorted stably, the least significant key first."""
        entries.sort(key=lambda entry: entry[0], reverse=self.rank.newest_first)
        for column, descending in reversed(self.rank.order):
            index = 1 + names.index(column)
            # NULLs first ascending and last descending, as Flink orders them
            entries.sort(key=lambda entry: (entry[index] is not None, entry[index]), reverse=descending)
        return entries[: self.rank.limit]

    def updates(self) -> tuple[pa.Table | None, pa.Table | None]:
        """The output rows of the partitions changed since the last call: (rows to upsert,
        rows to delete: shown before, gone now)."""
        if not self._changed or self.schema is None:
            return None, None
        changed = sorted(self._changed, key=repr)  # a stable order of results, whatever the keys' types
        self._unsaved.update(changed)
        self._changed.clear()
        rows = [entry[1:] for partition in changed for entry in self.partitions[partition]]
        numbers = [n for partition in changed for n in range(1, len(self.partitions[partition]) + 1)]
        transposed = zip(*rows, strict=True)  # rows of one schema: equally long
        columns = [pa.array(column, field.type) for column, field in zip(transposed, self.schema, strict=True)]
        table = pa.Table.from_arrays(columns, schema=self.schema).append_column(
            self.rank.column, pa.array(numbers, pa.int64())
        )
        outputs = project(table, self.rank.outputs)
        values = [list(row) for row in zip(*(c.to_pylist() for c in outputs.columns), strict=True)]
        upserts: list[int] = []
        deletes: list[list[Any]] = []
        start = 0
        for partition in changed:
            now = values[start : start + len(self.partitions[partition])]
            before = self.shown.get(partition, [])
            upserts.extend(start + i for i, row in enumerate(now) if row not in before)
            deletes.extend(row for row in before if row not in now)
            self.shown[partition] = now
            start += len(now)
        upserted = outputs.take(pa.array(upserts, pa.int64())) if upserts else None
        if not deletes:
            return upserted, None
        transposed = zip(*deletes, strict=True)
        gone = [pa.array(column, field.type) for column, field in zip(transposed, outputs.schema, strict=True)]
        return upserted, pa.Table.from_arrays(gone, schema=outputs.schema)

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The partitions updated since the last call: their rows and what the sink shows."""
        changed: dict[bytes, bytes | None] = {
            msgspec.msgpack.encode(list(partition)): msgspec.msgpack.encode(
                [self.partitions[partition], self.shown.get(partition, [])]
            )
            for partition in self._unsaved
        }
        self._unsaved.clear()
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.partitions.clear()
        self.shown.clear()
        for key, value in entries.items():
            partition = tuple(msgspec.msgpack.decode(key))
            self.partitions[partition], self.shown[partition] = msgspec.msgpack.decode(value)
        self.arrivals = 1 + max((e[0] for rows in self.partitions.values() for e in rows), default=-1)
        self._changed.clear()
        self._unsaved.clear()
