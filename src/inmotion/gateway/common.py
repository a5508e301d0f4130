"""What the gateway's endpoints share: the gateway behind a request, its body within the size
limit, and a way to call the log off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request

from inmotion.errors import InvalidEvent
from inmotion.events.codec import decode_json_document
from inmotion.gateway.problems import Problem

if TYPE_CHECKING:
    from inmotion.gateway.app import Gateway

T = TypeVar("T")


def gateway_of(request: HTTPConnection) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def admin_of(request: HTTPConnection) -> Gateway:
    """The gateway, for a request that must carry an admin token (raises the Problem otherwise)."""
    gateway = gateway_of(request)
    gateway.auth.check(request, None)
    return gateway


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a call that may wait for the log (a lock, the network) off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


async def read_body(request: Request) -> bytes:
    """The request's body; 413 past the gateway's limit, read no further."""
    limit = gateway_of(request).settings.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the body has {declared} bytes, more than the {limit} a request may carry")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the body is larger than the {limit} bytes a request may carry")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is an empty object)."""
    body = await read_body(request)
    try:
        document = decode_json_document(body or b"{}")
    except InvalidEvent as exc:
        raise Problem(400, f"the body is not JSON: {exc.problem}") from None
    if not isinstance(document, dict):
        raise Problem(400, "the body must be a JSON object")
    return document
