"""`memory://`: workflow instances in this process's memory, for tests; same rules as SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import msgspec

from inmotion.errors import Closed
from inmotion.workflows.store import STATUSES, Change, Entry, Instance, NewEntry, WorkflowRecorder


class MemoryWorkflowRecorder(WorkflowRecorder):
    def __init__(self) -> None:
        self._instances: dict[str, Instance] = {}
        self._histories: dict[str, list[Entry]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the workflow store is closed")

    def create(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance:
        with self._lock:
            self._check_open()
            stored = self._instances.get(instance.key)
            if stored is not None:
                return stored
            self._instances[instance.key] = instance
            self._histories[instance.key] = _entries(0, entries, instance.created_ms)
            return instance

    def write(self, changes: Sequence[Change]) -> set[str]:
        with self._lock:
            self._check_open()
            now = int(time.time() * 1000)
            conflicts = set()
            for change in changes:
                stored = self._instances.get(change.key)
                if stored is None or stored.version != change.expected_version:
                    conflicts.add(change.key)
                    continue
                at = change.at_ms or now
                self._histories[change.key] += _entries(change.expected_version, change.entries, at)
                self._instances[change.key] = _updated(stored, change, at)
            return conflicts

    def create_now(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance | None:
        return self.create(instance, entries)

    def write_now(self, changes: Sequence[Change]) -> set[str] | None:
        return self.write(changes)

    def load(self, key: str) -> tuple[Instance, list[Entry]] | None:
        with self._lock:
            self._check_open()
            instance = self._instances.get(key)
            return None if instance is None else (instance, list(self._histories[key]))

    def instances(
        self,
        *,
        statuses: Sequence[str] = STATUSES,
        shard: int | None = None,
        correlation: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        with self._lock:
            self._check_open()
            found = [
                i
                for i in self._instances.values()
                if i.status in statuses
                and (shard is None or i.shard == shard)
                and (correlation is None or i.correlation == correlation)
            ]
        return sorted(found, key=lambda i: (i.created_ms, i.key))[:limit]

    def count(self, *, statuses: Sequence[str], shard: int) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for i in self._instances.values() if i.status in statuses and i.shard == shard)

    def close(self) -> None:
        with self._lock:
            self._closed = True


def _entries(version: int, entries: Sequence[NewEntry], now: int) -> list[Entry]:
    return [Entry(version + i, e.kind, e.seq, e.name, e.payload, now) for i, e in enumerate(entries, 1)]


def _updated(stored: Instance, change: Change, now: int) -> Instance:
    return msgspec.structs.replace(
        stored,
        version=change.expected_version + len(change.entries),
        status=change.status,
        wake_ms=change.wake_ms,
        error=change.error,
        result=stored.result if change.result is None else change.result,
        updated_ms=now,
    )
