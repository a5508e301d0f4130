"""CloudEvents codecs: JSON structured mode, JSON batch mode and the Kafka binary binding.

The binary binding is also how events sit in every log backend: context attributes as
`ce_*` headers, `content-type` for datacontenttype, the data as the record value and the
partition key as the record key. Java, Go or Node consumers read them without inmotion.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic

from inmotion.errors import InvalidEvent
from inmotion.events.envelope import CORE_ATTRIBUTES, PARTITIONKEY, Event, ExtensionValue
from inmotion.events.payload import to_builtins

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
JSON_CONTENT_TYPE = "application/json"
BYTES_CONTENT_TYPE = "application/octet-stream"

_OPTIONAL_STRINGS = ("subject", "datacontenttype", "dataschema")
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_LONE_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u)")
"""A high-surrogate escape with no low one after it: msgspec calls it 'Input data was truncated'."""

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka lets a header have no value (None); inmotion never writes one."""


def is_json_content_type(content_type: str | None) -> bool:
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE or media.endswith("+json") or media == "text/json"


def format_time(value: datetime) -> str:
    return _time_bytes(value).decode()


def _time_bytes(value: datetime) -> bytes:
    if value.tzinfo is UTC:
        return _json_encoder.encode(value)[1:-1]  # RFC 3339 with "Z", 6x faster than isoformat
    text = value.isoformat()
    return (text[:-6] + "Z" if text.endswith("+00:00") else text).encode()


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2}(:\d{2})?)?")
"""An RFC 3339 date-time, its zone left optional for callers that assume one: `fromisoformat`
alone also takes ISO 8601's other forms (20261203, 2026-W49, 2026-12-03T10). Offsets may carry
seconds: `format_time` writes them for historical zones (-03:30:52) and must read them back."""


