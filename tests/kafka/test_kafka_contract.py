"""The log contract suite on a real Apache Kafka broker."""

from __future__ import annotations

import pytest

from inmotion.testing import LogContract

pytestmark = pytest.mark.kafka


class TestKafkaLog(LogContract):
    """Fixtures `log` and `log_url` come from tests/kafka/conftest.py (a fresh log per test)."""

    manual_retention = False
