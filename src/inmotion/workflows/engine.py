"""The workflow engine of an App: definitions, instances started and run, their events, their
owners.

Ownership rides on a consumer group. Every instance has a shard: the partition of the app's
workflow inbox topic (`<app>.workflows.inbox`) that its correlation id keys to. Each process
running the app is a member of the group `<app>.workflows` on that topic, and runs the active
instances of the partitions the group gives it: when a member dies, its partitions and so its
instances move to another member within the session timeout, which replays them from their
histories. Everything for an instance travels on its partition: start, cancel and retry
requests, replies (`ctx.reply`) and events forwarded from the topics its workflow listens to.

Histories are written through one `GroupWriter`: the writes of all instances that are ready
at the same moment go in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import re
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from inmotion.errors import InvalidConfig, InvalidEvent, TopicExists, UnknownTopic
from inmotion.events import Event, from_data
from inmotion.events.codec import to_json
from inmotion.log import TopicPartition
from inmotion.log.partitioner import partition_for_key
from inmotion.runtime import Context, Retry
from inmotion.runtime.filters import FilterSpec
from inmotion.runtime.handler import TRACE_CONTEXT
from inmotion.sourcing.store import encode_json
from inmotion.workflows.errors import ChangedCode, InstanceLost, UnknownWorkflow, WorkflowError, WorkflowFailed
from inmotion.workflows.history import History, fields, payload
from inmotion.workflows.lifecycle import Announcer, causal_extensions
from inmotion.workflows.store import (
    ACTIVE,
    FINISHED,
    Change,
    Entry,
    Instance,
    NewEntry,
    WorkflowRecorder,
    open_workflow_recorder,
)
from inmotion.workflows.workflow import Workflow, return_type, tried
from inmotion.workflows.writer import GroupWriter

if TYPE_CHECKING:
    from inmotion.runtime.app import App

logger = logging.getLogger("inmotion.workflows")

START, CANCEL, RETRY = "inmotion.workflow.start", "inmotion.workflow.cancel", "inmotion.workflow.retry"
"""Types of the requests on the inbox topic; anything else there is an event for an instance."""
ORIGIN = "inmotion-topic"
"""Header of an event forwarded to the inbox: the topic it was published to."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HAND_OVER_LIMIT = 30.0
"""Seconds that the instances of a shard being handed over have to reach their next command."""
_SWEEP_INTERVAL = 5.0
"""Seconds between looks for active instances of owned shards that nothing runs (an instance
whose start request was lost with a crashed caller)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Definition:
    name: str
    function: Callable[..., Any]
    input_type: Any
    listen: tuple[str, ...]


class Outcome(NamedTuple):
    workflow: str
    status: str
    error: str | None
    result: bytes | None


class WorkflowHandle:
    """A started instance: `key` (`<workflow>/<id>`), and `await handle.result()`."""

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self.workflow, _, self.id = key.partition("/")

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - seconds, as wait_for's
        """Wait for the instance to end: its result (as the function's return annotation says),
        or WorkflowFailed with its status and error."""
        return await self.engine.result(self.key, timeout)

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.key!r})"


class Engine:
    """The workflows of one App (`app.workflows`): see the module's doc."""

    def __init__(self, app: App, store: str | None = None) -> None:
        self.app = app
        self.inbox = f"{app.name}.workflows.inbox"
        self.events_topic = f"{app.name}.workflows"
        self.group = f"{app.name}.workflows"
        self.retry = Retry()
        """How steps and undos are tried when they give no `retry` of their own."""
        self.definitions: dict[str, Definition] = {}
        self.running: dict[str, Workflow] = {}
        self.shards: set[int] = set()
        """The inbox partitions this process owns: the shards whose instances it runs."""
        self.writer = GroupWriter(lambda: self.recorder)
        self._store = store
        self._recorder: WorkflowRecorder | None = None
        self._loading: dict[str, asyncio.Future[Workflow | None]] = {}
        self._waiters: dict[str, list[asyncio.Future[Outcome | None]]] = {}
        self.announcer = Announcer(app, self.events_topic)
        self._partitions: int | None = None
        self._listening = False
        app.subscribe(self.inbox, group=self.group, partitions=self, retry=Retry(attempts=10, backoff=0.05))(
            self._on_inbox
        )
        app.on_startup(self._start_up)
        app.on_shutdown(self._shut_down)
        app.task(self._sweep)

    # --- definitions ------------------------------------------------------------------------
    def define(
        self,
        name: str,
        *,
        on: str | Sequence[str] | None = None,
        filter: FilterSpec = None,
        listen: str | Sequence[str] = (),
        id: Callable[[Event], str] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidConfig(f"a workflow name is letters, digits, '.', '_' or '-', got {name!r}")
        if name in self.definitions:
            raise InvalidConfig(f"workflow {name!r} is defined twice in app {self.app.name!r}")
        listened = (listen,) if isinstance(listen, str) else tuple(listen)
        if id is not None and not callable(id):
            raise InvalidConfig(f"id takes a function of the starting event, got {id!r}")
        id_of = id or (lambda event: event.id)

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.definitions[name] = Definition(name, function, _input_type(function, name), listened)
            if on is not None:

                async def start_from(event: Event) -> None:
                    correlation = str(event.extensions.get("correlationid", event.id))
                    trace = {k: str(v) for k in TRACE_CONTEXT if (v := event.extensions.get(k)) is not None}
                    await self.start(
                        name, event.data, id=id_of(event), correlation=correlation, cause=event.id, trace=trace
                    )

                self.app.subscribe(on, group=f"{self.group}.{name}", filter=filter)(start_from)
            return function

        return register

    def check_listened(self, name: str, topic: str) -> None:
        if topic != self.inbox and topic not in self.definitions[name].listen:
            raise InvalidConfig(
                f"workflow {name!r} waits for events on {topic!r} but does not listen to it:"
                f" @app.workflow({name!r}, listen=[{topic!r}])"
            )

    # --- the store ----------------------------------------------------------------------------
    @property
    def recorder(self) -> WorkflowRecorder:
        if self._recorder is None:
            self._recorder = open_workflow_recorder(self._store or store_url(self.app.log.url))
        return self._recorder

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(function, *args, **kwargs)

    # --- starting -----------------------------------------------------------------------------
    async def start(
        self,
        name: str,
        input: Any = None,
        *,
        id: str | None = None,
        correlation: str | None = None,
        cause: str | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> WorkflowHandle:
        """Start an instance of workflow `name` with `input` (once per id: the same id again
        gives the same instance, a different input under it is an error)."""
        if name not in self.definitions:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise UnknownWorkflow(f"no workflow {name!r} in app {self.app.name!r} (defined: {known})")
        id = uuid.uuid4().hex if id is None else id
        if not isinstance(id, str) or not id or any(c.isspace() for c in id):
            raise InvalidConfig(f"a workflow id is non-empty text without whitespace, got {id!r}")
        try:
            encoded = encode_json(input)
        except InvalidEvent as exc:
            raise InvalidConfig(f"the input of workflow {name!r} cannot be recorded: {exc.problem}") from exc
        correlation = correlation or id
        key = f"{name}/{id}"
        now = int(self.app.clock.time() * 1000)
        partitions = self._partitions or await self._call(self._partition_count)
        shard = partition_for_key(correlation.encode(), partitions)
        instance = Instance(key, name, id, correlation, shard, "running", encoded, 1, now, now)
        started = NewEntry(
            "started",
            0,
            "",
            payload(input=msgspec.Raw(encoded), cause=cause, trace=dict(trace or {}), inbox=self.inbox),
        )
        stored = self.recorder.create_now(instance, [started]) or await self._call(
            self.recorder.create, instance, [started]
        )
        if stored is not instance:
            if msgspec.json.decode(stored.input) != msgspec.json.decode(encoded):
                raise WorkflowError(f"workflow {key} was started before with another input: choose another id")
            return WorkflowHandle(self, key)
        entries = [Entry(1, "started", 0, "", started.payload, now)]
        self.announcer.announce(key, entries, causal_extensions(correlation, cause, trace or {}))
        if shard in self.shards:
            await self._launch(key, (instance, entries))
        else:
            await self._request(START, instance)
        return WorkflowHandle(self, key)

    def handle(self, key: str) -> WorkflowHandle:
        """The handle of instance `key` (`<workflow>/<id>`), started here or anywhere."""
        return WorkflowHandle(self, key)

    async def _request(self, kind: str, instance: Instance) -> None:
        await self.app.publish(self.inbox, {"key": instance.key}, type=kind, key=instance.correlation)

    def _partition_count(self) -> int:
        if self._partitions is None:
            try:
                self._partitions = self.app.log.partition_count(self.inbox)
            except UnknownTopic:
                if self.app.topic_config is None:
                    raise
                with contextlib.suppress(TopicExists):  # another process created it meanwhile
                    self.app.log.create_topic(self.inbox, self.app.topic_config)
                self._partitions = self.app.log.partition_count(self.inbox)
        return self._partitions

    async def result(self, key: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait until instance `key` ends: its result, or WorkflowFailed."""

        async def ended() -> Outcome:
            while True:
                if key in self.running:  # running here: its end is told at once
                    waiter: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
                    self._waiters.setdefault(key, []).append(waiter)
                    outcome = await waiter
                    if outcome is not None:
                        return outcome
                found: tuple[Instance, list[Entry]] | None = await self._call(self.recorder.load, key)
                if found is None:
                    raise UnknownWorkflow(f"no workflow instance {key!r}")
                instance = found[0]
                if instance.status in FINISHED:
                    return Outcome(instance.workflow, instance.status, instance.error, instance.result)
                await asyncio.sleep(0.02)  # another process runs it: look again

        outcome = await asyncio.wait_for(ended(), timeout)
        if outcome.status != "completed":
            raise WorkflowFailed(key, outcome.status, outcome.error)
        definition = self.definitions.get(outcome.workflow)
        value = msgspec.json.decode(outcome.result or b"null")
        return value if definition is None else from_data(value, return_type(definition.function))

    # --- running ------------------------------------------------------------------------------
    async def _launch(self, key: str, found: tuple[Instance, list[Entry]] | None = None) -> Workflow | None:
        """Run instance `key` here if it is active, of an owned shard and not running yet; the
        running Workflow, or None. `found`: the instance and its history, when just written."""
        if key in self.running:
            return self.running[key]
        loading = self._loading.get(key)
        if loading is not None:
            return await asyncio.shield(loading)
        loading = self._loading[key] = asyncio.get_running_loop().create_future()
        try:
            workflow = await self._load(key, found)
            loading.set_result(workflow)
            return workflow
        except BaseException as exc:
            loading.set_exception(exc)
            raise
        finally:
            del self._loading[key]

    async def _load(self, key: str, found: tuple[Instance, list[Entry]] | None) -> Workflow | None:
        if found is None:
            found = await self._call(self.recorder.load, key)
        if found is None or found[0].status not in ACTIVE or found[0].shard not in self.shards:
            return None
        instance, entries = found
        if instance.workflow not in self.definitions:
            logger.error(
                "instance %s is of workflow %r, which app %s does not define", key, instance.workflow, self.app.name
            )
            return None
        workflow = self.running[key] = Workflow(self, instance, entries)
        workflow.task = asyncio.create_task(self._run(workflow), name=f"workflow {key}")
        return workflow

    async def _run(self, wf: Workflow) -> None:
        definition = self.definitions[wf.name]
        outcome = None
        try:
            try:
                value = await definition.function(wf, from_data(msgspec.json.decode(wf.input), definition.input_type))
                result = encode_json(value)
            except ChangedCode as exc:  # undos replayed from a history that does not fit could be wrong
                logger.error("%s", exc)
                outcome = await self._end(wf, "failed", str(exc))
            except Exception as exc:
                outcome = await self._compensate(wf, exc)
            else:
                outcome = await self._end(wf, "completed", result=result)
        except InstanceLost:
            logger.info("instance %s is run by another worker now", wf.key)
        finally:
            self.running.pop(wf.key, None)
            for waiter in self._waiters.pop(wf.key, ()):
                if not waiter.done():
                    waiter.set_result(outcome)

    async def _compensate(self, wf: Workflow, error: BaseException) -> Outcome:
        """Undo the completed steps, newest first, each recorded; end compensated, or
        compensation_failed at the first undo that fails for good; failed if nothing to undo."""
        message = f"{type(error).__name__}: {error}"
        if not wf.undos:
            return await self._end(wf, "failed", message)
        if wf.history.compensating is None:
            await wf.record(
                NewEntry("compensating", 0, "", payload(error=message, seq=wf.failed_at)), status="compensating"
            )
        else:
            message = str(fields(wf.history.compensating).get("error"))
        for undo in reversed(wf.undos):
            if undo.number in wf.history.undone:
                continue
            if wf.handing_over:
                raise InstanceLost(wf.key)
            _, failed, attempts = await tried(undo.call, self.retry, self.app.clock)
            if failed is not None:
                failure = f"undo {undo.number} ({undo.name}) failed: {type(failed).__name__}: {failed}"
                await wf.record(NewEntry("undo_failed", undo.number, undo.name, payload(error=failure)))
                return await self._end(wf, "compensation_failed", f"{failure}; the workflow had failed with {message}")
            await wf.record(NewEntry("undone", undo.number, undo.name, payload(attempts=attempts)))
        return await self._end(wf, "compensated", message)

    async def _end(self, wf: Workflow, status: str, error: str | None = None, result: bytes | None = None) -> Outcome:
        details = payload(error=error, seq=wf.failed_at, result=None if result is None else msgspec.Raw(result))
        await wf.record(NewEntry(status, 0, "", details), status=status, error=error, result=result)
        return Outcome(wf.name, status, error, result)

    # --- the inbox and the shards ------------------------------------------------------------
    async def _on_inbox(self, event: Event, ctx: Context) -> None:
        if event.type in (START, CANCEL, RETRY):
            key = str((event.data or {}).get("key")) if isinstance(event.data, dict) else ""
            if event.type == START:
                await self._launch(key)
            elif event.type == CANCEL:
                await self._cancel(key)
            else:
                await self._retry(key)
            return
        correlation = event.extensions.get("correlationid")
        if correlation is None:
            logger.warning("event %s on %s has no correlation id: no workflow instance takes it", event.id, self.inbox)
            return
        topic = ctx.headers.get(ORIGIN, ctx.topic)
        for instance in await self._call(self.recorder.instances, correlation=str(correlation)):
            workflow = self.running.get(instance.key) or await self._launch(instance.key)
            if workflow is not None:
                await workflow.receive(topic, event)
            else:
                await self._call(self._record_late, instance.key, topic, event)

    def _record_late(self, key: str, topic: str, event: Event) -> None:
        """Record an event that arrived for an instance that is not running (it ended): kept
        and shown, not acted on."""
        while (found := self.recorder.load(key)) is not None:
            instance, entries = found
            if event.id in History(entries).received_ids:
                return
            change = Change(
                key,
                instance.version,
                [NewEntry("received", 0, topic, to_json(event))],
                instance.status,
                instance.wake_ms,
                instance.error,
                at_ms=int(self.app.clock.time() * 1000),
            )
            if not self.recorder.write([change]):
                return

    async def _cancel(self, key: str) -> None:
        workflow = self.running.get(key) or await self._launch(key)
        if workflow is None:
            logger.warning("cancel of %s: it is not active (ended, or unknown)", key)
        else:
            await workflow.cancel()

    async def _retry(self, key: str) -> None:
        found = await self._call(self.recorder.load, key)
        if found is None or found[0].status not in ("failed", "compensation_failed"):
            logger.warning("retry of %s: only failed instances can be retried", key)
            return
        instance, entries = found
        status = "compensating" if History(entries).compensating is not None else "running"
        change = Change(key, instance.version, [NewEntry("retried")], status)
        if not await self._call(self.recorder.write, [change]):
            await self._launch(key)

    async def assigned(self, tp: TopicPartition) -> None:
        """The group gave this process shard `tp.partition`: run its active instances."""
        self.shards.add(tp.partition)
        await self._resume(tp.partition)

    async def released(self, tp: TopicPartition, *, lost: bool) -> None:
        """The shard goes to another process: its instances here stop first, each at its next
        command (a running step finishes and is recorded, so that the next owner does not run
        it again), or at once where it waits; those still running after _HAND_OVER_LIMIT
        seconds, or at once when the shard was `lost`, are cancelled (their running steps run
        again on the next owner)."""
        self.shards.discard(tp.partition)
        leaving = [wf for wf in list(self.running.values()) if wf.shard == tp.partition]
        for wf in leaving:
            wf.hand_over()
        tasks = [wf.task for wf in leaving if wf.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=0 if lost else _HAND_OVER_LIMIT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.writer.idle()

    async def _resume(self, shard: int) -> None:
        for instance in await self._call(self.recorder.instances, statuses=ACTIVE, shard=shard, limit=1 << 30):
            if instance.key not in self.running and shard in self.shards:
                await self._launch(instance.key)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)  # a safety net on wall-clock time, not a workflow timer
            for shard in sorted(self.shards):
                stored = await self._call(self.recorder.count, statuses=ACTIVE, shard=shard)
                if stored > sum(1 for wf in self.running.values() if wf.shard == shard):
                    await self._resume(shard)

    # --- start-up --------------------------------------------------------------------------
    async def _start_up(self) -> None:
        await self._call(self._partition_count)
        listened = sorted({topic for d in self.definitions.values() for topic in d.listen})
        if listened and not self._listening:
            self._listening = True
            self.app.subscribe(listened, group=f"{self.group}.listen")(self._forward)

    async def _forward(self, event: Event, ctx: Context) -> None:
        """Pass an event of a listened topic to the inbox, on its correlation id's shard."""
        correlation = event.extensions.get("correlationid")
        if correlation is not None:
            await self.app.publish(self.inbox, event, key=str(correlation), headers={ORIGIN: ctx.topic})

    # --- events out ---------------------------------------------------------------------------
    def instance_event(
        self, wf: Workflow, topic: str, data: Any, event_id: str, type: str | None, key: str | None
    ) -> Event:
        return self.app.build_event(topic, data, key=key, type=type, extensions=wf.extensions).replace(id=event_id)

    async def publish_command(
        self, wf: Workflow, topic: str, command: Any, event_id: str, type: str | None, key: str | None
    ) -> None:
        event = self.instance_event(wf, topic, command, event_id, type, key).with_extensions(replyto=self.inbox)
        await self.app.publish(topic, event)

    async def _shut_down(self) -> None:
        await self.announcer.flush()


def store_url(log_url: str) -> str:
    """Where workflow instances live: `INMOTION_WORKFLOW_STORE`, else the log's own file
    (SQLite) or memory, else ./inmotion.db beside a log that cannot hold them (Kafka)."""
    chosen = os.environ.get("INMOTION_WORKFLOW_STORE")
    if chosen:
        return chosen
    if log_url.startswith(("sqlite:", "memory:")):
        return log_url
    return "sqlite:///./inmotion.db"


def _input_type(function: Callable[..., Any], name: str) -> Any:
    if not inspect.iscoroutinefunction(function):
        raise InvalidConfig(f"workflow {name!r} must be an async function (async def ...(wf, input))")
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError) as exc:
        raise InvalidConfig(f"cannot read the annotations of workflow {name!r}: {exc}") from exc
    parameters = list(inspect.signature(function).parameters)
    if len(parameters) < 2:
        raise InvalidConfig(f"workflow {name!r} takes (wf: Workflow, input): the instance and its input")
    return hints.get(parameters[1], Any)
