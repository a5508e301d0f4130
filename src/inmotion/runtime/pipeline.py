"""One record's path through a subscription: decode, filter, dedupe, handle with retries,
dead-letter. `Pipeline.deliver` returns what became of the record (an `Outcome`); the worker
that called it finishes the record unless it was abandoned.

An error of the handler is a value here, not control flow: it is retried after the
subscription's backoff or dead-lettered. Only a fault outside the handler (the log failed, or
an undecodable event has nowhere to go) raises, for the worker to log and try the record again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from inmotion.errors import CorruptRecord, InmotionError, InvalidEvent
from inmotion.events import Event
from inmotion.events.codec import JSON_CONTENT_TYPE, source_and_id
from inmotion.log import Key, Record, TopicPartition, Transaction
from inmotion.runtime import deadletter
from inmotion.runtime.dedupe import Dedupe
from inmotion.runtime.handler import Context
from inmotion.runtime.metrics import Counter
from inmotion.runtime.publisher import to_message
from inmotion.runtime.subscription import Subscription
from inmotion.runtime.tracing import record_fields

if TYPE_CHECKING:
    from inmotion.runtime.app import App

logger = logging.getLogger("inmotion.runtime")
T = TypeVar("T")

_JSON_BYTES = JSON_CONTENT_TYPE.encode()
_JSON_HEADER = ("content-type", _JSON_BYTES)
_NO_KEY: Key = ("", "")


class Outcome:
    """What became of a record: one of the four below, compared by identity (module constants,
    not an Enum: a member's lookup through its class costs ten times a global's, per record)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Outcome({self.name!r})"


HANDLED = Outcome("handled")
"""The handler finished with it."""
SKIPPED = Outcome("skipped")
"""Not for this subscription (filtered out, redriven for another group), handled before, or
corrupt and skipped (`on_corrupt="skip"`)."""
DEAD_LETTERED = Outcome("dead-lettered")
"""It failed every try, or does not decode, or is corrupt, and went to the dead-letter topic."""
ABANDONED = Outcome("abandoned")
"""The worker stopped (revoked, lost, shutting down) before it finished: not finished."""


class Seat(Protocol):
    """What the pipeline needs of the worker that delivers a record: its partition, whether it
    is stopping, and the commit point a transactional handler saves with its effects."""

    tp: TopicPartition
    stopping: asyncio.Event

    def commit_point(self, finishing: int | None = None) -> int: ...


