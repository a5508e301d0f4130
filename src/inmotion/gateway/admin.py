"""The admin API of the log (an `--admin` token): topics, consumer groups with their lag and
replay, dead letters and their redrive, tokens, an event's causal flow and the log's AsyncAPI
document; what the `inmotion` command does, over HTTP. Rules and workflow instances have
modules of their own (`gateway.rules`, `gateway.workflows`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inmotion.errors import InvalidConfig, InvalidEvent, UnknownTopic
from inmotion.events import to_dict
from inmotion.events.codec import parse_time
from inmotion.gateway.common import admin_of, in_thread, read_object
from inmotion.gateway.problems import Problem
from inmotion.gateway.tokens import TOKENS_TOPIC
from inmotion.log import Log, TopicConfig, TopicInfo
from inmotion.log.lag import all_groups, group_lag
from inmotion.runtime import deadletter, trace
from inmotion.runtime.asyncapi import describe_log
from inmotion.runtime.filters import make_filter
from inmotion.runtime.replay import replay

if TYPE_CHECKING:
    from inmotion.gateway.app import Gateway

_MAX_LIST = 1000


def _topic_document(info: TopicInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "partitions": [{"partition": p.partition, "earliest": p.earliest, "latest": p.latest} for p in info.partitions],
        "records": sum(p.latest - p.earliest for p in info.partitions),
        "retention_ms": info.config.retention_ms,
        "retention_bytes": info.config.retention_bytes,
        "compact": info.config.compact,
    }


def _topics(log: Log) -> list[dict[str, object]]:
    found = []
    for name in log.list_topics():
        try:
            found.append(_topic_document(log.describe_topic(name)))
        except UnknownTopic:  # deleted meanwhile
            continue
    return found


async def list_topics(request: Request) -> Response:
    """Every topic with its partitions' offsets and settings.
    ---
    summary: List topics
    responses:
      200: {description: "{topics: [{name, partitions, records, retention_ms, retention_bytes, compact}]}"}
    """
    gateway = admin_of(request)
    return JSONResponse({"topics": await in_thread(_topics, gateway.log)})


async def describe_topic(request: Request) -> Response:
    """One topic.
    ---
    summary: Describe a topic
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The topic's partitions and settings}
      404: {description: No such topic}
    """
    gateway = admin_of(request)
    info = await in_thread(gateway.log.describe_topic, request.path_params["topic"])
    return JSONResponse(_topic_document(info))


async def create_topic(request: Request) -> Response:
    """Create a topic.
    ---
    summary: Create a topic
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string}
              partitions: {type: integer, minimum: 1}
              retention_ms: {type: integer}
              retention_bytes: {type: integer}
              compact: {type: boolean}
    responses:
      201: {description: Created}
      400: {description: Invalid settings}
      409: {description: The topic exists}
    """
    gateway = admin_of(request)
    document = await read_object(request)
    name = document.get("name")
    if not isinstance(name, str):
        raise Problem(400, 'name the topic: {"name": "orders", "partitions": 3}')
    unknown = set(document) - {"name", "partitions", "retention_ms", "retention_bytes", "compact"}
    if unknown:
        raise Problem(400, f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        config = TopicConfig(
            partitions=document.get("partitions", 1),
            retention_ms=document.get("retention_ms"),
            retention_bytes=document.get("retention_bytes"),
            compact=document.get("compact", False),
        )
    except (InvalidConfig, TypeError) as exc:
        raise Problem(400, str(exc)) from None
    await in_thread(gateway.log.create_topic, name, config)
    info = await in_thread(gateway.log.describe_topic, name)
    return JSONResponse(_topic_document(info), status_code=201)


async def delete_topic(request: Request) -> Response:
    """Delete a topic and its records.
    ---
    summary: Delete a topic
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
    responses:
      204: {description: Deleted}
      404: {description: No such topic}
    """
    gateway = admin_of(request)
    await in_thread(gateway.log.delete_topic, request.path_params["topic"])
    return Response(status_code=204)


def _groups(gateway: Gateway) -> list[dict[str, object]]:
    coordinator = gateway.runtime.coordinator
    rows = []
    for group in all_groups(gateway.log, coordinator):
        states = group_lag(gateway.log, coordinator, group)
        rows.append(
            {
                "group": group,
                "members": len(coordinator.members(group)),
                "topics": sorted({s.topic for s in states}),
                "lag": sum(s.lag for s in states),
            }
        )
    return rows


async def list_groups(request: Request) -> Response:
    """Consumer groups with their live members and total lag.
    ---
    summary: List consumer groups
    responses:
      200: {description: "{groups: [{group, members, topics, lag}]}"}
    """
    gateway = admin_of(request)
    return JSONResponse({"groups": await in_thread(_groups, gateway)})


def _group(gateway: Gateway, group: str) -> dict[str, object]:
    coordinator = gateway.runtime.coordinator
    if group not in all_groups(gateway.log, coordinator):
        raise Problem(404, f"unknown consumer group {group!r}")
    now_ms = int(time.time() * 1000)
    states = group_lag(gateway.log, coordinator, group)
    return {
        "group": group,
        "members": [
            {
                "member": m.member_id,
                "host": m.host,
                "pid": m.pid,
                "topics": list(m.topics),
                "last_heartbeat_s": None if m.heartbeat_ms is None else round((now_ms - m.heartbeat_ms) / 1000, 3),
            }
            for m in coordinator.members(group)
        ],
        "partitions": [s.document() for s in states],
        "lag": sum(s.lag for s in states),
    }


async def describe_group(request: Request) -> Response:
    """A group's members, partition owners, committed offsets and lag.
    ---
    summary: Describe a consumer group
    parameters:
      - {name: group, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "{group, members, partitions: [{topic, partition, owner, committed, latest, lag}], lag}"}
      404: {description: No such group}
    """
    gateway = admin_of(request)
    return JSONResponse(await in_thread(_group, gateway, request.path_params["group"]))


async def replay_group(request: Request) -> Response:
    """Move a group's offsets on a topic so that it handles the events from there again.
    ---
    summary: Replay a topic for a consumer group
    parameters:
      - {name: group, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [topic]
            properties:
              topic: {type: string}
              from_beginning: {type: boolean}
              since: {type: string, format: date-time, description: RFC 3339}
              offset: {type: integer}
              partitions: {type: array, items: {type: integer}}
              force: {type: boolean, description: Even while the group has live members}
              forget_dedupe: {type: boolean, description: Forget its dedupe records of the replayed events}
    responses:
      200:
        description: "{partitions: [{topic, group, partition, from, to, events, dedupe_records, dedupe_forgotten}]}"
      400: {description: "Not exactly one of from_beginning, since, offset; an unknown partition"}
      404: {description: No such topic}
      409: {description: The group has live members (and force is not set)}
    """
    gateway = admin_of(request)
    group = request.path_params["group"]
    document = await read_object(request)
    topic = document.get("topic")
    if not isinstance(topic, str):
        raise Problem(400, 'name the topic: {"topic": "orders", "from_beginning": true}')
    since = document.get("since")
    offset = document.get("offset")
    partitions = document.get("partitions") or []
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
        raise Problem(400, f"offset must be a non-negative integer, got {offset!r}")
    if not (isinstance(partitions, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in partitions)):
        raise Problem(400, "partitions must be a list of partition numbers")
    try:
        since_ms = None if since is None else int(parse_time("since", since).timestamp() * 1000)
        moved = await in_thread(
            replay,
            gateway.log,
            gateway.runtime.coordinator,
            topic,
            group,
            from_beginning=bool(document.get("from_beginning")),
            since_ms=since_ms,
            offset=offset,
            partitions=partitions,
            force=bool(document.get("force")),
            forget_dedupe=bool(document.get("forget_dedupe")),
        )
    except InvalidEvent as exc:
        raise Problem(400, f"since: {exc.problem}") from None
    except InvalidConfig as exc:
        raise Problem(409 if "live member" in str(exc) else 400, str(exc)) from None
    forgotten = bool(document.get("forget_dedupe"))
    return JSONResponse({"partitions": [m.document(topic, group, forgotten) for m in moved]})


def _dead_letters(log: Log, topic: str | None, limit: int) -> list[dict[str, object]]:
    topics = [topic] if topic is not None else [t for t in log.list_topics() if t.endswith(".dlq")]
    found = []
    for name in topics:
        for count, entry in enumerate(deadletter.entries(log, name)):
            if count >= limit:
                break
            found.append(entry.document(include_traceback=True))
    return found


async def list_dead_letters(request: Request) -> Response:
    """Dead-lettered events with their errors, of one dead-letter topic or of every *.dlq topic.
    ---
    summary: List dead letters
    parameters:
      - {name: topic, in: query, required: false, schema: {type: string}}
      - {name: limit, in: query, required: false, schema: {type: integer, default: 100}}
    responses:
      200:
        description: >
          {entries: [{dlq, dlq_partition, dlq_offset, id, source, type, key, topic, group,
          error_type, error_message, error_traceback, attempts, ...}]}
      404: {description: No such topic}
    """
    gateway = admin_of(request)
    limit = request.query_params.get("limit", "100")
    if not limit.isdigit() or not 0 < int(limit) <= _MAX_LIST:
        raise Problem(400, f"limit must be between 1 and {_MAX_LIST}, got {limit!r}")
    topic = request.query_params.get("topic")
    if topic is not None and topic not in await in_thread(gateway.log.list_topics):
        raise UnknownTopic(topic)
    return JSONResponse({"entries": await in_thread(_dead_letters, gateway.log, topic, int(limit))})


async def redrive(request: Request) -> Response:
    """Send a dead-letter topic's entries back to their original topics.
    ---
    summary: Redrive dead letters
    parameters:
      - {name: topic, in: path, required: true, schema: {type: string}}
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              ids: {type: array, items: {type: string}, description: Only the events with these ids}
              type: {type: string, description: "Only events of this type ('a.b' or 'a.*')"}
              to: {type: string, description: "Send to this topic instead of each event's original"}
              again: {type: boolean, description: Also entries an earlier redrive went past}
              only_group: {type: boolean, description: Only the group that failed each event handles it again}
    responses:
      200: {description: "{redriven: [{id, type, to}]}"}
      404: {description: No such topic}
    """
    gateway = admin_of(request)
    document = await read_object(request)
    topic = request.path_params["topic"]
    ids = document.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise Problem(400, "ids must be a list of event ids")
    type_filter = make_filter(document.get("type"))
    to = document.get("to")
    if to is not None and to not in await in_thread(gateway.log.list_topics):
        raise UnknownTopic(to)

    def accept(entry: deadletter.DeadLetter) -> bool:
        event = entry.event_or_none()
        if type_filter is not None and (event is None or not type_filter.matches(event)):
            return False
        return ids is None or (event is not None and event.id in ids)

    chosen = await in_thread(
        deadletter.redrive,
        gateway.log,
        topic,
        accept,
        from_start=bool(document.get("again")),
        to=to,
        only_group=bool(document.get("only_group")),
    )
    return JSONResponse(
        {
            "redriven": [
                {
                    "id": None if (event := entry.event_or_none()) is None else event.id,
                    "type": None if event is None else event.type,
                    "to": to or entry.original_topic,
                }
                for entry in chosen
            ]
        }
    )


async def list_tokens(request: Request) -> Response:
    """The tokens (never their secrets).
    ---
    summary: List tokens
    responses:
      200: {description: "{tokens: [{name, publish, subscribe, admin, rate, created}]}"}
    """
    gateway = admin_of(request)
    grants = await in_thread(gateway.tokens.list)
    return JSONResponse({"tokens": [grant.document() for grant in grants]})


def _flow(log: Log, event_id: str) -> dict[str, object]:
    topics = [topic for topic in log.list_topics() if topic != TOKENS_TOPIC]
    found, scanned = trace.scan(log, topics, event_id, None)
    correlation = trace.correlation_of(found, event_id)
    if correlation != event_id or len(found) == 1:  # the flow around the event found alone
        found, scanned = trace.scan(log, topics, correlation, None)
    if not found:
        raise Problem(
            404, f"no event with id or correlation id {event_id!r} in {len(topics)} topics ({scanned} events)"
        )
    events = []
    for event, record, depth, parent, _ in trace.tree(found):
        document: dict[str, object] = to_dict(event)
        document.update(
            topic=record.topic, partition=record.partition, offset=record.offset, depth=depth, parent=parent
        )
        events.append(document)
    return {"correlation": correlation, "events": events}


async def flow(request: Request) -> Response:
    """The causal tree of the events that share an event's correlation id, across topics.
    ---
    summary: Trace an event's flow
    parameters:
      - {name: id, in: path, required: true, schema: {type: string}, description: An event id or a correlation id}
    responses:
      200: {description: "{correlation, events: [CloudEvent + topic, partition, offset, depth, parent]} in tree order"}
      404: {description: No such event}
    """
    gateway = admin_of(request)
    return JSONResponse(await in_thread(_flow, gateway.log, request.path_params["id"]))


async def asyncapi(request: Request) -> Response:
    """The log's AsyncAPI 3.0 document: each topic a channel, the event types it carries.
    ---
    summary: AsyncAPI document of the log
    responses:
      200: {description: AsyncAPI 3.0 (JSON)}
    """
    gateway = admin_of(request)
    return JSONResponse(await in_thread(describe_log, gateway.log))


routes = [
    Route("/topics", list_topics, methods=["GET"]),
    Route("/topics", create_topic, methods=["POST"]),
    Route("/topics/{topic}", describe_topic, methods=["GET"]),
    Route("/topics/{topic}", delete_topic, methods=["DELETE"]),
    Route("/groups", list_groups),
    Route("/groups/{group}", describe_group),
    Route("/groups/{group}/replay", replay_group, methods=["POST"]),
    Route("/dlq", list_dead_letters),
    Route("/dlq/{topic}/redrive", redrive, methods=["POST"]),
    Route("/tokens", list_tokens),
    Route("/asyncapi.json", asyncapi),
    Route("/trace/{id}", flow),
]
