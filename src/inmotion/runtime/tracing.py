"""OpenTelemetry spans for the events an app handles, when the application has configured an
OpenTelemetry SDK (`opentelemetry-api`/`-sdk`, the `tracing` extra; without them, or without a
tracer provider set, nothing here costs anything).

A handler runs inside a CONSUMER span whose parent is the W3C trace context the event carries
(its `traceparent`/`tracestate` extensions, the CloudEvents distributed-tracing extension);
events it publishes (`ctx.publish`) carry that span's context, so the next handler's span is
its child: HTTP ingress, router, handlers and their follow-ups form one trace. Without an SDK,
the trigger's trace context is passed on unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from inmotion.log import Record

_TRACEPARENT = "ce_traceparent"
_TRACESTATE = "ce_tracestate"


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`)."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def record_fields(record: Record) -> dict[str, str]:
    """What structured logs say of the event a record carries, from its headers alone: its id,
    correlation id and trace id (those it has)."""
    fields = {}
    for name, value in record.headers:
        if name == "ce_id":
            fields["event_id"] = value.decode("utf-8", "replace")
        elif name == "ce_correlationid":
            fields["correlation_id"] = value.decode("utf-8", "replace")
        elif name == _TRACEPARENT and (found := trace_id(value.decode("ascii", "replace"))) is not None:
            fields["trace_id"] = found
    return fields


class Tracing:
    """The app's tracer, or none (`enabled` False) when no OpenTelemetry SDK is configured."""

    def __init__(self) -> None:
        self._tracer: Any = None
        self._propagator: Any = None
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            return
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody set one up: no spans to make
            return
        self._tracer = provider.get_tracer("inmotion")
        self._propagator = TraceContextTextMapPropagator()
        self._kind = trace.SpanKind

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def handling(self, record: Record, group: str) -> Iterator[None]:
        """A CONSUMER span around a handler's try, the child of the event's trace context."""
        carrier = {
            name[3:]: value.decode("ascii", "replace")
            for name, value in record.headers
            if name in (_TRACEPARENT, _TRACESTATE)
        }
        attributes = {
            "messaging.system": "inmotion",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.consumer.group.name": group,
            "messaging.kafka.offset": record.offset,
            **{f"cloudevents.event_{k.removesuffix('_id')}_id": v for k, v in record_fields(record).items()},
        }
        with self._tracer.start_as_current_span(
            f"process {record.topic}",
            context=self._propagator.extract(carrier),
            kind=self._kind.CONSUMER,
            attributes=attributes,
        ):
            yield

    @contextlib.contextmanager
    def receiving(self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]) -> Iterator[None]:
        """A SERVER span (an HTTP request that brings events), the child of `carrier`'s context."""
        with self._tracer.start_as_current_span(
            name, context=self._propagator.extract(dict(carrier)), kind=self._kind.SERVER, attributes=dict(attributes)
        ):
            yield

    def current(self) -> dict[str, str]:
        """The current span's context as `traceparent` (and `tracestate`), empty without one."""
        carrier: dict[str, str] = {}
        if self._propagator is not None:
            self._propagator.inject(carrier)
        return carrier
