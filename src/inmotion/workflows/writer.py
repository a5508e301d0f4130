"""`GroupWriter`: the history writes of every running instance, in as few transactions as
the store's lock allows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from inmotion.workflows.errors import InstanceLost
from inmotion.workflows.store import Change, WorkflowRecorder


class GroupWriter:
    """Writes of many instances, gathered into one transaction: those that arrive while one
    is being written go together in the next."""

    def __init__(self, recorder: Callable[[], WorkflowRecorder]) -> None:
        self.recorder = recorder
        self._pending: list[tuple[Change, asyncio.Future[int]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, change: Change) -> int:
        """Write `change`; when it was recorded (ms). InstanceLost if the instance was not at
        the version the change expects."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((change, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            changes = [change for change, _ in batch]
            try:
                conflicts = self.recorder().write_now(changes)
                if conflicts is None:  # the lock is taken: wait for it in the thread
                    conflicts = await loop.run_in_executor(None, self.recorder().write, changes)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for change, future in batch:
                if future.done():
                    continue
                if change.key in conflicts:
                    future.set_exception(InstanceLost(change.key))
                else:
                    future.set_result(change.at_ms)

    async def idle(self) -> None:
        """Return once every write asked for so far is done (a cancelled writer's too)."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
