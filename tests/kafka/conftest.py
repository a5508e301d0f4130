"""The Kafka log under test, on the broker of the root conftest's `kafka_bootstrap`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import inmotion
from inmotion.log import Log


@pytest.fixture
def log_url(kafka_bootstrap: str) -> str:
    return f"kafka://{kafka_bootstrap}?timeout=15"


@pytest.fixture
def log(log_url: str) -> Iterator[Log]:
    with inmotion.connect(log_url) as log:
        yield log
