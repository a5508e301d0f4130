"""Retry policies and the clock that times their backoff (real, or fake in tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Protocol

from inmotion.errors import InvalidConfig, InvalidEvent


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


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """How often a failing handler is tried, and how long to wait between tries.

    `attempts` counts every try, the first included. The wait before try n+1 is
    `backoff * 2**(n-1)`, capped at `max_backoff`; with `jitter` it is drawn uniformly from
    [wait/2, wait] so that many consumers failing together do not retry in lockstep.
    Exceptions that are instances of `give_up_on` go to the dead-letter topic at once, as do
    payloads that do not fit the handler's annotation (`InvalidEvent`).
    """

    attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 30.0
    jitter: bool = True
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise InvalidConfig(f"Retry attempts must be an integer >= 1, got {self.attempts!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise InvalidConfig("Retry backoff and max_backoff must not be negative")
        for kind in self.give_up_on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise InvalidConfig(f"Retry give_up_on takes exception classes, got {kind!r}")

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after try number `failed_attempt` (1-based) failed."""
        wait: float = min(self.max_backoff, self.backoff * 2.0 ** (failed_attempt - 1))
        if self.jitter and wait > 0:
            wait = float((rng or random).uniform(wait / 2, wait))
        return wait

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        if failed_attempt >= self.attempts:
            return False
        return not isinstance(error, (InvalidEvent, *self.give_up_on))
