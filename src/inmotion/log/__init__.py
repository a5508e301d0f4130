"""The durable log: the contract, its records and `connect(url)` to pick a backend.

`memory://` (tests), `sqlite:///path/to/file.db` (the embedded default) and
`kafka://host:port[,host:port]` (Apache Kafka, needs the `kafka` extra).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from inmotion.errors import InvalidConfig
from inmotion.log.base import (
    Log,
    Message,
    PartitionInfo,
    Position,
    Record,
    TopicConfig,
    TopicInfo,
)
from inmotion.log.partitioner import murmur2, partition_for_key

DEFAULT_BROKER = "sqlite:///./inmotion.db"

__all__ = [
    "DEFAULT_BROKER",
    "Log",
    "Message",
    "PartitionInfo",
    "Position",
    "Record",
    "TopicConfig",
    "TopicInfo",
    "connect",
    "default_broker",
    "murmur2",
    "partition_for_key",
]


def default_broker() -> str:
    """`INMOTION_BROKER` if set, else the embedded default."""
    return os.environ.get("INMOTION_BROKER") or DEFAULT_BROKER


def connect(url: str | None = None) -> Log:
    """Open the log that `url` names (default: `INMOTION_BROKER`, else ./inmotion.db)."""
    url = url or default_broker()
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.scheme == "memory":
        from inmotion.log.memory import MemoryLog

        return MemoryLog(url)
    if parts.scheme == "sqlite":
        from inmotion.log.sqlite import SqliteLog

        return SqliteLog.from_url(url, parts.path, options)
    if parts.scheme == "kafka":
        try:
            from inmotion.log.kafka import KafkaLog  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            if "confluent_kafka" in str(exc):
                raise InvalidConfig("the kafka backend needs confluent-kafka: pip install 'inmotion[kafka]'") from exc
            raise
        return KafkaLog.from_url(url, parts.netloc, options)  # type: ignore[no-any-return,unused-ignore]
    raise InvalidConfig(f"unknown broker URL {url!r}: use memory://, sqlite:///path/to/file.db or kafka://host:port")
