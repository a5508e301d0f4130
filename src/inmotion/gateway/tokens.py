"""Access tokens: what each may publish and subscribe to, and whether it may administer.

A token is shown once, when created; the log keeps only its SHA-256 digest (a token is 32
random bytes, so a plain digest cannot be reversed by guessing), as the newest record per
token name on the compacted topic `inmotion.tokens`: on SQLite in the log's file, and every
gateway sharing the log sees a token created or revoked by any of them."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec

from inmotion.errors import InvalidConfig, TopicExists, UnknownTopic
from inmotion.log import Log, Message, TopicConfig

TOKENS_TOPIC = "inmotion.tokens"
_PREFIX = "imt_"
_REFRESH = 1.0
"""Seconds a gateway trusts what it read of the tokens topic: a revoked token is refused
within this long by every gateway."""

_MISS_REFRESH = 0.05
"""Seconds between reads for a token not found (one created a moment ago)."""

Action = Literal["publish", "subscribe"]


class Grant(msgspec.Struct, frozen=True):
    """What a token may do. Topic patterns use shell wildcards (`orders.*`, `*`)."""

    name: str
    digest: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    admin: bool = False
    rate: float | None = None
    """Requests per second the token may make (bursts up to twice that), None for no limit."""
    created: str = ""

    def allows(self, action: Action, topic: str) -> bool:
        if self.admin:
            return True
        return _matches(self.publish if action == "publish" else self.subscribe, topic)

    def document(self) -> dict[str, object]:
        """What `tokens list` and the admin API show: everything but the digest."""
        return {
            "name": self.name,
            "publish": list(self.publish),
            "subscribe": list(self.subscribe),
            "admin": self.admin,
            "rate": self.rate,
            "created": self.created,
        }


@functools.lru_cache(maxsize=4096)
def _matches(patterns: tuple[str, ...], topic: str) -> bool:
    """Whether `topic` matches one of `patterns`: remembered, as every request asks it again."""
    return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """The tokens of a log, read from its tokens topic (and read again at most every second)."""

    def __init__(self, log: Log, refresh: float = _REFRESH) -> None:
        self.log = log
        self.refresh = refresh
        self._lock = threading.Lock()
        self._by_name: dict[str, Grant] = {}
        self._by_digest: dict[str, Grant] = {}
        self._next = 0
        self._checked = -float("inf")

    def create(
        self,
        name: str,
        *,
        publish: Sequence[str] = (),
        subscribe: Sequence[str] = (),
        admin: bool = False,
        rate: float | None = None,
    ) -> tuple[str, Grant]:
        """A new token named `name` (not in use) and its grant; the token is not kept anywhere."""
        if not name or not name.isprintable() or len(name) > 200:
            raise InvalidConfig(f"a token name is 1 to 200 printable characters, got {name!r}")
        if not (publish or subscribe or admin):
            raise InvalidConfig("a token needs --publish, --subscribe or --admin: it would allow nothing")
        for pattern in (*publish, *subscribe):
            if not pattern or not pattern.isprintable():
                raise InvalidConfig(f"invalid topic pattern {pattern!r}")
        if rate is not None and not rate > 0:
            raise InvalidConfig(f"--rate must be positive, got {rate!r}")
        self._ensure_topic()
        self._read()
        if name in self._by_name:
            raise InvalidConfig(f"token {name!r} exists (revoke it first: inmotion tokens revoke {name})")
        secret = _PREFIX + secrets.token_urlsafe(32)
        grant = Grant(
            name=name,
            digest=digest(secret),
            publish=tuple(publish),
            subscribe=tuple(subscribe),
            admin=admin,
            rate=rate,
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )
        self.log.append(TOKENS_TOPIC, [Message(msgspec.json.encode(grant), name.encode())])
        self._read()
        return secret, grant

    def revoke(self, name: str) -> Grant:
        self._read()
        grant = self._by_name.get(name)
        if grant is None:
            raise InvalidConfig(f"no token named {name!r} (list them with: inmotion tokens list)")
        self.log.append(TOKENS_TOPIC, [Message(None, name.encode())])  # a tombstone
        self._read()
        return grant

    def list(self) -> list[Grant]:
        self._read()
        return sorted(self._by_name.values(), key=lambda grant: grant.name)

    def find(self, secret: str) -> Grant | None:
        """The grant of a presented token, or None for one that is unknown or revoked."""
        self._read(within=self.refresh)
        found = self._by_digest.get(digest(secret))
        if found is None:  # maybe created a moment ago: look again (unknown tokens cannot make it read often)
            self._read(within=_MISS_REFRESH)
            found = self._by_digest.get(digest(secret))
        return found

    def _ensure_topic(self) -> None:
        with contextlib.suppress(TopicExists):
            self.log.create_topic(TOKENS_TOPIC, TopicConfig(partitions=1, compact=True))

    def _read(self, within: float = 0.0) -> None:
        """Take in the records appended since the last read, unless that was `within` seconds ago."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < within:
                return
            self._checked = now
            try:
                end = self.log.latest_offset(TOKENS_TOPIC, 0)
            except UnknownTopic:
                return  # no token was ever created
            offset = max(self._next, self.log.earliest_offset(TOKENS_TOPIC, 0))
            while offset < end:
                records = self.log.read(TOKENS_TOPIC, 0, offset, 1000)
                if not records:
                    break
                for record in records:
                    self._apply(record.key, record.value)
                offset = records[-1].offset + 1
            self._next = offset

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode()
        old = self._by_name.pop(name, None)
        if old is not None:
            self._by_digest.pop(old.digest, None)
        if value is not None:
            grant = msgspec.json.decode(value, type=Grant)
            self._by_name[name] = self._by_digest[grant.digest] = grant
