"""The runtime's counters, readable in the Prometheus text format."""

from __future__ import annotations

import threading
from collections import defaultdict

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


class Metrics:
    """Thread-safe counters and gauges keyed by name and labels. Each series' value is kept in
    a cell (a one-item list) that its `Counter` handle adds to without looking the series up."""

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

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._cell(name, tuple(sorted(labels.items())))[0] = value

    def value(self, name: str, **labels: str) -> float:
        """One series' value, or the sum over every series that carries `labels`."""
        wanted = set(labels.items())
        with self._lock:
            return sum(cell[0] for key, cell in self._values.get(name, {}).items() if wanted <= set(key))

    def prometheus(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self._help.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, (value,) in sorted(self._values.get(name, {}).items()):
                    rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    number = int(value) if value == int(value) else value
                    lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")
        return "\n".join(lines) + "\n"


class Counter:
    __slots__ = ("_cell", "_lock")

    def __init__(self, lock: threading.Lock, cell: list[float]) -> None:
        self._lock = lock
        self._cell = cell

    def add(self, amount: float = 1) -> None:
        with self._lock:
            self._cell[0] += amount


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
