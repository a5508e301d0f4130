from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from inmotion.errors import InmotionError
from inmotion.log import connect

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


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a test runs: a backend's URL and the topic and group names to use there."""

    backend: str
    url: str
    topic: str
    group: str


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """The same test on a SQLite file and on the real Kafka broker (fresh topic and group names
    there, the topic deleted afterwards)."""
    if request.param == "sqlite":
        yield Place("sqlite", f"sqlite:///{tmp_path / 'log.db'}", "orders", "billing")
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    suffix = uuid.uuid4().hex[:8]
    place = Place("kafka", f"kafka://{bootstrap}?timeout=15", f"orders-{suffix}", f"billing-{suffix}")
    yield place
    with connect(place.url) as log:
        for topic in log.list_topics():
            if suffix in topic:
                with contextlib.suppress(InmotionError):
                    log.delete_topic(topic)
