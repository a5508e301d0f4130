"""SESSION windows: per key, the rows until the key is silent for the gap.

A row opens the window [time, time + gap); windows of a key that overlap or touch merge into one
(Flink's merging windows), so a session grows while its key keeps sending and ends `gap` after
its last row. It fires once the watermark passes its end. A row is late only if its own window would
have fired already and it joins no open session of its key. The state is each key's open
sessions (start, end, the aggregates' partial values), checkpointed by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pyarrow as pa

from inmotion.streams.operators import Plan
from inmotion.streams.windows import Fired, column_of, event_times, fired_table, merge, partial_specs

Session = list[Any]
"""[start, end, partial values]"""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class SessionState:
    def __init__(self, plan: Plan, time_type: pa.DataType) -> None:
        assert plan.window is not None
        self.plan = plan
        self.column = plan.window.column
        self.gap = plan.window.size
        self.time_type = time_type
        self.sessions: dict[tuple[Any, ...], list[Session]] = {}
        self._changed: set[tuple[Any, ...]] = set()
        self.fired = False
        self._specs = [spec for i, a in enumerate(plan.aggregates) for spec in partial_specs(a, i)]
        self._kinds = [kind for _, kind in self._specs]

    def add(self, rows: pa.Table, watermarks: Any) -> int:
        """Put each row in its key's session, but the late ones: how many those were."""
        count = rows.num_rows
        times = event_times(rows, self.column).to_pylist()
        marks = watermarks.to_pylist()
        keys = list(zip(*(column_of(k.value(rows), count).to_pylist() for k in self.plan.keys), strict=True))
        arguments = {
            f"a{i}": column_of(a.argument(rows), count).to_pylist()
            for i, a in enumerate(self.plan.aggregates)
            if a.argument is not None
        }
        late = 0
        for i in range(count):
            time = times[i]
            key = keys[i] if keys else ()
            if time is None or not self._join(
                key, time, marks[i], [_partial(spec, arguments, i) for spec in self._specs]
            ):
                late += 1
        return late

    def _join(self, key: tuple[Any, ...], time: int, mark: int | None, partials: list[Any]) -> bool:
        start, end = time, time + self.gap
        sessions = self.sessions.get(key, [])
        # windows that touch merge too (Flink's TimeWindow.intersects is inclusive): a row one
        # gap after the last still belongs to its session
        overlapping = [s for s in sessions if s[0] <= end and start <= s[1]]
        if not overlapping and mark is not None and end - 1 <= mark:
            return False
        for session in overlapping:
            start, end = min(start, session[0]), max(end, session[1])
            partials = merge(self._kinds, session[2], partials)
        kept = [s for s in sessions if s not in overlapping]
        kept.append([start, end, partials])
        kept.sort(key=lambda s: s[0])
        self.sessions[key] = kept
        self._changed.add(key)
        return True

    def fire(self, watermark: int, previous: int | None) -> pa.Table | None:
        """The sessions that ended by the watermark, as a table like windows' (None: none)."""
        rows: Fired = []
        for key in [k for k, sessions in self.sessions.items() if sessions[0][1] - 1 <= watermark]:
            sessions = self.sessions.pop(key)
            rows.extend((s[0], s[1], key, s[2]) for s in sessions if s[1] - 1 <= watermark)
            rest = [s for s in sessions if s[1] - 1 > watermark]
            if rest:
                self.sessions[key] = rest
            self._changed.add(key)
            self.fired = True
        rows.sort(key=lambda row: (row[1], row[0]))
        return fired_table(self.plan, self.time_type, rows) if rows else None

    def changes(self) -> dict[bytes, bytes | None]:
        changed = {}
        for key in self._changed:
            sessions = self.sessions.get(key)
            changed[_encoder.encode(list(key))] = None if not sessions else _encoder.encode(sessions)
        self._changed.clear()
        self.fired = False
        return changed

    def restore(self, entries: Mapping[bytes, bytes]) -> None:
        self.sessions = {tuple(_decoder.decode(k)): _decoder.decode(v) for k, v in entries.items()}
        self._changed.clear()


def _partial(spec: tuple[Any, str], arguments: Mapping[str, list[Any]], row: int) -> Any:
    """One row's partial value of an aggregate (see `partial_specs`)."""
    column, kind = spec
    if kind == "count_all":
        return 1
    value = arguments[column][row]
    if kind == "count":
        return 0 if value is None else 1
    if kind == "distinct":
        return [] if value is None else [value]
    return value
