"""Running the gateway (and an app's `/metrics`) on uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from inmotion.errors import InvalidConfig
from inmotion.gateway.app import Settings, create_app
from inmotion.log import Log

_GRACE = 5
"""Seconds open streams get to end when the server stops."""
_YOUNG_OBJECTS = 5000
"""Python's first-generation collection threshold in the gateway (default 700)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port); InvalidConfig naming the address when it cannot."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and with
        # Nagle's algorithm on, a response in two writes waits for the client's delayed ACK
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        raise InvalidConfig(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(
    log: str | Log | None,
    host: str,
    port: int,
    settings: Settings,
    *,
    log_level: str = "info",
    listening: Callable[[str], None] | None = None,
) -> None:
    """Run the gateway until SIGTERM or Ctrl-C; `listening` is told its URL once it listens."""
    if not settings.auth and not is_loopback(host):
        raise InvalidConfig(f"--insecure-no-auth serves only on a loopback address (127.0.0.1), not on {host}")
    sock = listen(host, port)
    if listening is not None:
        listening(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")
    app = create_app(log, settings)
    collect_less()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=_GRACE,
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def collect_less() -> None:
    """Set the garbage collector for a server that is ready: what it holds now (modules, the
    app) goes to the permanent generation, which full collections no longer scan; and the
    first generation is collected after 5,000 more allocations than deallocations, not 700.
    The objects of the requests in flight (some 30 each) set off a collection every few
    dozen requests at 700, each scanning them all: 8 us of the 116 us a single-event POST
    cost, with a full collection every few thousand. They are freed by reference counting
    long before 5,000 accumulate."""
    gc.freeze()
    gc.set_threshold(_YOUNG_OBJECTS, *gc.get_threshold()[1:])


class _Embedded(uvicorn.Server):
    """A server inside a process that handles its signals itself (an App's `run`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_metrics(metrics: Callable[[], str], host: str, port: int) -> Callable[[], Coroutine[Any, Any, None]]:
    """A background task for an app that serves `GET /metrics` (what `metrics()` returns, in
    the Prometheus text format) until cancelled. Listens at once: InvalidConfig if it cannot."""
    sock = listen(host, port)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(metrics(), media_type="text/plain; version=0.0.4")

    app = Starlette(routes=[Route("/metrics", endpoint)])
    server = _Embedded(uvicorn.Config(app, log_level="warning", lifespan="off", server_header=False))

    async def run() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True  # close the socket and the open connections
            await serving
            raise

    return run