def parse_time(attribute: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent(attribute, "must be an RFC 3339 timestamp string")
    try:
        if not RFC3339.fullmatch(value):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise InvalidEvent(attribute, f"not an RFC 3339 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise InvalidEvent(attribute, f"RFC 3339 timestamps carry a time zone: {value!r}")
    return parsed


# --- structured mode ---------------------------------------------------------------------


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a CloudEvents JSON object (structured mode)."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    for name in _OPTIONAL_STRINGS:
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.time is not None:
        out["time"] = format_time(event.time)
    for name, ext in event.extensions.items():
        out[name] = _extension_to_json(ext)
    data = to_builtins(event.data)
    if isinstance(data, bytes):
        out["data_base64"] = base64.b64encode(data).decode("ascii")
    elif data is not None:
        out["data"] = data
    return out


def from_dict(document: Mapping[str, Any]) -> Event:
    """An event from a CloudEvents JSON object; raises InvalidEvent naming the attribute."""
    if not isinstance(document, Mapping):
        raise InvalidEvent("<event>", f"a CloudEvent is a JSON object, got {type(document).__name__}")
    for name in ("specversion", "id", "source", "type"):
        if name not in document:
            raise InvalidEvent(name, "required attribute is missing")
    if "data" in document and "data_base64" in document:
        raise InvalidEvent("data_base64", "an event carries either data or data_base64, not both")
    attributes: dict[str, Any] = {}
    extensions: dict[str, ExtensionValue] = {}
    data: Any = None
    for name, value in document.items():
        if name == "data":
            data = value
        elif name == "data_base64":
            data = _decode_base64(value)
        elif name == "time":
            attributes["time"] = None if value is None else parse_time("time", value)
        elif name in CORE_ATTRIBUTES:
            attributes[name] = value
        else:
            if not isinstance(value, str | int | bool):
                raise InvalidEvent(str(name), "extension values are strings, integers or booleans in JSON")
            extensions[name] = value
    attributes.setdefault("time", None)
    return Event(data=data, extensions=extensions, **attributes)


def to_json(event: Event) -> bytes:
    return _json_encoder.encode(to_dict(event))


def from_json(text: str | bytes) -> Event:
    return from_dict(decode_json_document(text))


def to_batch(events: Iterable[Event]) -> bytes:
    return _json_encoder.encode([to_dict(event) for event in events])


def from_batch(text: str | bytes) -> list[Event]:
    document = decode_json_document(text)
    if not isinstance(document, list):
        raise InvalidEvent("<batch>", "a CloudEvents batch is a JSON array")
    events = []
    for index, item in enumerate(document):
        try:
            events.append(from_dict(item))
        except InvalidEvent as exc:
            raise InvalidEvent(exc.attribute, exc.problem, index) from None
    return events


def decode_json_document(text: str | bytes) -> Any:
    try:
        raw = text.encode() if isinstance(text, str) else text
    except UnicodeEncodeError:  # a command-line argument's undecodable bytes, as surrogates
        raise InvalidEvent("<json>", "JSON is not valid UTF-8") from None
    try:
        return _json_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        if "truncated" in str(exc) and _LONE_HIGH_SURROGATE.search(raw):
            raise InvalidEvent(
                "<json>", "JSON has a lone UTF-16 surrogate escape (\\ud800-\\udbff without its pair)"
            ) from exc
        raise InvalidEvent("<json>", str(exc)) from exc
    except RecursionError:
        raise InvalidEvent("<json>", "JSON is nested too deeply") from None


# --- binary mode (record key, headers, value) -------------------------------------------------


def encode_data(event: Event) -> tuple[bytes | None, str | None]:
    """The record value for the event's data and the content type that describes it."""
    data = event.data
    content_type = event.datacontenttype
    if type(data) is not dict:  # a JSON object, most events' data, goes straight to the encoder
        if data is None:
            return None, content_type
        if isinstance(data, bytes):
            return data, content_type or BYTES_CONTENT_TYPE
        if isinstance(data, str) and not is_json_content_type(content_type):
            return data.encode(), content_type
        # Lists skip the isinstance check too: its first call imports pydantic's models.
        if type(data) is not list and isinstance(data, pydantic.BaseModel):
            return data.model_dump_json().encode(), content_type or JSON_CONTENT_TYPE
    try:
        return _json_encoder.encode(data), content_type or JSON_CONTENT_TYPE  # dicts, dataclasses, Structs...
    except TypeError as exc:
        raise InvalidEvent("data", f"cannot encode {type(data).__name__} as JSON: {exc}") from exc


def to_binary(event: Event) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None]:
    """(key, headers, value) in the CloudEvents Kafka binary binding."""
    value, content_type = encode_data(event)
    headers = [
        _SPECVERSION_HEADER,  # the only version an Event can have
        ("ce_id", event.id.encode()),
        _SOURCES.get(event.source) or _shared_header(_SOURCES, "ce_source", event.source),
        _TYPES.get(event.type) or _shared_header(_TYPES, "ce_type", event.type),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    if event.time is not None:
        headers.append(("ce_time", _time_bytes(event.time)))
    if event.dataschema is not None:
        headers.append(("ce_dataschema", event.dataschema.encode()))
    key: bytes | None = None
    for name, ext in event.extensions.items():
        if name == PARTITIONKEY:
            key = str(ext).encode()
        else:
            headers.append(("ce_" + name, _extension_to_text(ext).encode()))
    if content_type is not None:
        headers.append(_CONTENT_TYPES.get(content_type) or _shared_header(_CONTENT_TYPES, "content-type", content_type))
    return key, headers, value


_SPECVERSION_HEADER = ("ce_specversion", b"1.0")
_SOURCES: dict[str, tuple[str, bytes]] = {}
_TYPES: dict[str, tuple[str, bytes]] = {}
_CONTENT_TYPES: dict[str, tuple[str, bytes]] = {}
_MAX_SHARED = 4096


def _shared_header(known: dict[str, tuple[str, bytes]], name: str, text: str) -> tuple[str, bytes]:
    """The header `(name, text encoded)`, one object for all events with the same text (kept
    in `known`, up to _MAX_SHARED texts): most events of a process share a few sources, types
    and content types, and a header made anew for each would be one more object to build and
    for the garbage collector to scan. A dict lookup costs a fifth of an lru_cache call."""
    header = name, text.encode()
    if len(known) < _MAX_SHARED:
        known[text] = header
    return header


def source_and_id(headers: Headers) -> tuple[str, str]:
    """(source, id) of the event a record carries in the binary binding, from its headers
    alone: what identifies it, without decoding the rest as `from_binary` does."""
    source = event_id = None
    for name, raw in headers:
        if name == "ce_source":
            source = raw
        elif name == "ce_id":
            event_id = raw
    if source is None or event_id is None:
        missing = "source" if source is None else "id"
        raise InvalidEvent(missing, f"required attribute is missing (no ce_{missing} header)")
    return _header_text("source", source), _header_text("id", event_id)


def from_binary(key: bytes | None, headers: Headers, value: bytes | None) -> Event:
    """An event from a record in the CloudEvents Kafka binary binding."""
    attributes: dict[str, Any] = {}
    extensions: dict[str, ExtensionValue] = {}
    content_type: str | None = None
    for name, raw in headers:  # headers not the event's (a tracing id) are not even decoded
        if raw is None:  # a Kafka header may have no value: as if it were absent (as consumers read it)
            continue
        if name.lower() == "content-type":
            content_type = _header_text(name, raw)
        elif name.startswith("ce_"):
            text = _header_text(name, raw)
            attribute = name[3:]
            if attribute == "time":
                attributes["time"] = parse_time("time", text)
            elif attribute in CORE_ATTRIBUTES:
                attributes[attribute] = text
            else:
                extensions[attribute] = text
    for name in ("specversion", "id", "source", "type"):
        if name not in attributes:
            raise InvalidEvent(name, f"required attribute is missing (no ce_{name} header)")
    if key is not None:
        extensions[PARTITIONKEY] = _header_text("key", key)
    attributes.setdefault("time", None)
    attributes["datacontenttype"] = content_type
    return Event(data=decode_data(value, content_type), extensions=extensions, **attributes)


def decode_data(value: bytes | None, content_type: str | None) -> Any:
    if value is None:
        return None
    if is_json_content_type(content_type):
        try:
            return _json_decoder.decode(value)
        except msgspec.DecodeError as exc:
            if content_type is None:
                return value
            raise InvalidEvent("data", f"content type {content_type} but malformed JSON: {exc}") from exc
    if content_type is not None and content_type.lower().startswith("text/"):
        return value.decode("utf-8", errors="replace")
    return value


def _header_text(name: str, raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(name, "header value is not UTF-8") from exc


def _decode_base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidEvent("data_base64", "must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise InvalidEvent("data_base64", f"not valid base64: {exc}") from exc


def _extension_to_json(value: ExtensionValue) -> str | int | bool:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return format_time(value)
    return value


def _extension_to_text(value: ExtensionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_extension_to_json(value))
