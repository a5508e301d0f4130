"""Backend-neutral errors: user code catches these, never a driver's own exceptions."""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "Closed",
    "ConcurrencyError",
    "CorruptRecord",
    "InmotionError",
    "InvalidConfig",
    "InvalidEvent",
    "InvalidPattern",
    "InvalidSql",
    "NotAuthorized",
    "StorageError",
    "TopicExists",
    "UnknownPartition",
    "UnknownTopic",
]


class InmotionError(Exception):
    """Base class of every error inmotion raises on purpose."""


class InvalidEvent(InmotionError, ValueError):
    """An event that breaks the CloudEvents 1.0 rules; `attribute` names the culprit, `index` the
    event's place in a batch (from 0) when it came in one."""

    def __init__(self, attribute: str, problem: str, index: int | None = None) -> None:
        which = "invalid event" if index is None else f"invalid event at index {index} of the batch"
        where = "" if attribute.startswith("<") else f"{attribute}: "
        super().__init__(f"{which}: {where}{problem}")
        self.attribute = attribute
        self.problem = problem
        self.index = index


class InvalidPattern(InmotionError, ValueError):
    """An event pattern that EventBridge would reject; `path` locates the problem."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"invalid pattern at {path or '<root>'}: {problem}")
        self.path = path
        self.problem = problem


class InvalidSql(InmotionError, ValueError):
    """SQL that cannot be read, or a construct the engine does not support, at `line`:`column`
    (1-based; 0 when the position is unknown)."""

    def __init__(self, problem: str, line: int = 0, column: int = 0) -> None:
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{problem}{where}")
        self.problem = problem
        self.line = line
        self.column = column


class InvalidConfig(InmotionError, ValueError):
    """A bad argument: a broker URL, a topic setting, a duration."""


class UnknownTopic(InmotionError, LookupError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown topic {topic!r}")
        self.topic = topic


class TopicExists(InmotionError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} already exists")
        self.topic = topic


class UnknownPartition(InmotionError, LookupError):
    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"topic {topic!r} has no partition {partition}")
        self.topic = topic
        self.partition = partition


class StorageError(InmotionError):
    """The log's storage cannot be used: locked, unreadable, corrupt, full."""


class CorruptRecord(StorageError):
    """Stored records that cannot be decoded: offsets `first` to `last` of a partition (a batch
    of them, on SQLite), damaged in a way the storage's own checks do not see (a flipped bit in
    a record's bytes passes SQLite's `PRAGMA integrity_check`). `raw` holds their stored bytes,
    for a dead-letter topic."""

    def __init__(self, topic: str, partition: int, first: int, last: int, problem: str, raw: bytes = b"") -> None:
        where = f"{topic}/{partition}@{first}" + ("" if last == first else f"-{last}")
        super().__init__(f"corrupt record{'' if last == first else 's'} {where}: {problem}")
        self.topic = topic
        self.partition = partition
        self.first = first
        self.last = last
        self.problem = problem
        self.raw = raw


class NotAuthorized(InmotionError, PermissionError):
    """The broker refused: the client is not authenticated or not authorized for this."""


class BrokerUnavailable(InmotionError):
    """The broker cannot be reached within the allowed time."""


class ConcurrencyError(InmotionError):
    """An optimistic-concurrency check failed: somebody else wrote first."""


class Closed(InmotionError):
    """The object was used after close()."""
