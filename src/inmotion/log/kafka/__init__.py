"""`kafka://host:port[,host:port]`: Apache Kafka through confluent-kafka (the `kafka` extra).
Consumer groups are Kafka's own group protocol; events travel in the CloudEvents Kafka binary
binding, so consumers in other languages read them without inmotion."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import SplitResult

from inmotion.log.kafka.log import KafkaLog

__all__ = ["KafkaLog", "open_log"]


def open_log(url: str, parts: SplitResult, options: Mapping[str, str], *, create: bool = True) -> KafkaLog:
    return KafkaLog.from_url(url, parts.netloc, options)
