"""Where a SQL job's checkpoints live, the contract: a backend keeps them beside its log.

A checkpoint is written in one transaction with the results it appends to the sinks' topics:
the sources' next offsets (in the log's one table of positions, kind 'sql'), the state entries
changed since the previous checkpoint (incremental), and the engine's progress (watermarks,
counters). After a crash the job resumes from its last checkpoint: the results appended since
are those of the state and offsets saved with them, so none is lost or appended twice.

A job has an epoch: starting a job takes the next one, and a checkpoint of an older epoch is
refused (`JobTakenOver`), so a second process running the same job fences out the first
rather than appending its results twice."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence

from inmotion.errors import InmotionError, InvalidConfig
from inmotion.log import Log, Message, TopicConfig
from inmotion.log.registry import backend_for

KIND = "sql"
"""The kind of the jobs' entries in the positions table."""


class JobTakenOver(InmotionError):
    """Another process started the same job: this one must stop (its checkpoint is refused)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A query's read positions in one topic: next offset by partition."""

    tracker: str
    topic: str
    offsets: Mapping[int, int]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    epoch: int
    """The epoch this run holds (taken by `claim`)."""
    sequence: int
    """How many checkpoints the job has made."""
    positions: Mapping[str, Mapping[int, int]]
    """By tracker: the next offset to read, by partition."""
    progress: bytes
    """The engine's own record (watermarks, counters), empty for a new job."""
    state: Mapping[tuple[int, bytes], bytes]
    """By (operator, key): the state entries."""


@dataclasses.dataclass(frozen=True)
class JobInfo:
    name: str
    status: str
    """running, stopped or failed."""
    owner: str
    """`host:pid` of the process that last started it."""
    epoch: int
    sequence: int
    updated_ms: int
    progress: bytes
    positions: Mapping[str, tuple[str, Mapping[int, int]]]
    """By tracker: (topic, next offset by partition)."""
    error: str | None = None


class Checkpoints(abc.ABC):
    @abc.abstractmethod
    def claim(self, job: str, script: str, owner: str) -> Checkpoint:
        """Start `job` (whose SQL hashes to `script`): take its next epoch, and return its last
        checkpoint (sequence 0, nothing in it, for a new job). A job started before from other
        SQL is an `InvalidConfig`: its state would not fit (reset it first)."""

    @abc.abstractmethod
    def save(
        self,
        job: str,
        epoch: int,
        sequence: int,
        sources: Sequence[Source],
        state: Mapping[tuple[int, bytes], bytes | None],
        progress: bytes,
        results: Sequence[tuple[str, Sequence[Message], TopicConfig]],
    ) -> None:
        """Checkpoint `sequence`, all or nothing: append `results` (topic, messages, and the
        config a missing topic is created with), set the state entries (None deletes one), the sources'
        offsets and the progress. `JobTakenOver` if the job's epoch is no longer `epoch`."""

    @abc.abstractmethod
    def finish(self, job: str, epoch: int, status: str, error: str | None = None) -> None:
        """Record that the run of `epoch` ended (stopped or failed); nothing if taken over."""

    @abc.abstractmethod
    def jobs(self) -> list[JobInfo]:
        """Every job with a checkpoint store entry, by name."""

    @abc.abstractmethod
    def reset(self, job: str) -> bool:
        """Forget the job: its state, positions and progress (it starts anew). False: unknown."""


def open_checkpoints(log: Log) -> Checkpoints:
    """The checkpoints beside `log`, by its backend."""
    backend, _, _ = backend_for(log.url)
    opener = getattr(backend, "open_checkpoints", None)
    if opener is None:
        raise InvalidConfig(
            f"the embedded SQL engine keeps its checkpoints in the log, and {log.url.split(':')[0]}:// has"
            " no place for them yet: run jobs on sqlite:// (or on Apache Flink)"
        )
    checkpoints: Checkpoints = opener(log)
    return checkpoints
