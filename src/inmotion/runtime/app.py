"""`App`: the object a service is written with."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from inmotion.clock import Clock, SystemClock
from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.events.envelope import PARTITIONKEY, new_event
from inmotion.log import DEFAULT_SESSION_TIMEOUT, Coordinator, Log, Position, TopicConfig, connect
from inmotion.runtime import deadletter
from inmotion.runtime.consumer import Consumer
from inmotion.runtime.filters import FilterSpec, make_filter
from inmotion.runtime.handler import Handler
from inmotion.runtime.lifecycle import Lifecycle
from inmotion.runtime.metrics import Metrics
from inmotion.runtime.publisher import Publisher, to_message
from inmotion.runtime.retry import Retry
from inmotion.runtime.subscription import OnCorrupt, PartitionWatcher, Subscription
from inmotion.runtime.tracing import Tracing

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("inmotion.runtime")

DEFAULT_DEDUPE_WINDOW = 7 * 24 * 3600.0


class App:
    """A service: it publishes events and runs subscribers in consumer groups.

    `broker` is a URL (`sqlite:///file.db`, `memory://`, `kafka://...`; default
    `$INMOTION_BROKER`, else `./inmotion.db`) or an open `Log`. Topics that do not exist are
    created with `topic_config` when first used (`None`: they must exist).

    `session_timeout`: a member silent this long loses its partitions. `commit_interval`: how
    often finished offsets are committed (and always on shutdown and hand-over). `linger`:
    how long `publish` waits to gather more events into one append (0: append as soon as the
    previous append is done; a few milliseconds trade latency for fewer, larger transactions).
    `clock`: where retries and periodic jobs read the time and sleep (`FakeClock` in tests).

    `@app.on_startup` and `@app.on_shutdown` register hooks (to open and close what handlers
    use), `@app.task` a background coroutine; a periodic job is a task that loops on
    `app.clock.sleep`:

        @app.task
        async def expire_carts() -> None:
            while True:
                await app.clock.sleep(60)
                await app.publish("shop.carts", {"older_than": "1h"}, type="shop.cart.expire")
    """

    def __init__(
        self,
        name: str,
        broker: str | Log | None = None,
        *,
        source: str | None = None,
        topic_config: TopicConfig | None = TopicConfig(partitions=4),
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        commit_interval: float = 0.5,
        linger: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidConfig("an App needs a non-empty name")
        if not 0.1 <= session_timeout <= 3600:
            raise InvalidConfig(f"session_timeout must be between 0.1 and 3600 seconds, got {session_timeout!r}")
        if commit_interval <= 0:
            raise InvalidConfig(f"commit_interval must be positive, got {commit_interval!r}")
        if not 0 <= linger <= 1:
            raise InvalidConfig(f"linger must be between 0 and 1 second, got {linger!r}")
        self.name = name
        self.source = source or name
        self.topic_config = topic_config
        self.session_timeout = session_timeout
        self.commit_interval = commit_interval
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self.subscriptions: list[Subscription] = []
        self._owns_log = not isinstance(broker, Log)
        self.log: Log = broker if isinstance(broker, Log) else connect(broker)
        self.publisher = Publisher(self.log, self.metrics, topic_config, linger)
        self._coordinator: Coordinator | None = None
        self._stopped: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        """Set by a second signal: cancel the async handlers still running instead of waiting."""
        self._running: list[asyncio.Task[None]] = []
        self.tracing = Tracing()
        """OpenTelemetry spans around handlers, when the process has configured a tracer provider
        before making the app."""
        self.lifecycle = Lifecycle()
        """The start-up and shutdown hooks and background tasks (`on_startup`, `on_shutdown`, `task`)."""
        self._workflows: Any = None

    # --- publishing -----------------------------------------------------------------------
    def build_event(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: str | None = None,
        type: str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Event:
        """The event `publish` would send: `payload` as its data (`type` defaults to the topic,
        `source` to the app's), or `payload` itself when it is an Event (`type`, `subject`,
        `key` and `extensions` then change it)."""
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
                extra[PARTITIONKEY] = key
            return event.with_extensions(**extra) if extra else event
        if extensions:
            return Event.create(
                type or topic, payload, source=self.source, key=key, subject=subject, extensions=extensions
            )
        return new_event(type or topic, self.source, payload, subject, key)  # positional: faster

    async def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: str | None = None,
        type: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Event:
        """Publish `payload` (or an `Event`) to `topic`; returns once it is durable.

        Publishes made concurrently are written together in one append.
        """
        event = self.build_event(topic, payload, key=key, type=type, subject=subject, extensions=extensions)
        await self.publisher.send(topic, to_message(event, headers))
        return event

    def publish_sync(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: str | None = None,
        type: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Event:
        """`publish` for scripts and threads without an event loop."""
        event = self.build_event(topic, payload, key=key, type=type, subject=subject, extensions=extensions)
        self.publisher.append(topic, [to_message(event, headers)])
        return event

    async def publish_many(self, topic: str, events: Sequence[Event]) -> list[Position]:
        """Append ready-made events (see `build_event`) in one batch; returns once durable."""
        return await self.publisher.send_many(topic, [to_message(event, None) for event in events])

    def publish_many_sync(self, topic: str, events: Sequence[Event]) -> list[Position]:
        """Append ready-made events in one batch (scripts, loaders, benchmarks)."""
        return self.publisher.append(topic, [to_message(event, None) for event in events])

    # --- subscribing ----------------------------------------------------------------------
    def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        group: str | None = None,
        filter: FilterSpec = None,
        retry: Retry | None = None,
        dead_letter: str | bool = True,
        concurrency: int = 1,
        idempotent: bool = False,
        transaction: bool = False,
        dedupe_window: float = DEFAULT_DEDUPE_WINDOW,
        on_corrupt: OnCorrupt = "stop",
        partitions: PartitionWatcher | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function (async or plain) as a handler of `topics`.

        The function's first parameter receives the event's data decoded into its annotation
        (pydantic model, dataclass, msgspec Struct, dict, ...; `Event` for the whole envelope);
        a parameter annotated `Context` (or named `ctx`/`context`) receives the context.
        Plain functions run in a worker thread.

        - `group`: the consumer group, default `<app name>.<function name>`.
        - `filter`: an event type ("a.b"), a type prefix ("a.*"), anything with
          `matches(event)` (such as `inmotion.patterns.Pattern`) or a function of the event.
        - `retry`: how often and how patiently a failing event is tried again.
        - `dead_letter`: a topic name, True for `<group>.dlq`, or False to retry a failing event
          until it succeeds (its partition waits).
        - `concurrency`: events of different keys handled at once per partition; one key's
          events stay in order, and only the finished prefix of offsets is committed.
        - `idempotent`: skip events whose (source, id) the group already handled within
          `dedupe_window` seconds: copies that a producer published twice, replays, redrives.
          It promises at-least-once plus those skips, not exactly-once effects: an event's
          dedupe record is written in the background after its handler returns (and before
          any offset past it is committed), so a process killed in between handles the event
          again after the restart, repeating its effects. `transaction=True` makes effects
          happen exactly once.
        - `transaction` (SQLite): `ctx.db` is an open transaction on the log's file that commits
          with the group's position (and, with `idempotent`, the dedupe record): exactly-once
          effects without `idempotent`, which adds skipping copies of an event published
          twice. With `concurrency` > 1 an event may finish before an earlier one whose
          position it cannot pass, so its dedupe record commits with it too (kept for
          `dedupe_window`, like an idempotent group's). Transactions of one subscription run
          one at a time, and events published from the handler are appended right after its
          commit.
        - `on_corrupt`: what becomes of stored records that the log cannot decode (a damaged
          file, `CorruptRecord`): "stop" (the default) stops reading their partition there,
          with the error logged and nothing committed past them; "skip" goes past them, logged
          with their offsets; "dead-letter" sends their raw bytes with the error to the
          dead-letter topic. An event that decodes but whose data does not fit the handler's
          type is not corrupt: it is dead-lettered as a failure.
        - `partitions`: told when the group gives this process a partition and before it
          gives one up (`PartitionWatcher`), for state that lives with a partition.
        """
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidConfig(f"retry must be a Retry, got {retry!r}")

        def register(function: F) -> F:
            handler = Handler.inspect(function)
            chosen = group or f"{self.name}.{getattr(function, '__name__', 'handler')}"
            letter: str | None
            if dead_letter is True:
                letter = deadletter.default_topic(chosen)
            elif dead_letter is False:
                letter = None
            else:
                letter = dead_letter
            subscription = Subscription(
                topics=names,
                group=chosen,
                handler=handler,
                filter=make_filter(filter),
                retry=retry or Retry(),
                dead_letter=letter,
                concurrency=concurrency,
                idempotent=idempotent,
                transaction=transaction,
                dedupe_window=dedupe_window,
                on_corrupt=on_corrupt,
                partitions=partitions,
            )
            if any(s.group == chosen for s in self.subscriptions):
                raise InvalidConfig(f"group {chosen!r} already has a subscription in this app: name another group")
            self.subscriptions.append(subscription)
            return function

        return register

    # --- workflows ------------------------------------------------------------------------
    @property
    def workflows(self) -> Any:
        """The app's workflow engine (`inmotion.workflows.Engine`), made on first use. The
        workflows layer sits above the runtime: it is imported by name, as the log's registry
        imports backends, so that the runtime never imports it."""
        if self._workflows is None:
            self._workflows = importlib.import_module("inmotion.workflows.engine").Engine(self)
        return self._workflows

    def workflow(
        self,
        name: str,
        *,
        on: str | Sequence[str] | None = None,
        filter: FilterSpec = None,
        listen: str | Sequence[str] = (),
        id: Callable[[Event], str] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated `async def fn(wf: Workflow, input: T) -> R` as workflow
        `name` (see `inmotion.workflows`). With `on`, every event of those topics that passes
        `filter` starts an instance with the event's data as input, its id `id(event)` (default
        the event's id: a redelivered event starts none); `listen`: topics whose events (by
        correlation id) its `wf.wait_for` and `wf.request` may wait for."""
        register: Callable[[F], F] = self.workflows.define(name, on=on, filter=filter, listen=listen, id=id)
        return register

    async def start_workflow(
        self, name: str, input: Any = None, *, id: str | None = None, correlation: str | None = None
    ) -> Any:
        """Start an instance of workflow `name` (once per `id`: the same id again returns the
        same instance; another input under it is an error); returns its `WorkflowHandle`."""
        return await self.workflows.start(name, input, id=id, correlation=correlation)

    # --- lifecycle ------------------------------------------------------------------------
    def on_startup(self, function: F) -> F:
        """Register a function (async or plain, no argument) to run when the app starts,
        before any subscriber joins its group; hooks run in registration order, and one that
        fails stops the start with its error."""
        self.lifecycle.add_hook(self.lifecycle.startup, function, "a start-up hook")
        return function

    def on_shutdown(self, function: F) -> F:
        """Register a function (async or plain, no argument) to run when the app stops, after
        its consumers left their groups; hooks run in registration order, each one even if
        another failed (`stop` then raises the first error). They do not run when start-up
        failed."""
        self.lifecycle.add_hook(self.lifecycle.shutdown, function, "a shutdown hook")
        return function

    def task(self, function: F) -> F:
        """Run an async function without arguments in the background while the app runs
        (`app.task(fn)` or `@app.task`): started after start-up, cancelled at shutdown. A task
        that raises is logged and ends `run` with its error; one that returns just ends. A
        periodic job loops on `app.clock.sleep(seconds)`, so tests drive it with a `FakeClock`."""
        self.lifecycle.add_task(function)
        return function

    # --- running --------------------------------------------------------------------------
    @property
    def coordinator(self) -> Coordinator:
        if self._coordinator is None:
            self._coordinator = self.log.group_coordinator()
        return self._coordinator

    async def start(self) -> None:
        """Run the start-up hooks, then start every subscription's consumer and the background
        tasks."""
        if self._stopped is not None:
            raise InvalidConfig(f"app {self.name!r} is already running")
        await self.lifecycle.start_up()
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        consumers = [Consumer(self, s, self.coordinator) for s in self.subscriptions]
        self._running = [asyncio.create_task(c.run(self._stopped, self._hurry)) for c in consumers]
        self.lifecycle.start_tasks()

    async def stop(self) -> None:
        """Cancel the background tasks; finish the events being handled, commit, leave the
        groups; then run the shutdown hooks. Raises the first error of a consumer, a task or a
        hook."""
        if self._stopped is None:
            return
        self._stopped.set()
        task_errors = await self.lifecycle.stop_tasks()
        results = await asyncio.gather(*self._running, return_exceptions=True)
        self._stopped = self._hurry = None
        self._running = []
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        errors += task_errors
        errors += await self.lifecycle.shut_down()
        if errors:
            raise errors[0]

    async def run(self, until: asyncio.Event | None = None) -> None:
        """Run the app until `until` is set, SIGTERM or SIGINT arrives, or a subscriber or a
        background task fails.

        A signal that arrives while the app stops (`timeout` sends a second one, impatient
        users press Ctrl-C again) cancels the async handlers still running, whose events stay
        uncommitted to be handled again; the consumers still commit what finished and leave
        their groups, so that other members take the partitions over at once. Plain handlers
        run in threads, which cannot be cancelled: they finish first."""
        stop = until or asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if not (stop.is_set() or (self._stopped is not None and self._stopped.is_set())):
                logger.info("stopping: finishing the events being handled (a second signal cancels them)")
                stop.set()
            elif self._hurry is not None and not self._hurry.is_set():
                logger.warning("signal while stopping: cancelling the handlers still running, then leaving the groups")
                self._hurry.set()

        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
        try:
            await self.start()
            await self._until_stopped(stop)
        finally:
            try:  # the handlers stay until the groups are left: a default handler would kill the process
                await self.stop()
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

    async def _until_stopped(self, stop: asyncio.Event) -> None:
        """Return once `stop` is set, a consumer ends or a background task fails (a task that
        returns is done, nothing more)."""
        waiting = asyncio.ensure_future(stop.wait())
        watched: set[asyncio.Future[Any]] = {waiting, *self._running, *self.lifecycle.running}
        try:
            while True:
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                finished_tasks = [t for t in done if t in self.lifecycle.running]
                if len(finished_tasks) < len(done) or any(t.cancelled() or t.exception() for t in finished_tasks):
                    return
        finally:
            waiting.cancel()

    def run_sync(self) -> None:
        """`run` in a fresh event loop; returns after SIGTERM/SIGINT and a clean shutdown."""
        asyncio.run(self.run())

    # --- inspection -----------------------------------------------------------------------
    def prometheus(self) -> str:
        """The counters (published, consumed, failed, retried, dead-lettered, skipped) and lag
        gauges in the Prometheus text format."""
        return self.metrics.prometheus()

    def close(self) -> None:
        self.publisher.close()
        if self._coordinator is not None:
            self._coordinator.close()
            self._coordinator = None
        if self._owns_log:
            self.log.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
