"""The gateway's HTTP API: CloudEvents in (`POST /topics/{topic}/events`), Server-Sent Events
out (`GET /topics/{topic}/events`), the admin API, `/metrics`, and the OpenAPI and AsyncAPI
documents. `create_app` builds it as an ASGI application; `inmotion serve` runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from inmotion.clock import Clock, SystemClock
from inmotion.errors import (
    InmotionError,
    InvalidConfig,
    InvalidEvent,
    InvalidPattern,
    StorageError,
    TopicExists,
    UnknownTopic,
)
from inmotion.events import to_dict
from inmotion.events.codec import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE
from inmotion.events.http import from_http, media_type
from inmotion.gateway import admin, rules, workflows
from inmotion.gateway.auth import Auth
from inmotion.gateway.common import gateway_of, in_thread, read_body, read_object
from inmotion.gateway.egress import Stream, document, parse_cursor
from inmotion.gateway.ingress import MAX_BATCH, Ingress
from inmotion.gateway.metrics import HTTP_BUCKETS, HTTP_REQUESTS, HTTP_SECONDS, describe_http, scrape
from inmotion.gateway.problems import Problem, problem_response
from inmotion.gateway.tokens import Tokens
from inmotion.log import Log, connect
from inmotion.log.scan import newest_by_key
from inmotion.patterns import Pattern
from inmotion.runtime import App
from inmotion.runtime.handler import TRACE_CONTEXT
from inmotion.runtime.metrics import Counter, Histogram
from inmotion.runtime.reports import Reports
from inmotion.workflows.engine import store_url
from inmotion.workflows.store import WorkflowRecorder, open_workflow_recorder

logger = logging.getLogger("inmotion.gateway")

_PRUNE_EVERY = 60.0
_TABLE_LIMIT = 100_000
_STATIC = Path(__file__).parent / "static"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    auth: bool = True
    """False: no token needed (`--insecure-no-auth`, for 127.0.0.1 only)."""
    max_body: int = 1 << 20
    """Bytes a request body may hold."""
    dedupe_window: float = 24 * 3600.0
    """Seconds during which an event POSTed again with the same (source, id) is not appended again."""
    session_timeout: float = 10.0
    """Session timeout of the group members the gateway runs for SSE clients."""


class Gateway:
    """What the endpoints share: the log, the runtime app that publishes, tokens and settings."""

    def __init__(self, log: Log, settings: Settings, clock: Clock) -> None:
        self.log = log
        self.settings = settings
        self.runtime = App("inmotion.gateway", log, topic_config=None, clock=clock)
        describe_http(self.runtime.metrics)
        self.tokens = Tokens(log)
        self.auth = Auth(self.tokens if settings.auth else None, clock)
        self.ingress = Ingress(self.runtime, settings.dedupe_window)
        self.reports = Reports(log)
        """What the log's apps and routers report, for /metrics."""
        self._pruned = clock.time()
        self._workflows: WorkflowRecorder | None = None

    def workflows(self) -> WorkflowRecorder:
        """The store of the log's workflow instances, opened on first use."""
        if self._workflows is None:
            self._workflows = open_workflow_recorder(store_url(self.log.url))
        return self._workflows

    async def prune(self) -> None:
        """Forget dedupe records past the window, once a minute at most (called by requests)."""
        now = self.runtime.clock.time()
        if now - self._pruned >= _PRUNE_EVERY:
            self._pruned = now
            await self.ingress.forget_old()

    def close(self) -> None:
        if self._workflows is not None:
            self._workflows.close()
        self.ingress.close()
        self.runtime.close()


# --- events in ----------------------------------------------------------------------------


