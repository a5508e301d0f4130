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
from inmotion.streams.operators import Aggregate, Plan, project
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
        self.fired = False  # its changes wait for a checkpoint: nothing to save without reads

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


class RegroupState:
    """An updating aggregation of an updating GROUP BY's rows (see `Cascade`): the inner groups
    (a `GroupState`), and per outer group the count of inner rows in it and the aggregates'
    retractable accumulators: COUNT a number, SUM and AVG a sum and a count, MIN, MAX and
    DISTINCT a multiset of the values (value -> how many rows have it). It remembers the values
    each inner row added, to take them back when the row changes or goes."""

    def __init__(self, plan: Plan, ttl_ms: int = 0, clock: Callable[[], float] = time.time) -> None:
        assert plan.cascade is not None
        self.plan = plan
        self.cascade = plan.cascade
        self.inner = GroupState(plan.cascade.inner, ttl_ms, clock)
        self.added: dict[tuple[Any, ...], list[Any]] = {}
        """Per inner key, what its row added: [outer key, the aggregates' argument values]."""
        self.groups: dict[tuple[Any, ...], list[Any]] = {}
        """Per outer key: [shown, inner rows, accumulator per aggregate]."""
        self._changed: set[tuple[Any, ...]] = set()
        self._unsaved: set[tuple[bytes, tuple[Any, ...]]] = set()  # (b"a" added | b"g" group, key)
        self.fired = False  # its changes wait for a checkpoint: nothing to save without reads

    def add(self, rows: pa.Table, watermarks: Any) -> int:
        return self.inner.add(rows, watermarks)

    def expire(self) -> None:
        self.inner.expire()

    def updates(self) -> tuple[pa.Table | None, pa.Table | None]:
        """The outer groups changed by the inner rows changed since the last call: (rows to
        upsert, rows whose key to delete)."""
        upserts, deletes = self.inner.updates()
        for table, new in ((deletes, False), (upserts, True)):
            if table is not None:
                self._change(table, new)
        if not self._changed:
            return None, None
        changed = list(self._changed)
        self._changed.clear()
        present = [key for key in changed if self.groups[key][1] > 0]
        table = self._table(present)
        having = self.plan.having
        keep = as_array(having(table), table.num_rows) if having is not None else pa.repeat(True, table.num_rows)
        kept = dict(zip(present, pc.fill_null(keep, False).to_pylist(), strict=True))
        gone = [key for key in changed if self.groups[key][0] and not kept.get(key, False)]
        for key in changed:
            self.groups[key][0] = kept.get(key, False)
            if not self.groups[key][1]:  # no inner row left: the group is gone
                del self.groups[key]
        upserts = table.filter(pa.array([kept[key] for key in present], pa.bool_()))
        deletes = self._table(gone, finals=False) if gone else None
        return (upserts if upserts.num_rows else None), deletes

    def _change(self, table: pa.Table, new: bool) -> None:
        """Inner rows changed (`new`: their values now; else gone): retract what each added
        before, add what it adds now."""
        inner = self.cascade.inner
        width = len(inner.keys)
        inner_keys = list(zip(*(column.to_pylist() for column in table.columns[:width]), strict=True))
        if not width:
            inner_keys = [()] * table.num_rows
        rows = project(table, inner.select)
        where_ = self.cascade.where
        holds = pc.fill_null(as_array(where_(rows), rows.num_rows), False).to_pylist() if where_ else None
        keys = zip(*(column_of(k.value(rows), rows.num_rows).to_pylist() for k in self.plan.keys), strict=True)
        arguments = [
            column_of(a.argument(rows), rows.num_rows).to_pylist() if a.argument is not None else None
            for a in self.plan.aggregates
        ]
        outer_keys = list(keys) if self.plan.keys else [()] * rows.num_rows
        for i, inner_key in enumerate(inner_keys):
            before = self.added.pop(inner_key, None)
            if before is not None:
                self._apply(tuple(before[0]), before[1], -1)
            self._unsaved.add((b"a", inner_key))
            if not new or (holds is not None and not holds[i]):
                continue
            values = [None if column is None else column[i] for column in arguments]
            self._apply(outer_keys[i], values, 1)
            self.added[inner_key] = [outer_keys[i], values]

    def _apply(self, key: tuple[Any, ...], values: list[Any], sign: int) -> None:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = [False, 0, *(_empty(a) for a in self.plan.aggregates)]
        group[1] += sign
        for slot, (aggregate, value) in enumerate(zip(self.plan.aggregates, values, strict=True), 2):
            if aggregate.argument is None:  # COUNT(*)
                group[slot] += sign
            elif value is None:
                continue
            elif isinstance(group[slot], dict):  # a multiset
                count = group[slot].get(value, 0) + sign
                if count:
                    group[slot][value] = count
                else:
                    del group[slot][value]
            elif aggregate.function == "COUNT":
                group[slot] += sign
            else:  # SUM, AVG: [sum, count]
                group[slot] = [group[slot][0] + sign * value, group[slot][1] + sign]
        self._changed.add(key)
        self._unsaved.add((b"g", key))

    def _table(self, keys: list[tuple[Any, ...]], *, finals: bool = True) -> pa.Table:
        columns: dict[str, Any] = {}
        for i, output in enumerate(self.plan.keys):
            columns[output.name] = pa.array([key[i] for key in keys])
        for slot, aggregate in enumerate(self.plan.aggregates, 2):
            values = [_final(aggregate, self.groups[key][slot]) if finals else None for key in keys]
            columns[aggregate.column] = pa.array(values)
        return pa.table(columns)

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The inner groups, the inner rows' added values and the outer groups changed since the
        last call, each kind under a prefix of its own."""
        changed = {b"i" + key: value for key, value in self.inner.changes().items()}
        for kind, key in self._unsaved:
            found = (self.added if kind == b"a" else self.groups).get(key)
            if found is not None and kind == b"g":  # multisets as [value, count] pairs: values of any type
                found = [*found[:2], *(list(a.items()) if isinstance(a, dict) else a for a in found[2:])]
            changed[kind + _encoder.encode(list(key))] = None if found is None else _encoder.encode(found)
        self._unsaved.clear()
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.inner.restore({key[1:]: value for key, value in entries.items() if key[:1] == b"i"})
        self.added = {
            tuple(_decoder.decode(key[1:])): _decoder.decode(value) for key, value in entries.items() if key[:1] == b"a"
        }
        self.groups = {}
        for key, value in entries.items():
            if key[:1] == b"g":
                shown, rows, *accumulators = _decoder.decode(value)
                multisets = [isinstance(_empty(a), dict) for a in self.plan.aggregates]
                accumulators = [dict(a) if m else a for m, a in zip(multisets, accumulators, strict=True)]
                self.groups[tuple(_decoder.decode(key[1:]))] = [shown, rows, *accumulators]
        self._changed.clear()
        self._unsaved.clear()


Groups = GroupState | RegroupState


def group_state(plan: Plan, ttl_ms: int, clock: Callable[[], float]) -> Groups:
    """The state of a GROUP BY without a window (of rows, or of another's updating rows)."""
    return RegroupState(plan, ttl_ms, clock) if plan.cascade is not None else GroupState(plan, ttl_ms, clock)


def _empty(aggregate: Aggregate) -> Any:
    if aggregate.distinct or aggregate.function in ("MIN", "MAX"):
        return {}
    return [0, 0] if aggregate.function in ("SUM", "AVG") and aggregate.argument is not None else 0


def _final(aggregate: Aggregate, accumulator: Any) -> Any:
    """An aggregate's value from its retractable accumulator (as `final` from partial values)."""
    if aggregate.distinct:
        return final(aggregate, [list(accumulator)])
    if isinstance(accumulator, dict):  # MIN, MAX
        return (min(accumulator) if aggregate.function == "MIN" else max(accumulator)) if accumulator else None
    if aggregate.function == "AVG":
        return final(aggregate, accumulator)
    if aggregate.function == "SUM":
        return accumulator[0] if accumulator[1] else None
    return accumulator
