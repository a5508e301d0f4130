"""The durable log: the contract, its records and `connect(url)` to pick a backend.

`memory://` (tests), `sqlite:///path/to/file.db` (the embedded default) and
`kafka://host:port[,host:port]` (Apache Kafka, needs the `kafka` extra): one package each under
`inmotion/log/`, chosen by URL scheme (`registry`). Nothing outside a backend's package imports
it; the contracts it implements are here: `Log` (base), consumer groups (groups) and, in
`inmotion.sourcing`, the event store's recorder.
"""

from __future__ import annotations

import os

from inmotion.log.base import (
    Log,
    Message,
    PartitionInfo,
    Position,
    Record,
    TopicConfig,
    TopicInfo,
)
from inmotion.log.groups import (
    DEFAULT_SESSION_TIMEOUT,
    Assignment,
    Coordinator,
    Key,
    MemberInfo,
    Membership,
    TopicPartition,
    Transaction,
)
from inmotion.log.partitioner import murmur2, partition_for_key
from inmotion.log.registry import backend_for, register_backend

DEFAULT_BROKER = "sqlite:///./inmotion.db"

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_SESSION_TIMEOUT",
    "Assignment",
    "Coordinator",
    "Key",
    "Log",
    "MemberInfo",
    "Membership",
    "Message",
    "PartitionInfo",
    "Position",
    "Record",
    "TopicConfig",
    "TopicInfo",
    "TopicPartition",
    "Transaction",
    "connect",
    "default_broker",
    "murmur2",
    "partition_for_key",
    "register_backend",
]


def default_broker() -> str:
    """`INMOTION_BROKER` if set, else the embedded default."""
    return os.environ.get("INMOTION_BROKER") or DEFAULT_BROKER


def connect(url: str | None = None, *, create: bool = True) -> Log:
    """Open the log that `url` names (default: `INMOTION_BROKER`, else ./inmotion.db). With
    `create=False` an embedded log that does not exist yet is a StorageError, not a new log."""
    url = url or default_broker()
    backend, parts, options = backend_for(url)
    log: Log = backend.open_log(url, parts, options, create=create)
    return log
