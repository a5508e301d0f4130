from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import Place

__all__ = ["Eventually", "Place"]

Eventually = Callable[..., Awaitable[None]]


async def _eventually(condition: Callable[[], bool], limit: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Eventually:
    """`await eventually(condition)`: poll the event loop until `condition()` holds."""
    return _eventually
