"""`memory://`: the event store in this process's memory, for tests; same rules as SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from inmotion.errors import Closed, ConcurrencyError
from inmotion.sourcing.store import EncodedEvent, Recorder, StoredEvent, StoredSnapshot


class MemoryRecorder(Recorder):
    def __init__(self) -> None:
        self._events: list[StoredEvent] = []
        self._streams: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, StoredSnapshot] = {}
        self._cursors: dict[str, int] = {}
        self._changed = threading.Condition()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("the event store is closed")

    def append(
        self,
        stream_id: str,
        events: Sequence[EncodedEvent],
        expected_version: int,
        snapshot: tuple[str, int, bytes] | None,
    ) -> int:
        with self._changed:
            self._check_open()
            stream = self._streams.get(stream_id, [])
            if len(stream) != expected_version:
                raise ConcurrencyError(
                    f"stream {stream_id!r} is at version {len(stream)}, not the expected {expected_version}"
                )
            if not events:
                return expected_version
            now = int(time.time() * 1000)
            last = len(self._events)
            stored = [
                StoredEvent(stream_id, expected_version + i, last + i, e.type, e.schema_version, e.id, now, e.payload)
                for i, e in enumerate(events, 1)
            ]
            self._events.extend(stored)
            self._streams[stream_id] = stream + stored
            version = expected_version + len(stored)
            if snapshot is not None:
                self._snapshots[stream_id] = StoredSnapshot(stream_id, version, *snapshot)
            self._changed.notify_all()
            return version

    def read_stream(self, stream_id: str, from_version: int, to_version: int | None) -> list[StoredEvent]:
        with self._changed:
            self._check_open()
            return self._streams.get(stream_id, [])[from_version - 1 : to_version]

    def read_all(self, from_position: int, limit: int) -> list[StoredEvent]:
        with self._changed:
            self._check_open()
            return self._events[from_position - 1 : from_position - 1 + limit]

    def stream_version(self, stream_id: str) -> int:
        with self._changed:
            self._check_open()
            return len(self._streams.get(stream_id, ()))

    def last_position(self) -> int:
        with self._changed:
            self._check_open()
            return len(self._events)

    def load_snapshot(self, stream_id: str) -> StoredSnapshot | None:
        with self._changed:
            self._check_open()
            return self._snapshots.get(stream_id)

    def wait(self, after_position: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._events) > after_position or self._closed, timeout) and (
                len(self._events) > after_position
            )

    def cursor(self, name: str) -> int:
        with self._changed:
            self._check_open()
            return self._cursors.get(name, 0)

    def save_cursor(self, name: str, position: int) -> None:
        with self._changed:
            self._check_open()
            self._cursors[name] = position

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
