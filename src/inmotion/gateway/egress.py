"""A topic's events streamed to an HTTP client (Server-Sent Events), alone or as a member of a
consumer group that the gateway joins for it.

Each event goes out with an SSE `id` that is the stream's cursor: the next offset of every
partition it has sent from (`0:17,2:5`). A client that reconnects with that id as
`Last-Event-ID` (browsers' EventSource do it by themselves) resumes right after the last event
it saw, and, in a group, acknowledges everything up to it: the group's offsets are committed
then (or by `POST .../ack` with the id while connected), never for events merely sent. So
nothing a client has not acknowledged is lost to its group when it or the gateway dies: the
group's next member gets it again."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec

from inmotion.errors import InmotionError, InvalidConfig, InvalidEvent
from inmotion.events import to_dict
from inmotion.log import Log, Membership, Record, TopicPartition
from inmotion.log.groups import Coordinator
from inmotion.patterns import Pattern

logger = logging.getLogger("inmotion.gateway")

T = TypeVar("T")
Cursor = dict[int, int]
_KEEPALIVE = 15.0
"""Seconds between comments on an idle stream, so that proxies keep the connection open."""
_BATCH = 500
_encoder = msgspec.json.Encoder()


def parse_cursor(text: str | None) -> Cursor:
    """A stream's cursor from its text (`0:17,2:5`: partition and next offset); empty for none."""
    if not text:
        return {}
    cursor = {}
    for part in text.split(","):
        partition, _, offset = part.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise InvalidConfig(f"invalid Last-Event-ID {text!r}: expected partition:offset pairs such as 0:17,2:5")
        cursor[int(partition)] = int(offset)
    return cursor


def format_cursor(cursor: Cursor) -> str:
    return ",".join(f"{partition}:{offset}" for partition, offset in sorted(cursor.items()))


def document(record: Record) -> tuple[str, dict[str, Any]]:
    """A record's event type and its CloudEvent in JSON (structured mode), with the record's
    topic, partition and offset beside it."""
    try:
        event = record.event()
        found: dict[str, Any] = to_dict(event)
        kind = event.type
    except InvalidEvent as exc:  # another producer's record: shown, not hidden
        found, kind = {"error": str(exc)}, "inmotion.undecodable"
    found.update(topic=record.topic, partition=record.partition, offset=record.offset)
    return kind, found


