"""The gateway: CloudEvents over HTTP for any language (publish, Server-Sent Events with
consumer groups), the admin API, tokens, Prometheus metrics; `inmotion serve` runs it."""

from inmotion.gateway.app import Gateway, Settings, create_app
from inmotion.gateway.server import serve, serve_metrics
from inmotion.gateway.tokens import Grant, Tokens

__all__ = ["Gateway", "Grant", "Settings", "Tokens", "create_app", "serve", "serve_metrics"]