def _untraced(record: Record, group: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


class Pipeline:
    def __init__(
        self,
        app: App,
        subscription: Subscription,
        counter: Callable[[str, str], Counter],
        dedupe: Dedupe | None,
        transaction: Transaction | None,
        member_id: Callable[[], str],
        pool: concurrent.futures.Executor,
    ) -> None:
        self.app = app
        self.subscription = subscription
        self.group = subscription.group
        self.counter = counter
        self.dedupe = dedupe
        self.transaction = transaction
        self._member_id = member_id
        self._pool = pool
        self._transaction_lock = asyncio.Lock()
        handler = subscription.handler
        self.handler = handler
        self._needs_event = subscription.filter is not None or transaction is not None or handler.wants_event
        self._decode_record = handler.decode_record
        # the usual handler: an async function of the payload alone, awaited directly
        self._function = handler.function if handler.is_async and handler.context_argument is None else None
        tracing = app.tracing
        self._span: Callable[[Record, str], contextlib.AbstractContextManager[None]] = (
            tracing.handling if tracing.enabled else _untraced
        )

    async def deliver(self, record: Record, seat: Seat) -> Outcome:
        prepared = self._prepare(record)
        if isinstance(prepared, Outcome):
            return prepared
        if isinstance(prepared, InvalidEvent):
            return await self.dead_letter(record, prepared, 1)
        payload, event, key = prepared
        if self.dedupe is not None:
            seen = await self._seen(key, seat)
            if seen is None:
                return ABANDONED
            if seen:
                self.counter("skipped", record.topic).add()
                return SKIPPED
        attempt = 1
        function = self._function
        while True:  # one try of the handler a turn: HANDLED, or the error it failed with
            try:
                with self._span(record, self.group):
                    if function is not None:  # the usual handler, awaited directly
                        await function(payload)
                        result: Outcome | Exception = HANDLED
                    elif self.transaction is not None:  # may also find the event handled before or the partition gone
                        assert event is not None  # a transactional handler always gets the envelope
                        context = Context(event, record, self.group, attempt, self.app)
                        result = await self._handle_in_transaction(payload, context, key, seat)
                    else:
                        await self.handler.call(
                            payload, None if event is None else Context(event, record, self.group, attempt, self.app)
                        )
                        result = HANDLED
            except Exception as error:
                result = error
            if result is HANDLED:
                if self.dedupe is not None:
                    self.dedupe.remember(key)
                return result
            if isinstance(result, Outcome):
                return result
            if not self._failed(record, result, attempt):
                return await self.dead_letter(record, result, attempt)
            if not await self.backoff(attempt, seat):
                return ABANDONED
            attempt += 1

    async def _seen(self, key: Key, seat: Seat) -> bool | None:
        """Has the group handled this event already? Asks again, after a backoff, while the
        dedupe records cannot be read: handling the event without knowing could repeat its
        effects. None when the worker stops meanwhile."""
        assert self.dedupe is not None
        attempt = 1
        while True:
            try:
                return self.dedupe.seen(key)
            except InmotionError as exc:
                logger.warning("reading dedupe records failed: %s", exc, extra={"group": self.group})
                if not await self.backoff(attempt, seat):
                    return None
                attempt += 1

    def _prepare(self, record: Record) -> tuple[Any, Event | None, Key] | Outcome | InvalidEvent:
        """The record's payload (and envelope, and dedupe key, where needed); SKIPPED for a
        record this subscription does not take; the error of one that does not decode."""
        content_type, elsewhere = self._content_type(record)
        if elsewhere:
            self.counter("skipped", record.topic).add()  # redriven for another group only
            return SKIPPED
        try:
            if not self._needs_event:  # the handler needs only the payload: skip the envelope
                payload = self._decode_record(record, content_type)
                key = source_and_id(record.headers) if self.dedupe is not None else _NO_KEY
                return payload, None, key
            event = record.event()
            if self.subscription.filter is not None and not self.subscription.filter.matches(event):
                self.counter("skipped", record.topic).add()
                return SKIPPED
            return self.handler.decode(event), event, (event.source, event.id)
        except InvalidEvent as exc:
            return exc

    def _content_type(self, record: Record) -> tuple[str | None, bool]:
        """The record's content type, and whether it was redriven for another group only (its
        last header is `deadletter.FOR_GROUP`, naming another group)."""
        headers = record.headers
        if not headers:
            return None, False
        last = headers[-1]
        if last == _JSON_HEADER:  # what inmotion writes: content type last, no redrive mark
            return JSON_CONTENT_TYPE, False
        elsewhere = last[0] == deadletter.FOR_GROUP and (last[1] or b"").decode("utf-8", "replace") != self.group
        content_type = None
        for name, value in headers:  # a Kafka header may have no value (None)
            if (name == "content-type" or name == "Content-Type") and value is not None:
                content_type = JSON_CONTENT_TYPE if value == _JSON_BYTES else value.decode("utf-8", "replace")
        return content_type, elsewhere

    def _failed(self, record: Record, error: Exception, attempt: int) -> bool:
        """Count and log a failed try; whether to try again (else dead-letter)."""
        sub = self.subscription
        self.counter("failed", record.topic).add()
        retry = sub.retry.should_retry(error, attempt) or sub.dead_letter is None
        logger.warning(
            "handler failed (attempt %d%s): %s: %s",
            attempt,
            ", will retry" if retry else "",
            type(error).__name__,
            error,
            extra={
                "group": self.group,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                **record_fields(record),
            },
        )
        if retry:
            self.counter("retried", record.topic).add()
        return retry

    def delay(self, failures: int) -> float:
        """The subscription's backoff after `failures` failures in a row (growing up to its
        last retry's, where failures go on past its attempts)."""
        retry = self.subscription.retry
        return retry.delay(min(failures, retry.attempts))

    async def backoff(self, failures: int, seat: Seat) -> bool:
        """Wait out `delay(failures)` on the app's clock; False if the worker stops first."""
        seconds = self.delay(failures)
        if seat.stopping.is_set():
            return False
        sleeping = asyncio.ensure_future(self.app.clock.sleep(seconds))
        stopping = asyncio.ensure_future(seat.stopping.wait())
        await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        sleeping.cancel()
        stopping.cancel()
        return not seat.stopping.is_set()

    async def dead_letter(self, record: Record, error: BaseException, attempts: int) -> Outcome:
        topic = self.subscription.dead_letter
        if topic is None:  # nowhere to put it (only an undecodable event gets here): the worker
            raise error  # logs it and tries it again after a backoff, holding up its partition
        message = deadletter.dead_letter(record, error, attempts, self.group, self.app.clock.time())
        await self.app.publisher.send(topic, message)
        self.counter("dead_lettered", record.topic).add()
        logger.error(
            "dead-lettered %s/%d@%d to %s after %d attempt(s): %s: %s",
            record.topic,
            record.partition,
            record.offset,
            topic,
            attempts,
            type(error).__name__,
            error,
            extra={"group": self.group, **record_fields(record)},
        )
        return DEAD_LETTERED

    async def pass_corrupt(self, error: CorruptRecord, offset: int) -> Outcome:
        """Skip or dead-letter, as the subscription's `on_corrupt` says, the stored records from
        `offset` to `error.last` that the log cannot decode. Their dead-letter entry carries
        their raw stored bytes as its value and the error in the usual headers."""
        if self.subscription.on_corrupt == "skip":
            self.counter("skipped", error.topic).add(error.last - offset + 1)
            logger.error(
                "skipped %s/%d@%d-%d (on_corrupt='skip'): %s",
                error.topic,
                error.partition,
                offset,
                error.last,
                error,
                extra={"group": self.group},
            )
            return SKIPPED
        record = Record(error.topic, error.partition, offset, 0, None, error.raw, ())
        return await self.dead_letter(record, error, 1)

    async def _handle_in_transaction(self, payload: Any, context: Context, key: Key, seat: Seat) -> Outcome:
        """Run the handler inside one transaction with the events it publishes, the group's
        position and, for an idempotent subscription, the dedupe record (the backend's
        `Transaction`); SKIPPED when an idempotent group had handled the event already."""
        transaction = self.transaction
        assert transaction is not None
        dedupe_key = key if self.subscription.keeps_dedupe_records else None
        deferred: list[tuple[str, Event, Mapping[str, str] | None]] = []
        published: dict[str, int] = {}
        async with self._transaction_lock:
            await begin(transaction, self._pool)
            try:
                if dedupe_key is not None and transaction.seen(dedupe_key):
                    transaction.rollback()
                    self.counter("skipped", seat.tp.topic).add()
                    return SKIPPED
                context.db = transaction.connection
                context.deferred = deferred
                # a partition lost meanwhile cancels this; the rollback below waits for the
                # handler's writes to end (a plain handler's thread runs on whatever is cancelled)
                await to_the_end(self.handler.call(payload, context), cancel=self.handler.is_async)
                # the events the handler published go into the log in the same transaction:
                # stored with its effects and its position, or not at all
                for topic, follow_up, headers in deferred:
                    transaction.append(topic, [to_message(follow_up, headers)], self.app.topic_config)
                    published[topic] = published.get(topic, 0) + 1
                point = seat.commit_point(finishing=context.record.offset)
                if not transaction.commit(dedupe_key, seat.tp, point, self._member_id()):
                    return ABANDONED  # the partition is another member's now
            except BaseException:
                transaction.rollback()
                raise
        for topic, count in published.items():
            self.app.metrics.add("inmotion_published_total", count, topic=topic)
        return HANDLED


async def begin(transaction: Transaction, pool: concurrent.futures.Executor) -> None:
    """Begin `transaction` in a thread of `pool` (it may wait for another process's write lock).
    When the caller is cancelled meanwhile (its partition was lost), the lock may still come
    later: wait for it and give it back, so that no abandoned transaction keeps every process
    on the file from writing."""
    try:
        await to_the_end(asyncio.get_running_loop().run_in_executor(pool, transaction.begin))
    except asyncio.CancelledError:
        transaction.rollback()
        raise


async def to_the_end(work: Awaitable[T], *, cancel: bool = False) -> T:
    """Await `work` until it ends, even when the caller is cancelled meanwhile, then raise the
    cancellation. Work in a thread cannot be stopped: a transaction rolled back while it runs
    would let its later writes land outside the transaction. With `cancel`, the cancellation
    is passed on into `work` (a coroutine stops at its next await), which is still awaited."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():  # `work` itself was cancelled, or ended as the caller was
                raise
            cancelled = True
            if cancel:
                future.cancel()
            continue
        except Exception:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result
