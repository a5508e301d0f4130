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

from inmotion.log import Coordinator

logger = logging.getLogger("inmotion.runtime")

Key = tuple[str, str]
"""An event's (source, id)."""


class Dedupe:
    def __init__(self, coordinator: Coordinator, group: str, pool: concurrent.futures.Executor) -> None:
        self.coordinator = coordinator
        self.group = group
        self._pool = pool
        self._to_write: list[Key] = []
        self._unwritten: set[Key] = set()
        """Keys of handled events whose records are being written: already seen."""
        self._writing: asyncio.Task[None] | None = None

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
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._to_write:
            batch, self._to_write = self._to_write, []
            try:
                await loop.run_in_executor(self._pool, self.coordinator.remember, self.group, batch)
            except Exception as exc:  # commits wait for this task: it must not die
                logger.warning("recording %d dedupe record(s) failed: %s", len(batch), exc, extra={"group": self.group})
            finally:
                self._unwritten.difference_update(batch)

    async def written(self) -> None:
        """Return once the records of every event handled so far are written (or their write
        failed): before offsets past those events are committed."""
        while self._writing is not None and not self._writing.done():
            await asyncio.shield(self._writing)
