"""Events POSTed to a topic: appended through the runtime's publisher (requests that arrive
together share one append), unless an event with the same (source, id) reached the topic
through the gateway within the dedupe window (a client's retry): that one is not appended
again."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence

from inmotion.events import Event
from inmotion.log import Position
from inmotion.runtime import App
from inmotion.runtime.dedupe import Dedupe, Key
from inmotion.runtime.publisher import to_message

MAX_BATCH = 5000
"""Events one request may carry: a request's events are appended in one append, all or none."""


def dedupe_group(topic: str) -> str:
    """The group whose dedupe records hold the (source, id) of the events POSTed to `topic`."""
    return f"inmotion.gateway.{topic}"


class Ingress:
    def __init__(self, app: App, window: float) -> None:
        self.app = app
        self.window = window
        self._dedupes: dict[str, Dedupe] = {}
        self._in_flight: dict[tuple[str, Key], asyncio.Future[None]] = {}
        """Events being appended: a copy that arrives meanwhile waits to learn whether they were."""
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inmotion-gateway-dedupe")

    def _dedupe(self, topic: str) -> Dedupe:
        dedupe = self._dedupes.get(topic)
        if dedupe is None:
            dedupe = self._dedupes[topic] = Dedupe(self.app.log, self.app.coordinator, dedupe_group(topic), self._pool)
        return dedupe

    async def publish(self, topic: str, events: Sequence[Event]) -> list[Position | None]:
        """Append `events` to `topic` in one append; their positions, None for copies of events
        appended before (or earlier in `events`)."""
        keys = [(event.source, event.id) for event in events]
        while busy := [f for key in keys if (f := self._in_flight.get((topic, key))) is not None]:
            await asyncio.wait(busy)
        dedupe = self._dedupe(topic)
        seen = dedupe.seen_among(keys)
        fresh: dict[Key, int] = {}
        for index, key in enumerate(keys):
            if key not in fresh and key not in seen:
                fresh[key] = index
        done = asyncio.get_running_loop().create_future()
        for key in fresh:
            self._in_flight[topic, key] = done
        try:
            messages = [to_message(events[index], None) for index in fresh.values()]
            appended = await self.app.publisher.send_many(topic, messages)
            for key in fresh:
                dedupe.remember(key)
            await dedupe.written()
        finally:
            for key in fresh:
                del self._in_flight[topic, key]
            done.set_result(None)
        positions: list[Position | None] = [None] * len(events)
        for index, position in zip(fresh.values(), appended, strict=True):
            positions[index] = position
        return positions

    async def forget_old(self) -> None:
        """Drop dedupe records older than the window."""
        cutoff = int((self.app.clock.time() - self.window) * 1000)
        loop = asyncio.get_running_loop()
        for topic in list(self._dedupes):
            await loop.run_in_executor(self._pool, self.app.coordinator.forget_before, dedupe_group(topic), cutoff)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