async def publish(request: Request) -> Response:
    """Append CloudEvents to a topic.
    ---
    summary: Publish events (CloudEvents HTTP binding)
    description: >
      Binary mode (ce-* headers, the data as the body), structured mode
      (application/cloudevents+json) or batch mode (application/cloudevents-batch+json). A batch
      is appended whole or not at all. An event POSTed again with the same source and id within
      the dedupe window is not appended again (its position is null, duplicate true).
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
    responses:
      202: {description: "Appended: each event's id, partition and offset"}
      400: {description: "An invalid event (problem details name the attribute, and in a batch the event's index)"}
      401: {description: No token, or an unknown or revoked one}
      403: {description: The token may not publish to this topic}
      404: {description: No such topic}
      413: {description: The body is too large, or the batch has too many events}
      415: {description: Neither a CloudEvents content type nor ce-* headers}
    """
    gateway = gateway_of(request)
    topic = request.path_params["topic"]
    gateway.auth.check(request, "publish", topic)
    body = await read_body(request)
    kind = media_type(request.headers.get("content-type"))
    if kind not in (STRUCTURED_CONTENT_TYPE, BATCH_CONTENT_TYPE) and "ce-specversion" not in request.headers:
        raise Problem(
            415,
            f"expected Content-Type {STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}, or a binary-mode event"
            f" with ce-specversion, ce-id, ce-source and ce-type headers (got Content-Type {kind or 'none'})",
        )
    try:
        events = from_http(request.headers.items(), body)
    except InvalidEvent as exc:
        if exc.index is None:
            raise Problem(400, str(exc), attribute=exc.attribute) from None
        raise Problem(400, str(exc), attribute=exc.attribute, index=exc.index) from None
    if not events:
        raise Problem(400, "the batch holds no events")
    if len(events) > MAX_BATCH:
        raise Problem(413, f"a batch may hold {MAX_BATCH} events, this one has {len(events)}")
    tracing = gateway.runtime.tracing
    carrier = {name: request.headers[name] for name in TRACE_CONTEXT if name in request.headers}
    span = (
        tracing.receiving(f"POST /topics/{topic}/events", carrier, {"messaging.destination.name": topic})
        if tracing.enabled
        else contextlib.nullcontext()
    )
    try:
        with span:
            # the request's trace context goes on in events that bring none of their own
            context = tracing.current() or carrier
            if context:
                events = [e if TRACE_CONTEXT[0] in e.extensions else e.with_extensions(**context) for e in events]
            positions = await gateway.ingress.publish(topic, events)
    except UnknownTopic:
        raise Problem(404, f"unknown topic {topic!r}", topic=topic) from None
    await gateway.prune()
    return _json(
        {
            "topic": topic,
            "events": [
                {
                    "id": event.id,
                    "partition": None if position is None else position.partition,
                    "offset": None if position is None else position.offset,
                    "duplicate": position is None,
                }
                for event, position in zip(events, positions, strict=True)
            ],
        },
        status=202,
    )


# --- events out ---------------------------------------------------------------------------


async def _open_stream(connection: HTTPConnection, cursor: str | None) -> Stream:
    """The stream a request (SSE) or a WebSocket asks for, open: checked, joined to its group."""
    gateway = gateway_of(connection)
    topic = connection.path_params["topic"]
    gateway.auth.check(connection, "subscribe", topic)
    group = connection.query_params.get("group") or None
    pattern_text = connection.query_params.get("pattern")
    try:
        stream = Stream(
            gateway.log,
            gateway.runtime.coordinator,
            topic,
            group=group,
            cursor=parse_cursor(cursor),
            start=connection.query_params.get("from", "earliest" if group else "latest"),
            session_timeout=gateway.settings.session_timeout,
            pattern=None if not pattern_text else Pattern(pattern_text),
        )
        await stream.open()
    except UnknownTopic:
        raise Problem(404, f"unknown topic {topic!r}", topic=topic) from None
    except (InvalidConfig, InvalidPattern) as exc:
        raise Problem(400, str(exc)) from None
    return stream


async def stream_over_websocket(websocket: WebSocket) -> None:
    """A topic's events over a WebSocket: the SSE stream's parameters (`group`, `from`,
    `pattern`, and `cursor` for Last-Event-ID); each event a JSON message `{"cursor", "event"}`;
    the client acknowledges with `{"ack": cursor}` (in a group, the offsets are committed).
    A refused handshake gets the HTTP status and problem body that a GET would (or, on a
    server without the denial response extension, a close with 4000 + that status)."""
    try:
        stream = await _open_stream(websocket, websocket.query_params.get("cursor"))
    except Problem as problem:  # answered as HTTP where the server can (the denial response extension)
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(problem.response(websocket))
        else:
            await websocket.close(code=4000 + problem.status, reason=problem.detail[:120])
        return
    await websocket.accept()

    async def send() -> None:
        async for item in stream.records():
            if item is not None:
                record, cursor = item
                await websocket.send_bytes(msgspec.json.encode({"cursor": cursor, "event": document(record)[1]}))

    async def receive() -> None:
        while True:
            message = await websocket.receive_text()
            try:
                ack = msgspec.json.decode(message)
                if not isinstance(ack, dict) or not isinstance(ack.get("ack"), str):
                    raise InvalidConfig(f"got {message[:100]!r}")
                await stream.acknowledge(parse_cursor(ack["ack"]))
            except (msgspec.DecodeError, InvalidConfig) as exc:
                error = f'expected {{"ack": cursor}}: {exc}'
                await websocket.send_text(msgspec.json.encode({"error": error}).decode())

    try:
        async with anyio.create_task_group() as tasks:
            for work in (send, receive):
                tasks.start_soon(_until_either_ends, work, tasks.cancel_scope)
    except (WebSocketDisconnect, InmotionError) as exc:
        logger.info("websocket stream of %s ended: %s", stream.topic, exc)
    finally:
        with anyio.CancelScope(shield=True):
            await stream.close()


