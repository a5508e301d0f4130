"""The outbox: the store's events, published to a log topic, in order, at least once.

The event store is its own outbox: an append writes its events, with their gap-free global
positions, in the one transaction that changes the aggregate, so "recorded for publishing" and
"happened" can never disagree. The relay keeps a cursor (the last published position) in the
store and publishes everything after it, oldest first, keyed by stream id, so every event of a
stream lands in one partition in version order. It saves the cursor only after the log has
accepted a batch: a crash in between publishes that batch again on restart, never skips it.
Consumers dedupe by the CloudEvent id (a projection on a `TopicSource` does so by stream version).

A stored event's type is its class name (`Deposited`); on a topic that other services read,
`type_prefix="bank."` publishes it as `bank.Deposited`, so that routing rules and type filters
can tell one domain's events from another's (a `TopicSource` with the same prefix takes it off
again for projections).
"""

from __future__ import annotations

import contextlib
import threading

from inmotion.errors import InvalidConfig, TopicExists
from inmotion.log import Log, TopicConfig, connect
from inmotion.sourcing.store import EVENT_SOURCE, EventStore, check_type_prefix


class OutboxRelay:
    """Publishes `store`'s events to `topic` on `log` (a `Log` or a broker URL)."""

    def __init__(
        self,
        store: EventStore,
        log: Log | str,
        topic: str,
        *,
        name: str | None = None,
        source: str = EVENT_SOURCE,
        batch_size: int = 500,
        topic_config: TopicConfig = TopicConfig(),
        type_prefix: str = "",
    ) -> None:
        if batch_size < 1:
            raise InvalidConfig(f"batch_size must be positive, got {batch_size}")
        check_type_prefix(type_prefix)
        self.store = store
        self._owns_log = isinstance(log, str)
        self.log = connect(log) if isinstance(log, str) else log
        self.topic = topic
        self.cursor_name = name or f"outbox:{topic}"
        self.source = source
        self.batch_size = batch_size
        self.type_prefix = type_prefix
        if topic not in self.log.list_topics():
            with contextlib.suppress(TopicExists):  # another relay or process created it first
                self.log.create_topic(topic, topic_config)

    def relay_once(self) -> int:
        """Publish every event appended so far that was not published yet; how many."""
        published = 0
        while True:
            cursor = self.store.recorder.cursor(self.cursor_name)
            events = self.store.read_all(cursor + 1, self.batch_size)
            if not events:
                return published
            self.log.append_events(self.topic, [event.to_cloudevent(self.source, self.type_prefix) for event in events])
            self.store.recorder.save_cursor(self.cursor_name, events[-1].position)
            published += len(events)

    def run(self, stop: threading.Event, *, poll: float = 0.1) -> None:
        """Publish, then follow new appends until `stop` is set (checked every `poll` seconds)."""
        while not stop.is_set():
            if self.relay_once() == 0:
                self.store.wait(self.store.recorder.cursor(self.cursor_name), poll)

    def pending(self) -> int:
        """How many appended events wait to be published."""
        return self.store.last_position() - self.store.recorder.cursor(self.cursor_name)

    def close(self) -> None:
        """Close the log if the relay opened it from a URL."""
        if self._owns_log:
            self.log.close()
