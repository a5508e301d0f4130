"""An App described as an AsyncAPI 3.0 document: its topics as channels, the events its
subscribers take as messages (payload schemas from their handlers' annotations: pydantic
models, dataclasses, msgspec Structs, plain types), each subscription a `receive` operation.
Events travel in the CloudEvents Kafka binary binding, so every message names its `ce_*`
headers and takes its correlation id from `ce_correlationid`."""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec
import pydantic

from inmotion.errors import InmotionError, UnknownTopic
from inmotion.events import Event
from inmotion.log import Log
from inmotion.runtime.filters import TypeIs, TypePrefix

if TYPE_CHECKING:
    from inmotion.runtime.app import App
    from inmotion.runtime.subscription import Subscription

ASYNCAPI_VERSION = "3.0.0"
_REF = "#/components/schemas/{name}"  # msgspec's template; pydantic's names the model {model}
_HEADERS = {
    "type": "object",
    "description": "CloudEvents attributes in the Kafka binary binding (extensions as ce_<name> too).",
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string"},
        "ce_source": {"type": "string"},
        "ce_type": {"type": "string"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string"},
        "ce_correlationid": {"type": "string"},
        "ce_causationid": {"type": "string"},
        "content-type": {"type": "string"},
    },
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type"],
}


def describe(app: App, *, version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `app` (`version`: the API's own version)."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for subscription in app.subscriptions:
        message = _message_id(subscription.handler.payload_type)
        if message not in messages:
            messages[message] = {
                "name": message,
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
                "correlationId": {"location": "$message.header#/ce_correlationid"},
                "payload": _payload(subscription.handler.payload_type, schemas),
            }
        for topic in subscription.topics:
            channel = channels.setdefault(_key(topic), {"address": topic, "messages": {}})
            channel["messages"][message] = {"$ref": f"#/components/messages/{message}"}
            operations[_key(f"{subscription.group}.{topic}")] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{_key(topic)}"},
                "messages": [{"$ref": f"#/channels/{_key(topic)}/messages/{message}"}],
                "summary": _summary(subscription),
            }
    schemas["CloudEventHeaders"] = _HEADERS
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": app.name, "version": version, "description": f"Events that {app.name} consumes."},
        "defaultContentType": "application/json",
    }
    servers = _servers(app.log.url)
    if servers:
        document["servers"] = servers
    document |= {
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
    return document


def describe_log(log: Log, *, sample: int = 100, version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a whole log: each topic a channel, whose messages are the
    event types among its newest `sample` records per partition (their payloads any JSON: the
    log keeps no schemas), and a `send` operation per channel."""
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in log.list_topics():
        types: set[str] = set()
        try:
            for partition in range(log.partition_count(topic)):
                start = max(log.earliest_offset(topic, partition), log.latest_offset(topic, partition) - sample)
                for record in log.read(topic, partition, start, sample):
                    with contextlib.suppress(InmotionError):
                        types.add(record.event().type)
        except UnknownTopic:  # deleted meanwhile
            continue
        channel = channels[_key(topic)] = {"address": topic, "messages": {}}
        for kind in sorted(types) or ["CloudEvent"]:
            messages.setdefault(
                _key(kind),
                {
                    "name": kind,
                    "contentType": "application/json",
                    "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
                    "correlationId": {"location": "$message.header#/ce_correlationid"},
                    "payload": {"description": "any JSON value"},
                },
            )
            channel["messages"][_key(kind)] = {"$ref": f"#/components/messages/{_key(kind)}"}
        operations[_key(f"publish.{topic}")] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_key(topic)}"},
            "summary": f"publish to {topic}",
        }
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "inmotion log", "version": version, "description": f"The topics of {log.url}."},
        "defaultContentType": "application/json",
    }
    servers = _servers(log.url)
    if servers:
        document["servers"] = servers
    document |= {
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"CloudEventHeaders": _HEADERS}},
    }
    return document


def _payload(kind: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a payload type; the schemas it refers to go into `schemas`."""
    if kind is Any or kind is Event:
        return {"description": "any JSON value" if kind is Any else "the whole CloudEvent's data"}
    if not (isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)):
        try:
            (schema,), definitions = msgspec.json.schema_components([kind], ref_template=_REF)
            schemas.update(definitions)
            return dict(schema)
        except TypeError:
            pass  # a type msgspec does not know: pydantic's adapter does
    schema = pydantic.TypeAdapter(kind).json_schema(ref_template=_REF.replace("{name}", "{model}"))
    schemas.update(schema.pop("$defs", {}))
    return schema


def _message_id(kind: Any) -> str:
    if kind is Any:
        return "AnyEvent"
    if kind is Event:
        return "CloudEvent"
    return _key(getattr(kind, "__name__", None) or str(kind))


def _summary(subscription: Subscription) -> str:
    described = subscription.filter
    if isinstance(described, TypeIs):
        which = " of type " + ", ".join(sorted(described.types))
    elif isinstance(described, TypePrefix):
        which = f" of types {described.prefix}*"
    elif described is not None:
        which = " that its filter lets through"
    else:
        which = ""
    return f"group {subscription.group} handles the events{which}"


def _servers(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme == "kafka":
        return {
            _key(f"kafka-{n}"): {"host": host, "protocol": "kafka"}
            for n, host in enumerate(parts.netloc.split(","), 1)
            if host
        }
    if parts.scheme == "sqlite":
        return {
            "embedded": {
                "host": "localhost",
                "pathname": os.path.abspath(parts.path[1:] if parts.path.startswith("/") else parts.path),
                "protocol": "sqlite",
                "description": "inmotion's embedded log: one SQLite file, shared by the processes on this machine",
            }
        }
    return {}


def _key(name: str) -> str:
    """A name usable as a component key (letters, digits, '.', '-', '_')."""
    return re.sub(r"[^\w.\-]", "_", name)
