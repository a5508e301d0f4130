"""The runtime's counters, readable in the Prometheus text format."""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence

_HELP = {
    "inmotion_published_total": ("counter", "Events published."),
    "inmotion_consumed_total": ("counter", "Events whose handler finished successfully."),
    "inmotion_failed_total": ("counter", "Handler tries that raised."),
    "inmotion_retried_total": ("counter", "Handler tries repeated after a failure."),
    "inmotion_dead_lettered_total": ("counter", "Events sent to a dead-letter topic."),
    "inmotion_skipped_total": ("counter", "Events not handed to the handler (filtered out or already handled)."),
    "inmotion_lag": ("gauge", "Records not yet committed by the group, per partition."),
}

Labels = tuple[tuple[str, str], ...]
Series = tuple[str, str, str, list[tuple[dict[str, str], float]]]
"""One named series as data: (name, kind, help, [(labels, value), ...]); a histogram's values
carry the name of their sample (`NAME_bucket`, `_sum`, `_count`) as the label `__name__`."""


class Metrics:
    """Thread-safe counters, gauges and histograms keyed by name and labels. Each sample's value
    is kept in a cell (a one-item list) that its `Counter` or `Histogram` handle adds to without
    looking the series up."""

    def __init__(self, *, runtime: bool = True) -> None:
        """`runtime`: announce the runtime's series (an app's metrics); False for a set of
        series of one's own (`describe` each)."""
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help = dict(_HELP) if runtime else {}

    def describe(self, name: str, kind: str, text: str) -> None:
        """Announce a series of a component above the runtime (the router's), so that
        `prometheus` shows it like the runtime's own."""
        with self._lock:
            self._help.setdefault(name, (kind, text))

    def _cell(self, name: str, key: Labels) -> list[float]:
        """Called holding the lock."""
        series = self._values[name]
        cell = series.get(key)
        if cell is None:
            cell = series[key] = [0]
        return cell

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._cell(name, key)[0] += amount

    def counter(self, name: str, **labels: str) -> Counter:
        """A handle on one series, for hot paths that add to it often."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return Counter(self._lock, self._cell(name, key))

    def histogram(self, name: str, buckets: Sequence[float], **labels: str) -> Histogram:
        """A handle on one histogram series (announce `name` with kind "histogram"): its
        samples are `NAME_bucket` per upper bound `le` (and +Inf), `NAME_sum` and `NAME_count`."""
        key = tuple(sorted(labels.items()))
        bounds = [*sorted(buckets), math.inf]
        with self._lock:
            cells = [self._cell(f"{name}_bucket", tuple(sorted((*key, ("le", _le(b)))))) for b in bounds]
            return Histogram(
                self._lock, bounds, cells, self._cell(f"{name}_sum", key), self._cell(f"{name}_count", key)
            )

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._cell(name, tuple(sorted(labels.items())))[0] = value

    def value(self, name: str, **labels: str) -> float:
        """One series' value, or the sum over every series that carries `labels`."""
        wanted = set(labels.items())
        with self._lock:
            return sum(cell[0] for key, cell in self._values.get(name, {}).items() if wanted <= set(key))

    def series(self) -> list[Series]:
        """Every announced series with its values now, as data (a metrics report's content)."""
        with self._lock:
            return [
                (
                    name,
                    kind,
                    text,
                    [
                        (self._labelled(sample, name, labels), value)
                        for sample, labels, value in self._samples(name, kind)
                    ],
                )
                for name, (kind, text) in self._help.items()
            ]

    @staticmethod
    def _labelled(sample: str, name: str, labels: Labels) -> dict[str, str]:
        return dict(labels) if sample == name else {**dict(labels), "__name__": sample}

    def include(self, series: list[Series], **labels: str) -> None:
        """Take in `series` (another process's, see `series`), each value with `labels` added."""
        for name, kind, text, values in series:
            self.describe(name, kind, text)
            for own, value in values:
                sample = own.get("__name__", name)
                self.set(sample, value, **{k: v for k, v in own.items() if k != "__name__"}, **labels)

    def _samples(self, name: str, kind: str) -> list[tuple[str, Labels, float]]:
        """The family's samples in the order shown (a histogram's buckets by bound). Called holding the lock."""
        found = []
        for sample in (f"{name}_bucket", f"{name}_sum", f"{name}_count") if kind == "histogram" else (name,):
            found += [(sample, labels, cell[0]) for labels, cell in self._values.get(sample, {}).items()]
        return sorted(found, key=lambda s: (s[0], [(k, _bound(v) if k == "le" else v) for k, v in s[1]]))

    def prometheus(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self._help.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for sample, labels, value in self._samples(name, kind):
                    rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    lines.append(
                        f"{sample}{{{rendered}}} {_number(value)}" if rendered else f"{sample} {_number(value)}"
                    )
        return "\n".join(lines) + "\n"


class Counter:
    __slots__ = ("_cell", "_lock")

    def __init__(self, lock: threading.Lock, cell: list[float]) -> None:
        self._lock = lock
        self._cell = cell

    def add(self, amount: float = 1) -> None:
        with self._lock:
            self._cell[0] += amount


class Histogram:
    __slots__ = ("_bounds", "_buckets", "_count", "_lock", "_sum")

    def __init__(
        self,
        lock: threading.Lock,
        bounds: list[float],
        buckets: list[list[float]],
        total: list[float],
        count: list[float],
    ) -> None:
        self._lock = lock
        self._bounds = bounds
        self._buckets = buckets
        self._sum = total
        self._count = count

    def observe(self, value: float) -> None:
        with self._lock:
            for bound, cell in zip(self._bounds, self._buckets, strict=True):
                if value <= bound:
                    cell[0] += 1  # buckets are cumulative: every bound at or above the value
            self._sum[0] += value
            self._count[0] += 1


def _number(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) else repr(value)


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus' clients write it: 1.0, 0.25, +Inf."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def _bound(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
