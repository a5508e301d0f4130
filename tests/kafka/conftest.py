"""A real broker for the Kafka tests: `scripts/kafka up` starts one on 127.0.0.1:KAFKA_PORT.

Without a broker the tests skip, unless INMOTION_REQUIRE_KAFKA=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

import inmotion
from inmotion.log import Log

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"


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


@pytest.fixture
def log_url(kafka_bootstrap: str) -> str:
    return f"kafka://{kafka_bootstrap}?timeout=15"


@pytest.fixture
def log(log_url: str) -> Iterator[Log]:
    with inmotion.connect(log_url) as log:
        yield log
