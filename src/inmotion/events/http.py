"""The CloudEvents HTTP binding: binary mode (attributes in `ce-*` headers, the data as the
body), structured mode (`application/cloudevents+json`) and batch mode
(`application/cloudevents-batch+json`), written by the router's HTTP targets and read by the
gateway's ingress."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from typing import Literal

from inmotion.errors import InvalidEvent
from inmotion.events.codec import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    from_batch,
    from_binary,
    from_json,
    is_json_content_type,
    to_binary,
    to_json,
)
from inmotion.events.envelope import PARTITIONKEY, Event

_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
"""Printable ASCII but `"` and `%`: what a `ce-*` header value may carry as it is (the
binding's 3.1.3.2); the rest is percent-encoded from UTF-8."""
_PLAIN_HEADER = re.compile(r"[\t\x20-\x7e]*")


def encode_header(value: str) -> str:
    """A `ce-*` header value as the binding writes it: space, `"`, `%` and everything outside
    printable ASCII percent-encoded from UTF-8, so never a CR or LF."""
    return urllib.parse.quote(value, safe=_HEADER_SAFE)


def decode_header(name: str, value: str) -> str:
    """A `ce-*` header value as the binding reads it: percent-decoded as UTF-8."""
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidEvent(name, "percent-encoded header value is not UTF-8") from None


def to_http(event: Event, mode: Literal["binary", "structured"]) -> tuple[dict[str, str], bytes]:
    """The headers and body that carry `event`; InvalidEvent when its content type cannot be an
    HTTP header (it is a media type, sent as it is)."""
    if mode == "structured":
        return {"Content-Type": STRUCTURED_CONTENT_TYPE}, to_json(event)
    key, attributes, value = to_binary(event)
    headers = {}
    for name, raw in attributes:
        if name == "content-type":
            content_type = raw.decode()
            if not _PLAIN_HEADER.fullmatch(content_type):
                raise InvalidEvent("datacontenttype", f"{content_type!r} cannot be sent as an HTTP header")
            headers["Content-Type"] = content_type
        else:
            headers["ce-" + name.removeprefix("ce_")] = encode_header(raw.decode())
    if key is not None:
        headers["ce-" + PARTITIONKEY] = encode_header(key.decode())
    return headers, value or b""


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case, without its parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def from_http(headers: Iterable[tuple[str, str]], body: bytes) -> list[Event]:
    """The events a request carries in any of the binding's three modes, told apart by the
    content type (binary mode: any other, with a `ce-specversion` header); InvalidEvent naming
    the attribute otherwise."""
    content_type: str | None = None
    attributes: list[tuple[str, bytes]] = []
    key: bytes | None = None
    for name, raw in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = raw
        elif lower.startswith("ce-"):
            text = decode_header(lower[3:], raw)
            if lower == "ce-" + PARTITIONKEY:
                key = text.encode()
            else:
                attributes.append(("ce_" + lower[3:], text.encode()))
    kind = media_type(content_type)
    if kind == STRUCTURED_CONTENT_TYPE:
        return [from_json(body)]
    if kind == BATCH_CONTENT_TYPE:
        return from_batch(body)
    if not attributes:
        raise InvalidEvent(
            "specversion",
            f"a binary-mode event needs ce-* headers (or send Content-Type {STRUCTURED_CONTENT_TYPE}"
            f" or {BATCH_CONTENT_TYPE})",
        )
    if content_type is not None:
        attributes.append(("content-type", content_type.encode()))
    if ("ce_specversion", b"1.0") not in attributes:
        raise InvalidEvent("specversion", "the ce-specversion header must be 1.0")
    # an empty body is no data, but for a content type that is not JSON: then it is empty data
    data = body if body or not is_json_content_type(content_type) else None
    return [from_binary(key, attributes, data)]
