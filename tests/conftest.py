"""Shared fixtures. A real Kafka broker for the tests marked `kafka`: `scripts/kafka up` starts
one on 127.0.0.1:KAFKA_PORT. Without a broker those tests skip, unless INMOTION_REQUIRE_KAFKA=1
(CI, `scripts/test`), where they fail.
"""

from __future__ import annotations

import os
import socket

import pytest

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
