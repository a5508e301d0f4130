"""GROUP BY without a window: each group's row changes as its rows come, and the sink holds the
newest (an upsert by the sink's primary key; a tombstone when HAVING stops holding for a group
that was shown). Changes are gathered between checkpoints and written once per key (Flink's
mini-batch aggregation): a hot key costs one result per checkpoint, not one per row."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from itertools import islice, repeat
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.expressions import as_array
from inmotion.streams.operators import Plan
from inmotion.streams.windows import column_of, final, merge, output_name, partial_specs

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class GroupState:
    """Per group key: whether its row is in the sink, the aggregates' partial values and when
    a row last came (ms). With a `ttl_ms` (Flink's table.exec.state.ttl), a group no row came
    to for that long is forgotten: a later row of its key starts it anew."""

    def __init__(self, plan: Plan, ttl_ms: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.ttl_ms = ttl_ms
        self.clock = clock
        self.groups: dict[tuple[Any, ...], list[Any]] = {}  # key -> [shown, partials, touched_ms]
        self._slots = [partial_specs(a, i) for i, a in enumerate(plan.aggregates)]
        self._kinds = [spec[1] for slots in self._slots for spec in slots]
        self._changed: set[tuple[Any, ...]] = set()
        self._unsaved: set[tuple[Any, ...]] = set()
        self.fired = False

    def add(self, rows: pa.Table, watermarks: Any) -> int:
        """Merge rows into their groups (nothing is late: there is no window to miss)."""
        if not rows.num_rows:
            return 0
        keys = [f"k{i}" for i in range(len(self.plan.keys))]
        columns = {name: column_of(k.value(rows), rows.num_rows) for name, k in zip(keys, self.plan.keys, strict=True)}
        # an aggregate over all rows (no GROUP BY) is one group, of key ()
        grouping = keys or ["all"]
        if not keys:
            columns["all"] = pa.repeat(pa.scalar(0, pa.int8()), rows.num_rows)
        specs: list[tuple[Any, str]] = []
        for i, aggregate in enumerate(self.plan.aggregates):
            if aggregate.argument is not None:
                columns[f"a{i}"] = column_of(aggregate.argument(rows), rows.num_rows)
            specs.extend(spec for spec in self._slots[i] if spec not in specs)
        partial = pa.table(columns).group_by(grouping, use_threads=False).aggregate(specs)
        values = [partial.column(output_name(spec)).to_pylist() for slots in self._slots for spec in slots]
        groups = zip(
            zip(*(partial.column(name).to_pylist() for name in keys), strict=True) if keys else repeat(()),
            zip(*values, strict=True) if values else repeat(()),
            strict=False,  # repeat() is endless: Arrow keeps the columns equally long
        )
        now_ms = int(self.clock() * 1000)
        for key, partials in islice(groups, partial.num_rows):
            current = self.groups.get(key)
            if current is None:
                self.groups[key] = [False, list(partials), now_ms]
            else:
                current[1] = merge(self._kinds, current[1], partials)
                current[2] = now_ms
            self._changed.add(key)
        return 0

    def updates(self) -> tuple[pa.Table | None, pa.Table | None]:
        """The changed groups since the last call: (rows to upsert, rows whose key to delete)."""
        if not self._changed:
            return None, None
        changed = list(self._changed)
        self._unsaved.update(changed)
        self._changed.clear()
        table = self._table(changed)
        having = self.plan.having
        keep = as_array(having(table), table.num_rows) if having is not None else pa.repeat(True, table.num_rows)
        keep = pc.fill_null(keep, False).to_pylist()
        gone = [i for i, (key, kept) in enumerate(zip(changed, keep, strict=True)) if not kept and self.groups[key][0]]
        for key, kept in zip(changed, keep, strict=True):
            self.groups[key][0] = kept
        upserts = table.filter(pa.array(keep, pa.bool_()))
        deletes = table.take(pa.array(gone, pa.int64())) if gone else None
        return (upserts if upserts.num_rows else None), deletes

    def expire(self) -> None:
        """Forget the groups past their time to live (their rows stay in the sink)."""
        if not self.ttl_ms:
            return
        cutoff = int(self.clock() * 1000) - self.ttl_ms
        for key in [k for k, (_, _, touched) in self.groups.items() if touched < cutoff]:
            del self.groups[key]
            self._changed.discard(key)
            self._unsaved.add(key)

    def _table(self, keys: list[tuple[Any, ...]]) -> pa.Table:
        columns: dict[str, Any] = {}
        for i, output in enumerate(self.plan.keys):
            columns[output.name] = pa.array([key[i] for key in keys])
        slot = 0
        for aggregate, slots in zip(self.plan.aggregates, self._slots, strict=True):
            parts = [self.groups[key][1][slot : slot + len(slots)] for key in keys]
            columns[aggregate.column] = pa.array([final(aggregate, part) for part in parts])
            slot += len(slots)
        return pa.table(columns)

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The groups updated or forgotten since the last call."""
        changed: dict[bytes, bytes | None] = {
            _encoder.encode(list(key)): _encoder.encode(self.groups[key]) if key in self.groups else None
            for key in self._unsaved
        }
        self._unsaved.clear()
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.groups = {tuple(_decoder.decode(k)): _decoder.decode(v) for k, v in entries.items()}
        self._changed.clear()
        self._unsaved.clear()
