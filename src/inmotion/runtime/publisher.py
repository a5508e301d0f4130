"""Publishing: events built from payloads, batched into as few log appends as possible."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Mapping
from typing import TypeVar

from inmotion.errors import InvalidConfig, TopicExists, UnknownTopic
from inmotion.events import Event
from inmotion.events.codec import to_binary
from inmotion.log import Log, Message, Position, Record, TopicConfig
from inmotion.runtime.metrics import Metrics

_MAX_BATCH = 5000
_INLINE_RETRIES = (0, 0.0005, 0.001, 0.002, 0.004, 0.008)
"""Pauses between tries of an append or commit on the event loop while the write lock is busy
(about 15 ms in all, then a thread waits for it)."""

T = TypeVar("T")
Listener = Callable[[list[Record] | None], None]


def to_message(event: Event, headers: Mapping[str, str] | None) -> Message:
    key, ce_headers, value = to_binary(event)
    if headers:
        for name, text in headers.items():
            if not isinstance(name, str) or not isinstance(text, str):
                raise InvalidConfig("publish headers map header names to text values")
            if name.startswith("ce_") or name.lower() == "content-type":
                raise InvalidConfig(f"header {name!r} is reserved for the CloudEvents binding: set the attribute")
        ce_headers.extend((name, text.encode()) for name, text in headers.items())
    return Message(value, key, tuple(ce_headers))


class _UseThread(Exception):
    """An attempt in `soon` that should not be repeated on the event loop."""


async def soon(log: Log, attempt: Callable[[], T | None]) -> T | None:
    """`attempt()` (a `Log.append_now` or `commit_now`) on the event loop, tried again for a few
    milliseconds while another writer holds the lock: asleep, the loop lets a writer thread of
    this process finish at once. What it returned once it was done (None and False mean "not
    now"); None when the log cannot, or the lock stayed busy: do it in a thread then."""
    if not log.appends_now:
        return None
    for pause in _INLINE_RETRIES:
        if pause:
            await asyncio.sleep(pause)
        try:
            done = attempt()
        except _UseThread:
            return None
        if done:
            return done
    return None


class Publisher:
    """Appends messages to the log, creating missing topics with `topic_config` (if given).

    `publish` (async) gathers the messages of every coroutine that publishes while an append
    is running (and for `linger` seconds more) and writes them in one append per topic: many
    small publishes become a few large transactions. Where the log can append at once
    (`Log.append_now`: SQLite without fsync) the append runs on the event loop, else on a
    thread. `publish_sync` appends at once (the SQLite log still merges concurrent appends
    from threads).
    """

    def __init__(self, log: Log, metrics: Metrics, topic_config: TopicConfig | None, linger: float = 0.0) -> None:
        self.log = log
        self.linger = linger
        self.metrics = metrics
        self.topic_config = topic_config
        self._pending: list[tuple[str, list[Message], asyncio.Future[list[Position]]]] = []
        self._pending_count = 0
        self._flushing: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inmotion-publish")
        self._listeners: dict[str, list[Listener]] = {}

    def listen(self, topic: str, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the event loop after each append of the async side to `topic`,
        with the appended records (None when the log cannot tell them without a read); the
        app's consumers take local publishes this way, without polling or reading them back.
        Returns the function that stops the calls."""
        listeners = self._listeners.setdefault(topic, [])
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    def _announce(self, topic: str, records: list[Record] | None) -> None:
        for listener in self._listeners.get(topic, ()):
            listener(records)

    async def send(self, topic: str, message: Message) -> Position:
        return (await self.send_many(topic, [message]))[0]

    async def send_many(self, topic: str, messages: list[Message]) -> list[Position]:
        """Queue `messages` for the next append; returns their positions once durable."""
        if len(messages) > _MAX_BATCH:
            chunks = [messages[i : i + _MAX_BATCH] for i in range(0, len(messages), _MAX_BATCH)]
            return [
                p
                for positions in await asyncio.gather(*map(self._queue, [topic] * len(chunks), chunks))
                for p in positions
            ]
        return await self._queue(topic, messages)

    def _queue(self, topic: str, messages: list[Message]) -> asyncio.Future[list[Position]]:
        """One future for the whole batch: a future per message costs more than its append."""
        future: asyncio.Future[list[Position]] = asyncio.get_running_loop().create_future()
        if messages:
            self._pending.append((topic, messages, future))
            self._pending_count += len(messages)
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.create_task(self._flush())
        else:
            future.set_result([])
        return future

    def _take_batch(self) -> list[tuple[str, list[Message], asyncio.Future[list[Position]]]]:
        """The oldest queued sends, up to _MAX_BATCH messages (at least one send)."""
        count = 0
        taken = 0
        for _, messages, _ in self._pending:
            if taken and count + len(messages) > _MAX_BATCH:
                break
            count += len(messages)
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_count -= count
        return batch

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.linger and self._pending_count < _MAX_BATCH:
                await asyncio.sleep(self.linger)
            by_topic: dict[str, list[tuple[list[Message], asyncio.Future[list[Position]]]]] = {}
            for topic, messages, future in self._take_batch():
                by_topic.setdefault(topic, []).append((messages, future))
            for topic, sends in by_topic.items():
                batch = sends[0][0] if len(sends) == 1 else [m for messages, _ in sends for m in messages]
                try:
                    now = await self._append_soon(topic, batch)
                    if now is not None:
                        positions, records = now
                        self.metrics.add("inmotion_published_total", len(batch), topic=topic)
                    elif self._listeners.get(topic):
                        positions, records = await loop.run_in_executor(
                            self._executor, self._append_records, topic, batch
                        )
                    else:  # nobody in this process consumes the topic: no records to build
                        positions = await loop.run_in_executor(self._executor, self.append, topic, batch)
                        records = None
                except Exception as exc:
                    for _, future in sends:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._announce(topic, records)
                start = 0
                for messages, future in sends:
                    if not future.done():
                        future.set_result(positions[start : start + len(messages)])
                    start += len(messages)

    async def _append_soon(
        self, topic: str, messages: list[Message]
    ) -> tuple[list[Position], list[Record] | None] | None:
        """Append on the event loop when the log can (`Log.append_now`); None: append in the
        thread instead (the topic is missing, or the lock stayed busy)."""

        records = bool(self._listeners.get(topic))  # built only for this app's consumers

        def attempt() -> tuple[list[Position], list[Record] | None] | None:
            try:
                return self.log.append_now(topic, messages, records=records)
            except UnknownTopic:
                raise _UseThread from None  # the thread's append creates it

        return await soon(self.log, attempt)

    def append(self, topic: str, messages: list[Message]) -> list[Position]:
        return self._append_with(self.log.append, topic, messages)

    def _append_records(self, topic: str, messages: list[Message]) -> tuple[list[Position], list[Record] | None]:
        return self._append_with(self.log.append_records, topic, messages)

    def _append_with(self, append: Callable[[str, list[Message]], T], topic: str, messages: list[Message]) -> T:
        try:
            result = append(topic, messages)
        except UnknownTopic:
            if self.topic_config is None:
                raise
            with contextlib.suppress(TopicExists):  # another process created it meanwhile
                self.log.create_topic(topic, self.topic_config)
            result = append(topic, messages)
        self.metrics.add("inmotion_published_total", len(messages), topic=topic)
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=True)
