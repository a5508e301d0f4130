"""Shared fixtures. A real Kafka broker for the tests marked `kafka`: `scripts/kafka up` starts
one on 127.0.0.1:KAFKA_PORT. Without a broker those tests skip, unless INMOTION_REQUIRE_KAFKA=1
(CI, `scripts/test`), where they fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.errors import InmotionError
from inmotion.log import connect

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"


@pytest.fixture(autouse=True)
def _no_ambient_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their broker explicitly; a developer's INMOTION_BROKER must not leak in."""
    if "INMOTION_BROKER" in os.environ:
        monkeypatch.delenv("INMOTION_BROKER")


def broker_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", KAFKA_PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if not broker_listening():
        reason = f"no Kafka broker on {BOOTSTRAP}: start one with scripts/kafka up"
        if os.environ.get("INMOTION_REQUIRE_KAFKA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return BOOTSTRAP


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a test runs: a backend's URL and the topic and group names to use there."""

    backend: str
    url: str
    topic: str
    group: str


@pytest.fixture(params=["sqlite", pytest.param("kafka", marks=pytest.mark.kafka)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """The same test on a SQLite file and on the real Kafka broker (fresh topic and group names
    there, the topic deleted afterwards)."""
    if request.param == "sqlite":
        yield Place("sqlite", f"sqlite:///{tmp_path / 'log.db'}", "orders", "billing")
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    suffix = uuid.uuid4().hex[:8]
    place = Place("kafka", f"kafka://{bootstrap}?timeout=15", f"orders-{suffix}", f"billing-{suffix}")
    yield place
    with connect(place.url) as log:
        for topic in log.list_topics():
            if suffix in topic:
                with contextlib.suppress(InmotionError):
                    log.delete_topic(topic)