async def _until_either_ends(work: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
    try:
        await work()
    finally:
        scope.cancel()


async def subscribe(request: Request) -> Response:
    """Stream a topic's events as Server-Sent Events.
    ---
    summary: Read events as Server-Sent Events
    description: >
      With group, the gateway joins that consumer group for the client, which gets the
      partitions the group gives it from the group's committed offsets. Each event's SSE id is
      a cursor; reconnecting with it as Last-Event-ID resumes after that event and, in a group,
      commits everything up to it. Without group, every partition from `from`.
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
      - {name: group, in: query, required: false, schema: {type: string}}
      - {name: from, in: query, required: false, schema: {type: string, enum: [earliest, latest]}}
      - {name: pattern, in: query, required: false, schema: {type: string}, description: An event pattern (JSON)}
      - {name: Last-Event-ID, in: header, required: false, schema: {type: string}}
    responses:
      200: {description: "text/event-stream: one SSE event per CloudEvent (structured JSON)"}
      400: {description: An invalid Last-Event-ID, pattern or parameter}
      404: {description: No such topic}
    """
    stream = await _open_stream(
        request, request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    )
    topic, group = stream.topic, stream.group

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for frame in stream.frames():
                yield frame
        except InmotionError as exc:
            logger.warning("stream of %s for group %s ended: %s", topic, group, exc)
        finally:
            with anyio.CancelScope(shield=True):  # the client went: leave the group all the same
                await stream.close()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def acknowledge(request: Request) -> Response:
    """Commit a group's offsets up to an SSE cursor.
    ---
    summary: Acknowledge the events streamed to a group's client
    description: >
      The body's last_event_id (or the Last-Event-ID header) is the id of the last SSE event
      the client has handled: the group's offsets move past it.
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
      - {name: group, in: path, required: true, schema: {type: string}}
    responses:
      204: {description: Committed}
      400: {description: An invalid cursor}
    """
    gateway = gateway_of(request)
    topic, group = request.path_params["topic"], request.path_params["group"]
    gateway.auth.check(request, "subscribe", topic)
    text = (await read_object(request)).get("last_event_id")
    try:
        cursor = parse_cursor(text or request.headers.get("last-event-id"))
        if not cursor:
            raise InvalidConfig('name the last event seen: {"last_event_id": "0:17"} or a Last-Event-ID header')
        await in_thread(gateway.log.commit, group, topic, cursor, forward_only=True)
    except UnknownTopic:
        raise Problem(404, f"unknown topic {topic!r}", topic=topic) from None
    except InvalidConfig as exc:
        raise Problem(400, str(exc)) from None
    return Response(status_code=204)


def _table(log: Log, topic: str) -> dict[str, dict[str, Any]]:
    """The newest event of each key of `topic` (a compacted topic's current state), without
    the keys whose newest record is a tombstone."""
    held = sum(p.latest - p.earliest for p in log.describe_topic(topic).partitions)
    if held > _TABLE_LIMIT:
        raise Problem(413, f"topic {topic!r} holds more than {_TABLE_LIMIT} records: stream it instead")
    rows: dict[str, dict[str, Any]] = {}
    for key, record in newest_by_key(log, topic).items():
        if record.value is None:
            continue
        try:
            document: dict[str, Any] = to_dict(record.event())
        except InvalidEvent:
            continue
        document.update(partition=record.partition, offset=record.offset)
        rows[key.decode("utf-8", "replace")] = document
    return rows


async def table(request: Request) -> Response:
    """A topic's newest event per key, as a table (a read model kept in a compacted topic).
    ---
    summary: Read a topic as a table
    description: >
      The newest event of each key, without keys whose newest record is a tombstone (a null
      value): what a compacted topic holds once compacted. For topics of up to 100,000 records.
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "{topic, rows: {key: CloudEvent + partition, offset}}"}
      404: {description: No such topic}
      413: {description: The topic holds too many records}
    """
    gateway = gateway_of(request)
    topic = request.path_params["topic"]
    gateway.auth.check(request, "subscribe", topic)
    return _json({"topic": topic, "rows": await in_thread(_table, gateway.log, topic)})


# --- the rest -----------------------------------------------------------------------------


async def metrics(request: Request) -> Response:
    """The gateway's counters, those the log's apps and routers report, and the log's gauges.
    ---
    summary: Metrics in the Prometheus text format
    responses:
      200: {description: "text/plain; version=0.0.4"}
    """
    gateway = gateway_of(request)
    gateway.auth.check(request, None)
    runtime = gateway.runtime
    now = runtime.clock.time()
    text = await in_thread(scrape, runtime.metrics, gateway.reports, gateway.log, runtime.coordinator, now)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


_SCHEMAS = SchemaGenerator(
    {
        "openapi": "3.1.0",
        "info": {"title": "inmotion gateway", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
)


async def openapi(request: Request) -> Response:
    """The OpenAPI document of this API.
    ---
    summary: This document
    responses:
      200: {description: OpenAPI 3.1 (JSON)}
    """
    gateway_of(request).auth.check(request, None)
    return JSONResponse(_SCHEMAS.get_schema(routes=request.app.routes))


async def health(request: Request) -> Response:
    """Whether the gateway can read the log.
    ---
    summary: Health check (no token needed)
    responses:
      200: {description: The log answers}
      503: {description: The log does not answer}
    """
    try:
        await in_thread(gateway_of(request).log.list_topics)
    except InmotionError as exc:
        raise Problem(503, f"the log does not answer: {exc}") from None
    return JSONResponse({"status": "ok"})


def _json(document: object, status: int = 200) -> Response:
    """A JSON response encoded by msgspec (several times faster than the json module)."""
    return Response(msgspec.json.encode(document), status, media_type="application/json")


async def dashboard(request: Request) -> Response:
    """The dashboard's page (no token needed: it holds no data; its requests carry the token)."""
    return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-cache"})


class _Measured:
    """Counts each request and the time to its response's first byte, by endpoint and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counters: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def _counted(self, scope: Scope, status: int) -> tuple[Counter, Histogram]:
        route = getattr(scope.get("endpoint"), "__name__", "unmatched")
        counters = self._counters.get((route, status))
        if counters is None:
            metrics = scope["app"].state.gateway.runtime.metrics
            labels = {"route": route, "status": str(status)}
            counters = self._counters[route, status] = (
                metrics.counter(HTTP_REQUESTS, **labels),
                metrics.histogram(HTTP_SECONDS, HTTP_BUCKETS, **labels),
            )
        return counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                requests, seconds = self._counted(scope, message["status"])
                requests.add()
                seconds.observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, measured_send)


async def _storage_error(request: Request, exc: Exception) -> Response:
    return Problem(503, f"the log cannot be used: {exc}").response(request)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return Problem(400, str(exc)).response(request)


async def _exists(request: Request, exc: Exception) -> Response:
    return Problem(409, str(exc)).response(request)


async def _unknown_topic(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnknownTopic)
    return Problem(404, str(exc), topic=exc.topic).response(request)


def create_app(
    log: str | Log | None = None, settings: Settings | None = None, *, clock: Clock | None = None
) -> Starlette:
    """The gateway as an ASGI application on `log` (a URL or an open log; default
    `INMOTION_BROKER`, else ./inmotion.db). A log given by URL is closed with the app."""
    owned = not isinstance(log, Log)
    opened: Log = connect(log) if not isinstance(log, Log) else log
    gateway = Gateway(opened, settings or Settings(), clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        gateway.close()
        if owned:
            opened.close()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Problem: problem_response,
        StorageError: _storage_error,
        UnknownTopic: _unknown_topic,
        TopicExists: _exists,
        InvalidConfig: _bad_input,
        InvalidEvent: _bad_input,
    }
    routes = [
        Route("/topics/{topic}/events", publish, methods=["POST"]),
        Route("/topics/{topic}/events", subscribe, methods=["GET"]),
        Route("/topics/{topic}/groups/{group}/ack", acknowledge, methods=["POST"]),
        Route("/topics/{topic}/table", table, methods=["GET"]),
        WebSocketRoute("/topics/{topic}/ws", stream_over_websocket),
        *admin.routes,
        *rules.routes,
        *workflows.routes,
        Route("/metrics", metrics),
        Route("/openapi.json", openapi, include_in_schema=False),
        Route("/healthz", health),
        Route("/", dashboard, include_in_schema=False),
        Mount("/static", StaticFiles(packages=[("inmotion.gateway", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.gateway = gateway
    app.add_middleware(_Measured)
    return app
