"""The log and group contract suites on a real Apache Kafka broker."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from inmotion.errors import InmotionError
from inmotion.log import Log
from inmotion.log.kafka.groups import handled_topic
from inmotion.testing import GroupContract, LogContract, unique_topic

pytestmark = pytest.mark.kafka


class TestKafkaLog(LogContract):
    """Fixtures `log` and `log_url` come from tests/kafka/conftest.py (a fresh log per test)."""

    manual_retention = False


class TestKafkaGroups(GroupContract):
    """Kafka's group protocol keeps the sessions, on the broker's clock."""

    fake_clock = False

    @pytest.fixture
    def group(self, log: Log) -> Iterator[str]:
        name = unique_topic("group")
        yield name
        for used in (name, f"{name}-other"):
            with contextlib.suppress(InmotionError):  # the group's dedupe records, if a test made them
                log.delete_topic(handled_topic(used))
