"""Window Top-N: of the rows a window aggregation gives when a window fires, the first N of
each partition in the query's order, numbered from 1 (ROW_NUMBER's ties keep the rows' order)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.operators import Rank


def top_n(rows: pa.Table, rank: Rank) -> pa.Table:
    """`rows` (whole windows) cut to the first `rank.limit` of each partition, with the row
    number in `rank.column`. NULLs come first in an ascending order and last in a descending
    one, as Flink orders them."""
    keys = [(c, "ascending", "at_start") for c in rank.partition] + [
        (c, "descending", "at_end") if descending else (c, "ascending", "at_start") for c, descending in rank.order
    ]
    order = pc.sort_indices(rows, sort_keys=keys)
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
