"""HTTP targets: a CloudEvent POSTed in the HTTP binding (binary or structured mode) over
kept-alive connections, one per host and thread.

A 2xx is a delivery. Anything else is a failure named after what the server answered
(`HTTP 503 Service Unavailable`): a redirect is never followed (the target's headers,
credentials among them, must not reach another host, and a POST must not turn into a GET),
so a 3xx fails like a 5xx, 408 or 429 and is tried again; any other 4xx is
`DeliveryRejected`, which another try will not fix.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from typing import Literal

from inmotion.errors import InmotionError, InvalidEvent
from inmotion.events import Event
from inmotion.events.http import to_http

_RETRIED_CLIENT_ERRORS = frozenset({408, 429})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
"""How a kept-alive connection that the server has closed meanwhile fails."""


class DeliveryFailed(InmotionError):
    """A target did not take the event; another try may succeed."""


class DeliveryRejected(DeliveryFailed):
    """A target refused the event for good (an HTTP 4xx): it is dead-lettered without retries."""


def request_of(event: Event, mode: Literal["binary", "structured"]) -> tuple[dict[str, str], bytes]:
    """The headers and body that carry `event` in the HTTP binding; DeliveryRejected when its
    content type cannot be an HTTP header."""
    try:
        return to_http(event, mode)
    except InvalidEvent as exc:
        raise DeliveryRejected(str(exc)) from None


class HttpClient:
    """POSTs events, keeping one connection per (scheme, host, port) in each thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

    def post(
        self,
        url: str,
        event: Event,
        *,
        mode: Literal["binary", "structured"] = "binary",
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Deliver `event` to `url`; raises DeliveryFailed (or DeliveryRejected), TimeoutError
        or the connection's OSError otherwise."""
        parts = urllib.parse.urlsplit(url)
        ce_headers, body = request_of(event, mode)
        sent = {**(headers or {}), **ce_headers}
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection, reused = self._connection(parts, timeout)
        try:
            try:
                status, reason = self._exchange(connection, path, sent, body)
            except _STALE:
                if not reused:
                    raise
                self._drop(parts, connection)  # the server closed it while idle: one fresh try
                connection, _ = self._connection(parts, timeout)
                status, reason = self._exchange(connection, path, sent, body)
        except BaseException:
            self._drop(parts, connection)
            raise
        if 200 <= status < 300:
            return
        answer = f"HTTP {status} {reason}".rstrip() + f" from {url}"
        if 300 <= status < 400:
            raise DeliveryFailed(f"{answer}: redirects are not followed")
        if 400 <= status < 500 and status not in _RETRIED_CLIENT_ERRORS:
            raise DeliveryRejected(answer)
        raise DeliveryFailed(answer)

    @staticmethod
    def _exchange(
        connection: http.client.HTTPConnection, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str]:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()  # the whole answer, so the connection can carry the next request
        if response.will_close:
            connection.close()  # the next request opens a new one
        return response.status, response.reason

    def _connection(self, parts: urllib.parse.SplitResult, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        connections: dict[tuple[str, str], http.client.HTTPConnection] | None = getattr(
            self._local, "connections", None
        )
        if connections is None:
            connections = self._local.connections = {}
        place = (parts.scheme, parts.netloc)
        connection = connections.get(place)
        if connection is not None:
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            return connection, connection.sock is not None
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connections[place] = kind(parts.hostname or "", parts.port, timeout=timeout)
        with self._lock:
            self._open.add(connection)
        return connection, False

    def _drop(self, parts: urllib.parse.SplitResult, connection: http.client.HTTPConnection) -> None:
        connection.close()
        connections = getattr(self._local, "connections", {})
        if connections.get((parts.scheme, parts.netloc)) is connection:
            del connections[(parts.scheme, parts.netloc)]
        with self._lock:
            self._open.discard(connection)

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            for connection in self._open:
                connection.close()
            self._open.clear()
