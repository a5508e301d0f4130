"""Events POSTed to a topic: appended unless an event with the same (source, id) reached the
topic through the gateway within the dedupe window (a client's retry).

The requests that arrive while an append runs are appended together in the next one
(`Coordinator.append_unseen`: on SQLite the check, the append and the dedupe records are one
transaction, so two gateways on one file never both append a copy). Appends follow each other,
so a copy POSTed while its original is being appended finds the original's record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass, field

from inmotion.events import Event
from inmotion.log import Key, Message, Position
from inmotion.runtime import App
from inmotion.runtime.publisher import soon, to_message

LINGER = 0.0005
"""Seconds an append waits for more requests when the append before it ended less than that
ago: a busy gateway appends more requests a transaction (12 instead of 10 at 9,000 POSTs a
second, 7% less CPU a request), an idle one appends at once."""
MAX_BATCH = 5000
"""Events one request may carry, and about as many as one append takes: a request's events are
appended in one append, all or none."""


def dedupe_group(topic: str) -> str:
    """The group whose dedupe records hold the (source, id) of the events POSTed to `topic`."""
    return f"inmotion.gateway.{topic}"


@dataclass
class _Post:
    messages: list[Message]
    keys: list[Key]
    appended: asyncio.Future[list[Position | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ingress:
    def __init__(self, app: App, window: float) -> None:
        self.app = app
        self.window = window
        self._pending: dict[str, list[_Post]] = {}
        self._topics: set[str] = set()
        """Topics this gateway appended to: it prunes their dedupe records."""
        self._appending: asyncio.Task[None] | None = None
        self._appended = float("-inf")
        """When the last append ended (the event loop's clock)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inmotion-gateway-append")

    async def publish(self, topic: str, events: Sequence[Event]) -> list[Position | None]:
        """Append `events` to `topic` in one append; their positions, None for copies of events
        appended before (or earlier in `events`)."""
        post = _Post([to_message(event, None) for event in events], [(event.source, event.id) for event in events])
        self._pending.setdefault(topic, []).append(post)
        self._topics.add(topic)
        if self._appending is None or self._appending.done():
            self._appending = asyncio.create_task(self._append())
        return await post.appended

    async def _append(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if loop.time() - self._appended < LINGER:
                await asyncio.sleep(LINGER)
            topic, posts = self._take()
            messages = [message for post in posts for message in post.messages]
            keys = [key for post in posts for key in post.keys]
            try:
                positions = await self._append_unseen(topic, messages, keys)
            except Exception as exc:
                for post in posts:
                    post.appended.set_exception(exc)
                continue
            finally:
                self._appended = loop.time()
            self.app.metrics.add("inmotion_published_total", sum(p is not None for p in positions), topic=topic)
            start = 0
            for post in posts:
                post.appended.set_result(positions[start : start + len(post.keys)])
                start += len(post.keys)

    def _take(self) -> tuple[str, list[_Post]]:
        """The oldest topic's waiting requests, up to about MAX_BATCH events (at least one request)."""
        topic = next(iter(self._pending))
        waiting = self._pending[topic]
        count = taken = 0
        for post in waiting:
            if taken and count + len(post.keys) > MAX_BATCH:
                break
            count += len(post.keys)
            taken += 1
        posts, rest = waiting[:taken], waiting[taken:]
        if rest:
            self._pending[topic] = rest
        else:
            del self._pending[topic]
        return topic, posts

    async def _append_unseen(self, topic: str, messages: list[Message], keys: list[Key]) -> list[Position | None]:
        """On the event loop when the log can append at once; in the thread otherwise."""
        log, coordinator, group = self.app.log, self.app.coordinator, dedupe_group(topic)
        now = await soon(log, lambda: coordinator.append_unseen_now(log, group, topic, messages, keys))
        if now is not None:
            return now
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, coordinator.append_unseen, log, group, topic, messages, keys)

    async def forget_old(self) -> None:
        """Drop dedupe records older than the window."""
        cutoff = int((self.app.clock.time() - self.window) * 1000)
        loop = asyncio.get_running_loop()
        for topic in list(self._topics):
            await loop.run_in_executor(self._pool, self.app.coordinator.forget_before, dedupe_group(topic), cutoff)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
