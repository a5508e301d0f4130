"""Who may do what: the bearer token of each request, checked against its grant, and each
token's rate limit."""

from __future__ import annotations

import dataclasses

from starlette.requests import HTTPConnection

from inmotion.clock import Clock
from inmotion.gateway.problems import Problem
from inmotion.gateway.tokens import Action, Grant, Tokens

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="inmotion"'}


@dataclasses.dataclass(slots=True)
class _Bucket:
    """A token bucket: `rate` requests a second, bursts of up to twice that."""

    level: float
    updated: float


class Auth:
    """`tokens` None: every request is allowed (`inmotion serve --insecure-no-auth`)."""

    def __init__(self, tokens: Tokens | None, clock: Clock) -> None:
        self.tokens = tokens
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, request: HTTPConnection, action: Action | None, topic: str | None = None) -> Grant | None:
        """The request's grant if it may `action` on `topic` (None: administer); raises the
        Problem to answer otherwise (401, 403, 429)."""
        if self.tokens is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if not header:
            raise Problem(401, "this request needs a token: send 'Authorization: Bearer <token>'", headers=_CHALLENGE)
        if scheme.lower() != "bearer" or not secret.strip():
            raise Problem(401, "the Authorization header must be 'Bearer <token>'", headers=_CHALLENGE)
        grant = self.tokens.find(secret.strip())
        if grant is None:
            raise Problem(401, "unknown or revoked token", headers=_CHALLENGE)
        if action is None:
            if not grant.admin:
                raise Problem(403, f"token {grant.name!r} may not use the admin API (create one with --admin)")
        elif topic is not None and not grant.allows(action, topic):
            raise Problem(403, f"token {grant.name!r} may not {action} to topic {topic!r}", topic=topic)
        self._limit(grant)
        return grant

    def _limit(self, grant: Grant) -> None:
        if grant.rate is None:
            return
        now = self.clock.time()
        capacity = 2 * grant.rate
        bucket = self._buckets.get(grant.name)
        if bucket is None:
            bucket = self._buckets[grant.name] = _Bucket(capacity, now)
        bucket.level = min(capacity, bucket.level + (now - bucket.updated) * grant.rate)
        bucket.updated = now
        if bucket.level < 1:
            wait = (1 - bucket.level) / grant.rate
            raise Problem(
                429,
                f"token {grant.name!r} is limited to {grant.rate:g} requests a second",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        bucket.level -= 1
