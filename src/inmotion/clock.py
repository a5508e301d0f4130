"""The one clock: where retries, leases, coordination and timers read the time and wait.

`SystemClock` in production; `FakeClock` in tests, so that a test of backoffs, hand-overs or
timers never sleeps for real (as trio's autojump clock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Where the runtime reads the time and waits: `SystemClock` in production, `FakeClock` in tests."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock for tests that never sleeps for real, and remembers every sleep it was asked for.

    With `autojump` (the default) a sleep moves the time forward at once, yielding to the
    event loop once. Without it, sleepers wait until the test calls `advance` past their
    wake-up time, so a test can hold a backoff open and watch what else keeps running.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, autojump: bool = True) -> None:
        self.now = start
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.autojump:
            self.now += max(seconds, 0.0)
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, wake))
        await wake

    @property
    def sleeping(self) -> int:
        """How many sleeps are waiting for `advance`."""
        return sum(1 for _, wake in self._sleepers if not wake.done())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, wake in self._sleepers:
            if deadline <= self.now and not wake.done():
                wake.set_result(None)
        self._sleepers = [(d, w) for d, w in self._sleepers if not w.done()]
