"""OVER aggregates in event time (Flink's OverAggregate): each row is given once the watermark
has passed its time, with aggregates over its partition's rows up to it, in time order (rows of
one time in the order they came). A row that comes at or behind the watermark is late: dropped
and counted, as Flink drops it.

Per partition the state holds the rows waiting for the watermark and what the frame needs of
those given: for a bounded frame the (time, partial values) of its rows, for an unbounded one
the running partial values. Partial values are the window aggregation's (`partial_specs`,
`merge`, `final`), one row's each."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from inmotion.streams.expressions import ARROW_TYPES
from inmotion.streams.operators import Over, Plan
from inmotion.streams.windows import column_of, event_times, final, merge, partial_specs

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class OverState:
    def __init__(self, plan: Plan) -> None:
        assert plan.over is not None
        self.over: Over = plan.over
        self.slots = [partial_specs(a, i) for i, a in enumerate(self.over.aggregates)]
        self.kinds = [kind for slots in self.slots for _, kind in slots]
        self.partitions: dict[tuple[Any, ...], list[Any]] = {}
        """Per partition: [waiting rows ([time, sequence, partials, row values]), the frame's
        entries ([time, partials]) or the running partials (unbounded)]."""
        columns = [c for c in plan.source.columns if c.name in plan.reads]
        self.schema = pa.schema([(c.name, ARROW_TYPES[c.type]) for c in columns])
        """The rows' columns, as the scan decodes them."""
        self._sequence = itertools.count()
        self._changed: set[tuple[Any, ...]] = set()
        self.fired = False

    def add(self, rows: pa.Table, watermark: int | None) -> int:
        """Keep rows until the watermark passes them, but the late ones (at or behind the
        watermark the rows given so far were given at: they would come out of order): how many
        those were."""
        times = event_times(rows, self.over.time)
        late = pc.is_null(times) if watermark is None else pc.fill_null(pc.less_equal(times, watermark), True)
        count = pc.sum(late).as_py() or 0
        if count:
            keep = pc.invert(late)
            rows, times = rows.filter(keep), times.filter(keep)
        if not rows.num_rows:
            return count
        keys = [column_of(key.value(rows), rows.num_rows).to_pylist() for key in self.over.partition]
        arguments = [
            column_of(a.argument(rows), rows.num_rows).to_pylist() if a.argument is not None else None
            for a in self.over.aggregates
        ]
        values = zip(*(column.to_pylist() for column in rows.columns), strict=True)
        for i, (time, row) in enumerate(zip(times.to_pylist(), values, strict=True)):
            partials = [
                _partial(kind, None if argument is None else argument[i])
                for argument, slots in zip(arguments, self.slots, strict=True)
                for _, kind in slots
            ]
            key = tuple(column[i] for column in keys)
            state = self.partitions.setdefault(key, [[], [] if self.over.preceding is not None else None])
            state[0].append([time, next(self._sequence), partials, list(row)])
            self._changed.add(key)
        return count

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        """The rows the watermark has passed, in time order per partition, with their aggregates."""
        given: list[tuple[list[Any], list[Any]]] = []  # (aggregates, row values)
        for key, state in self.partitions.items():
            waiting = state[0]
            if not waiting or min(entry[0] for entry in waiting) > watermark:
                continue
            ready = sorted((entry for entry in waiting if entry[0] <= watermark), key=lambda e: (e[0], e[1]))
            state[0] = [entry for entry in waiting if entry[0] > watermark]
            given.extend(self._aggregate(state, ready))
            self._changed.add(key)
        if not given:
            return None
        self.fired = True
        columns = [pa.array([row[i] for _, row in given], field.type) for i, field in enumerate(self.schema)]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        for i, aggregate in enumerate(self.over.aggregates):
            table = table.append_column(aggregate.column, pa.array([results[i] for results, _ in given]))
        return table

    def _aggregate(self, state: list[Any], ready: list[list[Any]]) -> list[tuple[list[Any], list[Any]]]:
        """The `ready` rows (in order) with their aggregates, the frame moved along them."""
        over = self.over
        given: list[tuple[list[Any], list[Any]]] = []
        if over.frame == "RANGE":  # rows of one time are peers: each sees them all
            for _, peers in itertools.groupby(ready, key=lambda entry: entry[0]):
                group = list(peers)
                time = group[0][0]
                if over.preceding is None:
                    for entry in group:
                        state[1] = entry[2] if state[1] is None else merge(self.kinds, state[1], entry[2])
                    partials = state[1]
                else:
                    state[1] = [e for e in state[1] if e[0] >= time - over.preceding] + [[e[0], e[2]] for e in group]
                    partials = self._merged(state[1])
                given.extend((self._finals(partials), entry[3]) for entry in group)
            return given
        for entry in ready:  # ROWS: each row sees the `preceding` rows before it
            if over.preceding is None:
                state[1] = entry[2] if state[1] is None else merge(self.kinds, state[1], entry[2])
                partials = state[1]
            else:
                state[1] = [*state[1], [entry[0], entry[2]]][-(over.preceding + 1) :]
                partials = self._merged(state[1])
            given.append((self._finals(partials), entry[3]))
        return given

    def _merged(self, frame: list[list[Any]]) -> list[Any]:
        partials: list[Any] = frame[0][1]
        for _, more in frame[1:]:
            partials = merge(self.kinds, partials, more)
        return partials

    def _finals(self, partials: list[Any]) -> list[Any]:
        finals, slot = [], 0
        for aggregate, slots in zip(self.over.aggregates, self.slots, strict=True):
            finals.append(final(aggregate, list(partials[slot : slot + len(slots)])))
            slot += len(slots)
        return finals

    # --- checkpoints --------------------------------------------------------------------------
    def changes(self) -> dict[bytes, bytes | None]:
        """The partitions changed since the last call (None: nothing left of one)."""
        changed: dict[bytes, bytes | None] = {}
        for key in self._changed:
            state = self.partitions.get(key)
            changed[_encoder.encode(list(key))] = None if state is None else _encoder.encode(state)
        self._changed.clear()
        self.fired = False
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.partitions = {tuple(_decoder.decode(key)): _decoder.decode(value) for key, value in entries.items()}
        sequences = [entry[1] for state in self.partitions.values() for entry in state[0]]
        self._sequence = itertools.count(max(sequences, default=-1) + 1)
        self._changed.clear()


def _partial(kind: str, value: Any) -> Any:
    """One row's partial value of an aggregate (as Arrow's grouped `kind` gives one)."""
    if kind == "count_all":
        return 1
    if kind == "count":
        return int(value is not None)
    return value