class Stream:
    """One client's stream of `topic`: in `group` (partitions it is given, from the group's
    committed offsets), or without one (every partition, from `start`: 'earliest' or
    'latest'), after `cursor` (the client's Last-Event-ID) either way."""

    def __init__(
        self,
        log: Log,
        coordinator: Coordinator,
        topic: str,
        *,
        group: str | None,
        cursor: Cursor,
        start: str,
        session_timeout: float,
        pattern: Pattern | None = None,
    ) -> None:
        if start not in ("earliest", "latest"):
            raise InvalidConfig(f"from must be 'earliest' or 'latest', got {start!r}")
        self.log = log
        self.coordinator = coordinator
        self.topic = topic
        self.group = group
        self.cursor = dict(cursor)
        self.start = start
        self.session_timeout = session_timeout
        self.pattern = pattern
        """Only events it matches are sent (the cursor moves past the others all the same)."""
        self.positions: dict[int, int] = {}
        """Owned partitions and the next offset to send from each."""
        self._membership: Membership | None = None
        self._waiting: asyncio.Future[bool] | None = None
        """A wait for other processes' appends (`Log.wait`, on a thread), kept across rounds."""
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix=f"inmotion-sse:{topic}")

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    async def open(self) -> None:
        """Check the topic, acknowledge the client's cursor and join the group: errors here are
        the request's (404, 400), before the response starts."""
        count = await self._call(self.log.partition_count, self.topic)
        for partition in self.cursor:
            if not 0 <= partition < count:
                raise InvalidConfig(f"Last-Event-ID names partition {partition}, topic {self.topic!r} has {count}")
        if self.group is None:
            for partition in range(count):
                self.positions[partition] = self.cursor.get(partition, await self._first(partition))
            return
        await self.acknowledge(self.cursor)
        group = self.group
        self._membership = await self._call(
            lambda: self.coordinator.join(group, {self.topic: count}, session_timeout=self.session_timeout)
        )

    async def acknowledge(self, cursor: Cursor) -> None:
        """The client has seen everything before `cursor`: commit it as the group's offsets."""
        group = self.group
        if group is not None and cursor:
            await self._call(lambda: self.log.commit(group, self.topic, cursor, forward_only=True))

    async def _first(self, partition: int) -> int:
        if self.start == "latest":
            return await self._call(self.log.latest_offset, self.topic, partition)
        return await self._call(self.log.earliest_offset, self.topic, partition)

    async def records(self) -> AsyncIterator[tuple[Record, str] | None]:
        """Each record to send with the cursor just past it, or None after `_KEEPALIVE` seconds
        without any (a keep-alive), until the caller stops iterating or the group fails."""
        loop = asyncio.get_running_loop()
        beat = self._membership.heartbeat_interval if self._membership is not None else _KEEPALIVE
        next_beat = 0.0
        quiet_since = loop.time()
        while True:
            if self._membership is not None and loop.time() >= next_beat:
                await self._heartbeat()
                next_beat = loop.time() + beat
            sent = False
            for partition in sorted(self.positions):
                records = self.log.read_now(self.topic, partition, self.positions[partition], _BATCH)
                if records is None:
                    records = await self._call(self.log.read, self.topic, partition, self.positions[partition], _BATCH)
                for record in records:
                    self.positions[partition] = self.cursor[partition] = record.offset + 1
                    if self.pattern is None or self._matches(record):
                        yield record, format_cursor(self.cursor)
                        sent = True
            if sent:
                quiet_since = loop.time()
                continue
            if loop.time() - quiet_since >= _KEEPALIVE:
                quiet_since = loop.time()
                yield None
            await self._wait(min(beat, _KEEPALIVE))

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream as Server-Sent Events."""
        yield b"retry: 1000\n\n"
        async for item in self.records():
            if item is None:
                yield b": keep-alive\n\n"
                continue
            record, cursor = item
            kind, data = document(record)
            yield f"id: {cursor}\nevent: {kind}\ndata: {_encoder.encode(data).decode()}\n\n".encode()

    async def _wait(self, seconds: float) -> None:
        """Until the topic has records past the positions, or `seconds` pass."""
        if not self.positions:
            await asyncio.sleep(min(seconds, 0.2))  # no partition yet: the next heartbeat may give one
            return
        if self._waiting is None or self._waiting.done():
            loop = asyncio.get_running_loop()
            self._waiting = loop.run_in_executor(self._pool, self.log.wait, self.topic, dict(self.positions), seconds)
        # a wait outlives a round that ends without it (a heartbeat due): one thread, not one a round
        await asyncio.wait({self._waiting}, timeout=seconds)

    def _matches(self, record: Record) -> bool:
        assert self.pattern is not None
        try:
            return self.pattern.matches(record.event())
        except InvalidEvent:
            return False

    async def _heartbeat(self) -> None:
        assert self._membership is not None
        assert self.group is not None
        assignment = await self._call(self._membership.heartbeat)
        owned = {tp.partition for tp in assignment.owned if tp.topic == self.topic}
        for partition in list(self.positions):
            if partition not in owned or TopicPartition(self.topic, partition) in assignment.revoke:
                del self.positions[partition]
        released = [tp for tp in assignment.revoke if tp.topic == self.topic]
        if released:  # acknowledged offsets are committed as they come: nothing to commit first
            await self._call(self._membership.release, released)
        new = owned - self.positions.keys() - {tp.partition for tp in released}
        if new:
            committed = await self._call(self.log.committed, self.group, self.topic)
            for partition in sorted(new):
                start = committed.get(partition)
                if start is None:
                    start = await self._first(partition)
                self.positions[partition] = max(start, self.cursor.get(partition, 0))

    async def close(self) -> None:
        if self._membership is not None:
            with contextlib.suppress(InmotionError):
                await self._call(self._membership.leave)
        self._pool.shutdown(wait=False, cancel_futures=True)
