"""`Workflow`: what a workflow function is given to run durable steps, sleeps and waits.

The function runs as ordinary async code. Each command it awaits (`step`, `sleep`, `wait_for`,
`request`, `publish`) has a position (`seq`): the first time, it runs and its outcome is
recorded; when the instance runs again (after a crash, a hand-over or `workflows retry`) the
function is replayed from the start and each recorded command returns its recorded outcome at
once, without running again. The code must therefore take the same path on replay: decide on
recorded results (and `wf.now()`), not on the wall clock or random numbers. A command of
another kind or name than the one recorded at its position is `ChangedCode`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from inmotion.clock import Clock
from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events import Event, from_data
from inmotion.events.codec import to_json
from inmotion.runtime import Retry
from inmotion.sourcing.store import encode_json
from inmotion.workflows.errors import (
    ChangedCode,
    InstanceLost,
    StepFailed,
    WorkflowCancelled,
    WorkflowError,
    WorkflowTimeout,
)
from inmotion.workflows.history import History, fields, payload
from inmotion.workflows.lifecycle import causal_extensions
from inmotion.workflows.store import Change, Entry, Instance, NewEntry

if TYPE_CHECKING:
    from inmotion.workflows.engine import Engine

Match = Callable[[str, Event], bool]
Outcome = Event | Literal["due", "cancelled", "handed over"]

_WHAT = {
    "step": "step",
    "step_failed": "step",
    "sleep": "sleep",
    "slept": "sleep",
    "wait": "wait",
    "waited": "wait",
    "published": "publish",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Undo:
    number: int
    """Its place in the order of registration (1 for the first): how its history entries name it."""
    name: str
    call: Callable[[], Any]


class Workflow:
    """One running instance, as its function sees it: `wf.id`, `wf.correlation`, `wf.now()`,
    and the durable commands. One command at a time (no `asyncio.gather` of steps)."""

    def __init__(self, engine: Engine, instance: Instance, entries: list[Entry]) -> None:
        self.key = instance.key
        self.name = instance.workflow
        self.id = instance.id
        self.correlation = instance.correlation
        self.shard = instance.shard
        self.status = instance.status
        self.version = instance.version
        self.input = instance.input
        self.history = History(entries)
        self.undos: list[Undo] = []
        self.failed_at = 0
        """The position of the command whose failure the workflow raised last."""
        started = fields(entries[0]) if entries else {}
        self.extensions = causal_extensions(self.correlation, started.get("cause"), started.get("trace") or {})
        """What its events carry: correlation id, cause, the trace context of its starting event."""
        self.task: asyncio.Task[None] | None = None
        """What runs it in this process (set by the engine)."""
        self._engine = engine
        self._seq = 0
        self._wake_ms: int | None = instance.wake_ms
        self._at_ms = instance.created_ms
        self._replay_until = max((*self.history.completions, *self.history.opened), default=0)
        """The last position the history recorded: up to it, the function is being replayed."""
        self._busy = False
        self.handing_over = False
        """Set when the worker gives the instance's shard up: it stops at its next command, or
        at once where it waits; a step that is running finishes and is recorded first."""
        self._waiting: tuple[asyncio.Future[Outcome], Match | None] | None = None
        self._writing = asyncio.Lock()

    # --- what the workflow's code calls ----------------------------------------------------
    def now(self) -> datetime:
        """The time on the app's clock; on replay, the time its latest replayed command
        completed, so that code deciding on it takes the same path again."""
        live = self._seq >= self._replay_until
        ms = int(self._engine.app.clock.time() * 1000) if live else self._at_ms
        return datetime.fromtimestamp(ms / 1000, UTC)

    async def step(
        self,
        function: Callable[..., Any],
        /,
        *args: Any,
        compensate: Callable[[Any], Any] | None = None,
        retry: Retry | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run `function(*args, **kwargs)` (async, or plain in a thread) and record its result,
        which must be JSON-encodable (pydantic models, dataclasses, msgspec Structs, JSON
        values); return it as the function's return annotation says, the same on replay.

        Failures are tried again as `retry` says (default `Retry()`); the last one raises
        `StepFailed`. `compensate` is called with the step's result if the workflow fails
        later: undos run newest first, each until it is recorded done (see `compensate`).

        At-least-once: a step that was running when its worker died runs again on the next.
        """
        if not callable(function):
            raise InvalidConfig(f"wf.step takes a function, got {function!r}")
        step = name or str(getattr(function, "__name__", repr(function)))
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidConfig(f"retry must be a Retry, got {retry!r}")
        async with self._command("step", step) as (seq, done):
            if done is None:
                await self._cancel_point(seq)
                done = await self._run_step(seq, step, function, args, kwargs, retry or self._engine.retry)
        if done.kind == "step_failed":
            self.failed_at = seq
            raise StepFailed(step, seq, str(fields(done).get("error")))
        value = from_data(fields(done).get("result"), return_type(function))
        if compensate is not None:
            self.undos.append(Undo(len(self.undos) + 1, step, functools.partial(compensate, value)))
        return value

    def compensate(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Register `function(*args, **kwargs)` as an undo, as a step's `compensate=` does: if
        the workflow fails later, the undos run newest first, each recorded once it is done.
        For what a `request` did: register its undo once the reply says there is one."""
        if not callable(function):
            raise InvalidConfig(f"wf.compensate takes a function, got {function!r}")
        name = str(getattr(function, "__name__", repr(function)))
        self.undos.append(Undo(len(self.undos) + 1, name, functools.partial(function, *args, **kwargs)))

    async def sleep(self, duration: float | timedelta) -> None:
        """Sleep durably: the timer survives restarts (another worker wakes the instance)."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise InvalidConfig(f"wf.sleep takes seconds >= 0 or a timedelta, got {duration!r}")
        async with self._command("sleep", "") as (seq, done):
            if done is None:
                due = await self._open(seq, "sleep", "", seconds)
                await self._settle(seq, await self._suspend(due, None), "slept")

    async def wait_for(
        self,
        topic: str,
        *,
        type: str | None = None,
        match: Callable[[Event], bool] | None = None,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - a durable timer, not asyncio's
    ) -> Event:
        """Wait for an event of the instance's correlation id that arrived on `topic` (one the
        workflow `listen`s to, or the workflows' inbox), of `type` and for which `match(event)`
        is true; events that arrived before the wait count too. `WorkflowTimeout` after
        `timeout` seconds; an event arriving later is still recorded (`workflows describe`)."""
        seconds = _seconds(timeout)
        self._engine.check_listened(self.name, topic)

        def matches(arrived_on: str, event: Event) -> bool:
            return arrived_on == topic and (type is None or event.type == type) and (match is None or match(event))

        async with self._command("wait", topic) as (seq, done):
            if done is None:
                due = await self._open(seq, "wait", topic, seconds, type=type)
                done = await self._settle(seq, await self._suspend(due, matches), "waited")
        return self._awaited(seq, done, f"{type or 'an event'} on {topic}", seconds)

    async def request(
        self,
        topic: str,
        command: Any,
        *,
        reply: Any = None,
        type: str | None = None,
        key: str | None = None,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - a durable timer, not asyncio's
    ) -> Any:
        """Publish `command` to `topic` and wait for its reply: an event caused by it (the
        replying handler answers with `ctx.reply(...)`, or publishes with `ctx.publish` to a
        topic the workflow listens to). Returns the reply's data as `reply` (a type), or the
        reply event. The command's id is the same on every attempt, so an idempotent
        subscriber handles it once however often a restart sends it."""
        seconds = _seconds(timeout)
        async with self._command("wait", topic) as (seq, done):
            command_id = f"{self.key}/{seq}"
            if done is None:
                due = await self._open(seq, "wait", topic, seconds, request=command_id)
                await self._engine.publish_command(self, topic, command, command_id, type, key)
                replied = await self._suspend(due, lambda _, e: e.extensions.get("causationid") == command_id)
                done = await self._settle(seq, replied, "waited")
        event = self._awaited(seq, done, f"a reply to {command_id} (sent to {topic})", seconds)
        return event if reply is None else from_data(event.data, reply)

    async def publish(self, topic: str, data: Any = None, *, type: str | None = None, key: str | None = None) -> Event:
        """Publish an event of the instance (its correlation id stamped), once: its id is the
        same if a restart publishes it again."""
        async with self._command("publish", topic) as (seq, done):
            event = self._engine.instance_event(self, topic, data, f"{self.key}/{seq}", type, key)
            if done is None:
                await self._cancel_point(seq)
                await self._engine.app.publish(topic, event)
                await self.record(NewEntry("published", seq, topic, payload(event=event.id, at=self._clock_ms())))
        return event

    # --- commands ---------------------------------------------------------------------------
    def _command(self, what: str, name: str) -> _Command:
        return _Command(self, what, name)

    def next_command(self, what: str, name: str) -> tuple[int, Entry | None]:
        """The next position, and its recorded completion if any; ChangedCode when the history
        recorded something else there, or ended before it while compensating."""
        if self.handing_over:
            raise InstanceLost(self.key)
        if self._busy:
            raise WorkflowError(f"workflow {self.key}: await each step, sleep or wait before the next one")
        self._seq += 1
        seq = self._seq
        recorded = self.history.completions.get(seq) or self.history.opened.get(seq)
        if recorded is not None and recorded.kind != "cancelled":
            if (_WHAT[recorded.kind], recorded.name) != (what, name):
                raise ChangedCode(
                    f"workflow {self.key} no longer matches its history: at position {seq} it recorded "
                    f"{_describe(_WHAT[recorded.kind], recorded.name)}, the code now runs {_describe(what, name)}"
                )
        elif recorded is None and self.history.compensating is not None:
            raise ChangedCode(
                f"workflow {self.key} no longer matches its history: it failed and is compensating, "
                f"but the code now runs {_describe(what, name)} at position {seq}"
            )
        done = self.history.completions.get(seq)
        if done is not None:
            self._at_ms = int(fields(done).get("at") or self._at_ms)
            if done.kind == "cancelled":
                self.failed_at = seq
                raise WorkflowCancelled(f"workflow {self.key} was cancelled")
        return seq, done

    async def _cancel_point(self, seq: int) -> None:
        if self.history.cancel_requested:
            await self.record(NewEntry("cancelled", seq, "", payload(at=self._clock_ms())), status="running")
            self.failed_at = seq
            raise WorkflowCancelled(f"workflow {self.key} was cancelled")

    async def _run_step(
        self,
        seq: int,
        step: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry,
    ) -> Entry:
        clock = self._engine.app.clock
        started = clock.time()

        async def run() -> bytes:
            return _encode_result(
                await call(function, *args, **kwargs), f"step {step!r} (position {seq}) of {self.key}"
            )

        # a result that cannot be recorded is not worth another try
        encoded, error, attempts = await tried(run, retry, clock, give_up_on=(WorkflowError,))
        at = self._clock_ms()
        if error is not None:
            failure = str(error) if isinstance(error, WorkflowError) else f"{type(error).__name__}: {error}"
            entry = NewEntry("step_failed", seq, step, payload(error=failure, attempts=attempts, at=at))
        else:
            took = round((clock.time() - started) * 1000, 3)
            result = msgspec.Raw(encoded)
            entry = NewEntry("step", seq, step, payload(result=result, attempts=attempts, ms=took, at=at))
        return await self.record(entry, status="running")

    async def _open(self, seq: int, kind: str, name: str, seconds: float | None, **more: Any) -> int | None:
        """Record the start of a sleep or wait (once): its due time, or None without a timeout."""
        opened = self.history.opened.get(seq)
        if opened is not None:
            due = fields(opened).get("due")
            return None if due is None else int(due)
        await self._cancel_point(seq)
        due = None if seconds is None else self._clock_ms() + int(seconds * 1000)
        await self.record(
            NewEntry(kind, seq, name, payload(due=due, **more)),
            status="sleeping" if kind == "sleep" else "waiting",
            wake_ms=due,
        )
        return due

    async def _suspend(self, due_ms: int | None, match: Match | None) -> Outcome:
        """Wait for an event that `match`es (one received before counts), the due time or a
        cancellation, whichever comes first."""
        if match is not None:
            for topic, event in self.history.received:
                if event.id not in self.history.taken and match(topic, event):
                    return event
        if self.history.cancel_requested:
            return "cancelled"
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting = (future, match)
        clock = self._engine.app.clock
        timer = None if due_ms is None else asyncio.ensure_future(_until(clock, due_ms))
        try:
            await asyncio.wait([f for f in (future, timer) if f is not None], return_when=asyncio.FIRST_COMPLETED)
            return future.result() if future.done() else "due"
        finally:
            self._waiting = None
            if timer is not None:
                timer.cancel()

    async def _settle(self, seq: int, outcome: Outcome, kind: str) -> Entry:
        """Record how a sleep or wait ended."""
        if outcome == "handed over":
            raise InstanceLost(self.key)
        at = self._clock_ms()
        if outcome == "cancelled":
            await self.record(NewEntry("cancelled", seq, "", payload(at=at)), status="running")
            self.failed_at = seq
            raise WorkflowCancelled(f"workflow {self.key} was cancelled")
        if isinstance(outcome, Event):
            return await self.record(NewEntry(kind, seq, "", payload(event=outcome.id, at=at)), status="running")
        entry = payload(at=at) if kind == "slept" else payload(timeout=True, at=at)
        return await self.record(NewEntry(kind, seq, "", entry), status="running")

    def _awaited(self, seq: int, done: Entry, what: str, seconds: float | None) -> Event:
        taken = fields(done).get("event")
        event = None if taken is None else self.history.event(str(taken))
        if event is None:
            self.failed_at = seq
            raise WorkflowTimeout(f"workflow {self.key} waited {seconds:g}s for {what}")
        return event

    # --- what the engine calls -------------------------------------------------------------
    async def record(
        self,
        *entries: NewEntry,
        status: str | None = None,
        wake_ms: int | None = None,
        error: str | None = None,
        result: bytes | None = None,
    ) -> Entry:
        """Append entries to the history (one write with other instances'); the last one as
        stored. InstanceLost if another worker wrote first."""
        async with self._writing:
            if status is None:  # an event received while waiting keeps the wait's status and due time
                status, wake_ms = self.status, self._wake_ms
            wake = wake_ms if status in ("sleeping", "waiting") else None
            change = Change(self.key, self.version, entries, status, wake, error, result, self._clock_ms())
            recorded_ms = await self._engine.writer.write(change)
            stored = [
                Entry(self.version + i, e.kind, e.seq, e.name, e.payload, recorded_ms) for i, e in enumerate(entries, 1)
            ]
            self.version += len(entries)
            self.status, self._wake_ms = status, wake
            for entry in stored:
                self.history.add(entry)
        self._engine.announcer.announce(self.key, stored, self.extensions)
        return stored[-1]

    async def receive(self, topic: str, event: Event) -> None:
        """Record an event for the instance (once), and hand it to the wait it matches."""
        if event.id in self.history.received_ids:
            return
        await self.record(NewEntry("received", 0, topic, to_json(event)))
        if self._waiting is not None:
            future, match = self._waiting
            if match is not None and match(topic, event) and not future.done():
                future.set_result(event)

    def hand_over(self) -> None:
        """Stop at the next command, or now if waiting (see `handing_over`)."""
        self.handing_over = True
        if self._waiting is not None and not self._waiting[0].done():
            self._waiting[0].set_result("handed over")

    async def cancel(self) -> None:
        """Ask the instance to stop: its next command (or the wait it is in) raises
        WorkflowCancelled."""
        if self.history.cancel_requested:
            return
        await self.record(NewEntry("cancel_requested"))
        if self._waiting is not None and not self._waiting[0].done():
            self._waiting[0].set_result("cancelled")

    def _clock_ms(self) -> int:
        return int(self._engine.app.clock.time() * 1000)


class _Command:
    """`async with wf._command(what, name) as (seq, done)`: one command at a time."""

    def __init__(self, workflow: Workflow, what: str, name: str) -> None:
        self.workflow = workflow
        self.what = what
        self.name = name

    async def __aenter__(self) -> tuple[int, Entry | None]:
        found = self.workflow.next_command(self.what, self.name)
        self.workflow._busy = True
        return found

    async def __aexit__(self, *exc_info: object) -> None:
        self.workflow._busy = False


async def _until(clock: Clock, due_ms: int) -> None:
    # the time left is read when the timer's task starts, which a busy loop may delay; none left:
    # no sleep at all (a fake clock wakes a sleep of 0 only at its next advance)
    left = due_ms / 1000 - clock.time()
    if left > 0:
        await clock.sleep(left)


def _describe(what: str, name: str) -> str:
    return what if not name else f"{what} {name!r}"


def _seconds(timeout: float | timedelta | None) -> float | None:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InvalidConfig(f"a timeout is seconds >= 0 or a timedelta, got {timeout!r}")
    return float(seconds)


async def tried(
    function: Callable[[], Any], retry: Retry, clock: Clock, *, give_up_on: tuple[type[Exception], ...] = ()
) -> tuple[Any, Exception | None, int]:
    """`function()` tried as `retry` says, waiting on `clock` between tries: (its result, None,
    tries) or, once it gave up, (None, the last error, tries)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(function), None, attempt
        except Exception as exc:
            if isinstance(exc, give_up_on) or not retry.should_retry(exc, attempt):
                return None, exc, attempt
            await clock.sleep(retry.delay(attempt))


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`: awaited if async, in a thread if plain."""
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    result = await asyncio.to_thread(function, *args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _encode_result(result: Any, what: str) -> bytes:
    try:
        return encode_json(result)
    except InvalidEvent as exc:
        raise WorkflowError(f"{what} returned what cannot be recorded: {exc.problem}") from exc


@functools.lru_cache(maxsize=1024)
def return_type(function: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):
        return Any
    kind = hints.get("return", Any)
    return Any if kind is type(None) else kind
