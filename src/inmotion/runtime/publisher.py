"""Publishing: events built from payloads, batched into as few log appends as possible."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Mapping
from typing import Any

from inmotion.errors import InvalidConfig, TopicExists, UnknownTopic
from inmotion.events import Event
from inmotion.events.codec import to_binary
from inmotion.log import Log, Message, Position, TopicConfig
from inmotion.runtime.metrics import Metrics

_MAX_BATCH = 5000


def build_event(
    payload: Any,
    *,
    topic: str,
    source: str,
    key: str | None,
    type: str | None,
    subject: str | None,
    extensions: Mapping[str, str] | None,
) -> Event:
    """The event to publish: `payload` as data, or `payload` itself when it is an Event."""
    if isinstance(payload, Event):
        event = payload
        changes: dict[str, Any] = {}
        if type is not None:
            changes["type"] = type
        if subject is not None:
            changes["subject"] = subject
        if changes:
            event = event.replace(**changes)
        extra = dict(extensions or {})
        if key is not None:
            extra["partitionkey"] = key
        return event.with_extensions(**extra) if extra else event
    return Event.create(
        type or topic, payload, source=source, key=key, subject=subject, extensions=dict(extensions or {})
    )


def to_message(event: Event, headers: Mapping[str, str] | None) -> Message:
    key, ce_headers, value = to_binary(event)
    if headers:
        for name, text in headers.items():
            if not isinstance(name, str) or not isinstance(text, str):
                raise InvalidConfig("publish headers map header names to text values")
            if name.startswith("ce_") or name.lower() == "content-type":
                raise InvalidConfig(f"header {name!r} is reserved for the CloudEvents binding: set the attribute")
        ce_headers.extend((name, text.encode()) for name, text in headers.items())
    return Message(value=value, key=key, headers=tuple(ce_headers))


class Publisher:
    """Appends messages to the log, creating missing topics with `topic_config` (if given).

    `publish` (async) gathers the messages of every coroutine that publishes while an append
    is running (and for `linger` seconds more) and writes them in one append per topic: many
    small publishes become a few large transactions. `publish_sync` appends at once (the SQLite log still merges
    concurrent appends from threads).
    """

    def __init__(self, log: Log, metrics: Metrics, topic_config: TopicConfig | None, linger: float = 0.0) -> None:
        self.log = log
        self.linger = linger
        self.metrics = metrics
        self.topic_config = topic_config
        self._pending: list[tuple[str, Message, asyncio.Future[Position]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inmotion-publish")
        self._appended: dict[str, asyncio.Event] = {}

    def appended(self, topic: str) -> asyncio.Event:
        """An event set whenever this publisher's async side appended to `topic`; the app's
        consumers wait on it to pick up local publishes without polling."""
        return self._appended.setdefault(topic, asyncio.Event())

    def _announce(self, topic: str) -> None:
        event = self._appended.get(topic)
        if event is not None:
            event.set()

    async def send(self, topic: str, message: Message) -> Position:
        return (await self.send_many(topic, [message]))[0]

    async def send_many(self, topic: str, messages: list[Message]) -> list[Position]:
        """Queue `messages` for the next append; returns their positions once durable."""
        loop = asyncio.get_running_loop()
        futures = []
        for message in messages:
            future: asyncio.Future[Position] = loop.create_future()
            self._pending.append((topic, message, future))
            futures.append(future)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return list(await asyncio.gather(*futures))

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.linger and len(self._pending) < _MAX_BATCH:
                await asyncio.sleep(self.linger)
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            by_topic: dict[str, list[tuple[Message, asyncio.Future[Position]]]] = {}
            for topic, message, future in batch:
                by_topic.setdefault(topic, []).append((message, future))
            for topic, entries in by_topic.items():
                try:
                    positions = await loop.run_in_executor(
                        self._executor, self.append, topic, [message for message, _ in entries]
                    )
                except Exception as exc:
                    for _, future in entries:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._announce(topic)
                for (_, future), position in zip(entries, positions, strict=True):
                    if not future.done():
                        future.set_result(position)

    def append(self, topic: str, messages: list[Message]) -> list[Position]:
        try:
            positions = self.log.append(topic, messages)
        except UnknownTopic:
            if self.topic_config is None:
                raise
            with contextlib.suppress(TopicExists):  # another process created it meanwhile
                self.log.create_topic(topic, self.topic_config)
            positions = self.log.append(topic, messages)
        self.metrics.add("inmotion_published_total", len(messages), topic=topic)
        return positions

    def close(self) -> None:
        self._executor.shutdown(wait=True)
