"""Dedupe records of an idempotent subscription: which events its group has handled.

Asked on the event loop (every coordinator answers `seen` without waiting) and written in the
background, many events in one write, so that a worker never waits for a dedupe write: a copy
of an event right behind its original is caught by the keys still being written, and offsets
are committed only after the records of the events they pass (`written`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from inmotion.log import Coordinator, Key, Log
from inmotion.runtime.publisher import soon

logger = logging.getLogger("inmotion.runtime")


class Dedupe:
    def __init__(self, log: Log, coordinator: Coordinator, group: str, pool: concurrent.futures.Executor) -> None:
        self.log = log
        self.coordinator = coordinator
        self.group = group
        self._pool = pool
        self._to_write: list[Key] = []
        self._unwritten: set[Key] = set()
        """Keys of handled events whose records are being written: already seen."""
        self._writing: asyncio.Task[None] | None = None
        self._queued = 0
        """Keys remembered so far; `_written` of them are written (or their write failed)."""
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def seen(self, key: Key) -> bool:
        """Has the group handled this event already? InmotionError while the records cannot
        be read."""
        return key in self._unwritten or bool(self.coordinator.seen(self.group, [key]))

    def remember(self, key: Key) -> None:
        """Record `key` as handled, in one write with the keys of every event that finishes
        meanwhile, without waiting for it. A failed write is logged, not raised: the event was
        handled, and without its record a later copy is merely handled again."""
        self._unwritten.add(key)
        self._to_write.append(key)
        self._queued += 1
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._to_write:
            batch, self._to_write = self._to_write, []
            try:
                if not await soon(self.log, lambda: self.coordinator.remember_now(self.group, batch)):  # noqa: B023
                    await loop.run_in_executor(self._pool, self.coordinator.remember, self.group, batch)
            except Exception as exc:  # commits wait for this task: it must not die
                logger.warning("recording %d dedupe record(s) failed: %s", len(batch), exc, extra={"group": self.group})
            finally:
                self._unwritten.difference_update(batch)
                self._written += len(batch)
                waiting, self._waiters = self._waiters, []
                for target, future in waiting:
                    if self._written < target:
                        self._waiters.append((target, future))
                    elif not future.done():
                        future.set_result(None)

    async def written(self) -> None:
        """Return once the records of every event handled so far are written (or their write
        failed): before offsets past those events are committed. Keys remembered meanwhile are
        not waited for, so that a steady stream of them keeps no caller waiting."""
        if self._written >= self._queued:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued, future))
        await asyncio.shield(future)
