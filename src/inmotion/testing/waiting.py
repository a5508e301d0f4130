"""Waiting in tests for a condition that another thread, process or task makes true.

One rule, polled two ways: `wait_until` blocks the calling thread between looks (plain tests,
or a condition that a broker's rebalance or another process makes true); `eventually` awaits
between looks, so the event loop it runs on (an `App`'s consumers) keeps going. Both fail with
an `AssertionError` that names what they waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

_POLL = 0.01


def _looks(condition: Callable[[], bool], limit: float, what: str) -> Iterator[None]:
    """Yield between looks at `condition` until it holds; fail once `limit` seconds are up."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what}")
        yield


def wait_until(condition: Callable[[], bool], limit: float = 30.0, what: str = "the condition") -> None:
    """Return as soon as `condition()` holds, sleeping this thread between looks."""
    for _ in _looks(condition, limit, what):
        time.sleep(_POLL)


async def eventually(condition: Callable[[], bool], limit: float = 30.0, what: str = "the condition") -> None:
    """Return as soon as `condition()` holds, yielding to the event loop between looks."""
    for _ in _looks(condition, limit, what):
        await asyncio.sleep(_POLL)
