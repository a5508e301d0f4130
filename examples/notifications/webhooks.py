"""Three webhook receivers on one local HTTP server: e-mail, SMS and chat, as a provider's API
would be. Each records the CloudEvents it receives (binary mode); the chat one answers 503
while it is `down` (an outage), until `POST /chat/up`."""

from __future__ import annotations

import dataclasses
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inmotion.events.http import from_http
from inmotion.gateway.server import listen


@dataclasses.dataclass
class Webhooks:
    received: dict[str, list[dict[str, object]]] = dataclasses.field(
        default_factory=lambda: {"email": [], "sms": [], "chat": []}
    )
    refused: int = 0
    chat_down: bool = True
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            channel = request.path_params["channel"]
            if channel not in self.received:
                return Response(status_code=404)
            if channel == "chat" and self.chat_down:
                with self.lock:
                    self.refused += 1
                return Response("chat is down for maintenance", status_code=503)
            [event] = from_http(request.headers.items(), await request.body())
            with self.lock:
                self.received[channel].append({"type": event.type, "id": event.id, **dict(event.data)})
            return Response(status_code=204)

        async def chat_up(request: Request) -> Response:
            self.chat_down = False
            return JSONResponse({"chat": "up"})

        return Starlette(
            routes=[Route("/chat/up", chat_up, methods=["POST"]), Route("/{channel}", receive, methods=["POST"])]
        )

    def count(self, channel: str) -> int:
        with self.lock:
            return len(self.received[channel])

    def start(self) -> str:
        """Serve on a free local port in a thread of its own; returns the base URL."""
        sock = listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning", lifespan="off"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="webhooks").start()
        return f"http://127.0.0.1:{port}"
