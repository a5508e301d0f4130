"""Handlers: how a user's function is called with a decoded payload and an optional context."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sqlite3
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import pydantic

from inmotion.errors import InvalidConfig, InvalidEvent
from inmotion.events import Event, from_data
from inmotion.events.codec import JSON_CONTENT_TYPE, decode_data
from inmotion.log import Record

if TYPE_CHECKING:
    from inmotion.runtime.app import App

CORRELATION_ID = "correlationid"
CAUSATION_ID = "causationid"
REPLY_TO = "replyto"
TRACE_CONTEXT = ("traceparent", "tracestate")
"""The CloudEvents distributed-tracing extension (W3C trace context): carried from an event to
the events published in answer to it, so that a flow across services stays one trace."""


@dataclasses.dataclass(slots=True)
class Context:
    """What a handler may know about the event it handles, and how it publishes follow-ups.

    `publish`/`publish_sync` stamp the `correlationid` extension (inherited from the trigger,
    or the trigger's id when it has none) and `causationid` (the trigger's id), and carry the
    trigger's W3C trace context (`traceparent`, `tracestate`) along. `db` is an open
    SQLite transaction on the log's file when the subscription asked for `transaction=True`:
    whatever the handler writes there commits together with the event's dedupe record and
    position, or not at all; events published meanwhile are appended right after that commit.
    """

    event: Event
    record: Record
    group: str
    attempt: int
    app: App
    db: sqlite3.Connection | None = None
    deferred: list[tuple[str, Event, Mapping[str, str] | None]] | None = None

    @property
    def topic(self) -> str:
        return self.record.topic

    @property
    def partition(self) -> int:
        return self.record.partition

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def headers(self) -> dict[str, str]:
        """The record's headers as text (CloudEvents attributes appear as `ce_*`)."""
        return {name: value.decode("utf-8", "replace") for name, value in self.record.headers}

    def _causal(self) -> dict[str, str]:
        extensions = self.event.extensions
        causal = {CORRELATION_ID: str(extensions.get(CORRELATION_ID, self.event.id)), CAUSATION_ID: self.event.id}
        traced = self.app.tracing.current()  # the handler's span, when OpenTelemetry traces it
        if traced:
            causal.update(traced)
            return causal
        for name in TRACE_CONTEXT:
            if (value := extensions.get(name)) is not None:
                causal[name] = str(value)
        return causal

    def _follow_up(
        self,
        topic: str,
        payload: Any,
        key: str | None,
        type: str | None,
        subject: str | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[Event, bool]:
        """The event to publish, caused by the one being handled, and whether it is held for the
        handler's transaction (which appends it) rather than to be published now."""
        event = self.app.build_event(topic, payload, key=key, type=type, subject=subject, extensions=self._causal())
        if self.deferred is None:
            return event, False
        self.deferred.append((topic, event, headers))
        return event, True

    async def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: str | None = None,
        type: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Event:
        event, held = self._follow_up(topic, payload, key, type, subject, headers)
        return event if held else await self.app.publish(topic, event, headers=headers)

    async def reply(self, payload: Any = None, *, type: str | None = None) -> Event:
        """Answer a request (a workflow's `wf.request`): publish `payload` to the topic its
        `replyto` extension names, keyed by the correlation id, caused by it."""
        topic = self.event.extensions.get(REPLY_TO)
        if not isinstance(topic, str) or not topic:
            raise InvalidConfig(f"event {self.event.id} has no replyto extension: there is nobody to reply to")
        return await self.publish(topic, payload, key=self._causal()[CORRELATION_ID], type=type)

    def publish_sync(
        self,
        topic: str,
        payload: Any = None,
        *,
        key: str | None = None,
        type: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Event:
        event, held = self._follow_up(topic, payload, key, type, subject, headers)
        return event if held else self.app.publish_sync(topic, event, headers=headers)


@dataclasses.dataclass(frozen=True, slots=True)
class Handler:
    """A user's function with what is needed to call it: the payload's type and where the
    context goes."""

    function: Callable[..., Any]
    payload_type: Any
    context_argument: str | None
    is_async: bool
    json_decoder: msgspec.json.Decoder[Any] | None = None
    """Decodes a JSON value straight into `payload_type` (not for pydantic models)."""

    @classmethod
    def inspect(cls, function: Callable[..., Any]) -> Handler:
        if not callable(function):
            raise InvalidConfig(f"a handler must be a function, got {function!r}")
        name = getattr(function, "__qualname__", repr(function))
        try:
            signature = inspect.signature(function)
            hints = typing.get_type_hints(function)
        except (NameError, TypeError) as exc:
            raise InvalidConfig(f"cannot read the annotations of handler {name}: {exc}") from exc
        parameters = [
            p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not parameters:
            raise InvalidConfig(f"handler {name} must take the event's payload as its first parameter")
        payload_type = hints.get(parameters[0].name, Any)
        if payload_type is Context:
            raise InvalidConfig(f"handler {name}: the first parameter is the payload, the context comes after it")
        context_argument = None
        for parameter in parameters[1:]:
            if hints.get(parameter.name) is Context or (
                parameter.name in ("ctx", "context") and parameter.name not in hints
            ):
                context_argument = parameter.name
            elif parameter.default is parameter.empty:
                raise InvalidConfig(
                    f"handler {name}: parameter {parameter.name!r} is neither the payload nor a Context"
                )
        return cls(
            function,
            payload_type,
            context_argument,
            inspect.iscoroutinefunction(function),
            _json_decoder(payload_type),
        )

    @property
    def wants_event(self) -> bool:
        """Does calling the handler need the whole envelope (for itself or its context)?"""
        return self.payload_type is Event or self.context_argument is not None

    def decode(self, event: Event) -> Any:
        if self.payload_type is Event:
            return event
        return from_data(event.data, self.payload_type)

    def decode_record(self, record: Record, content_type: str | None) -> Any:
        """The payload straight from the record's value, without building the envelope."""
        if self.json_decoder is not None and record.value is not None and content_type == JSON_CONTENT_TYPE:
            try:
                return self.json_decoder.decode(record.value)
            except msgspec.ValidationError as exc:
                raise InvalidEvent("data", f"does not fit {_name(self.payload_type)}: {exc}") from exc
            except msgspec.DecodeError as exc:
                raise InvalidEvent("data", f"content type {content_type} but malformed JSON: {exc}") from exc
        return from_data(decode_data(record.value, content_type), self.payload_type)

    async def call(self, payload: Any, context: Context | None) -> None:
        if self.is_async and self.context_argument is None:  # the usual case, without a kwargs dict
            await self.function(payload)
            return
        kwargs = {self.context_argument: context} if self.context_argument else {}
        if self.is_async:
            await self.function(payload, **kwargs)
        else:
            await asyncio.to_thread(self.function, payload, **kwargs)


def _name(kind: Any) -> str:
    return str(getattr(kind, "__name__", kind))


def _json_decoder(payload_type: Any) -> msgspec.json.Decoder[Any] | None:
    """A decoder from JSON into `payload_type` when msgspec handles the type the way
    `from_data` would (dataclasses, Structs, dicts, lists, scalars); None otherwise."""
    if payload_type is Event or payload_type is Any:
        return None
    if isinstance(payload_type, type) and issubclass(payload_type, pydantic.BaseModel):
        return None
    try:
        return msgspec.json.Decoder(payload_type, strict=False)
    except TypeError:  # a type msgspec does not know: from_data (pydantic) takes it
        return None
