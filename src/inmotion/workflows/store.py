"""Where workflow instances live: one row per instance (its status, shard and due time, for
queries) and its history (every step result, timer, wait, received event and compensation, in
order), written together in one transaction.

`WorkflowRecorder` is the contract, one implementation per backend (`memory://`, and SQLite,
which keeps its tables in the log's file), opened by URL. A write names the history version it
expects, like an event store's append: a worker that lost an instance to another one cannot
record anything more for it. Writes of many instances go in one transaction (`write`), so a
worker running thousands of instances pays for few commits.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import msgspec

from inmotion.errors import InvalidConfig
from inmotion.log.registry import backend_for

ACTIVE = ("running", "sleeping", "waiting", "compensating")
"""Statuses of instances that a worker runs (or will run once it owns their shard)."""
FINISHED = ("completed", "failed", "compensated", "compensation_failed")
STATUSES = ACTIVE + FINISHED


class Instance(msgspec.Struct, frozen=True, gc=False):
    """One workflow instance as stored: `key` is `<workflow>/<id>`. (Scalars only: the
    garbage collector need not track the thousands a worker holds.)"""

    key: str
    workflow: str
    id: str
    correlation: str
    """The correlation id of the events it publishes and receives."""
    shard: int
    """The partition of the workflows' inbox topic that its events go to: its owner's."""
    status: str
    input: bytes
    version: int
    """How many history entries it has."""
    created_ms: int
    updated_ms: int
    wake_ms: int | None = None
    """When the timer or timeout it waits for is due."""
    error: str | None = None
    result: bytes | None = None


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One history entry. `seq` is the position of the workflow's command it belongs to (its
    n-th step, sleep or wait), 0 for what is not a command's (received events, lifecycle)."""

    version: int
    kind: str
    seq: int
    name: str
    payload: bytes
    recorded_ms: int


class NewEntry(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    seq: int = 0
    name: str = ""
    payload: bytes = b"null"


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """New entries for an instance at `expected_version`, and its row's new fields."""

    key: str
    expected_version: int
    entries: Sequence[NewEntry]
    status: str
    wake_ms: int | None = None
    error: str | None = None
    result: bytes | None = None
    at_ms: int = 0
    """When, on the app's clock (0: now by the wall clock)."""


class WorkflowRecorder(abc.ABC):
    """What a backend stores for workflows. Implementations are thread-safe."""

    @abc.abstractmethod
    def create(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance:
        """Store a new instance with its first entries; if its key exists, write nothing and
        return the stored instance."""

    @abc.abstractmethod
    def write(self, changes: Sequence[Change]) -> set[str]:
        """Apply the changes in one transaction; the keys of those whose instance was not at
        the expected version (nothing of them is written)."""

    def create_now(self, instance: Instance, entries: Sequence[NewEntry]) -> Instance | None:
        """`create` if it can be done without waiting for a lock (or the disk), else None:
        callers on an event loop try this before handing the write to a thread."""
        return None

    def write_now(self, changes: Sequence[Change]) -> set[str] | None:
        """`write` if it can be done without waiting for a lock (or the disk), else None."""
        return None

    @abc.abstractmethod
    def load(self, key: str) -> tuple[Instance, list[Entry]] | None:
        """The instance and its whole history, or None."""

    @abc.abstractmethod
    def instances(
        self,
        *,
        statuses: Sequence[str] = STATUSES,
        shard: int | None = None,
        correlation: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        """Instances in these statuses (of one shard, or of one correlation id), oldest first."""

    @abc.abstractmethod
    def count(self, *, statuses: Sequence[str], shard: int) -> int:
        """How many instances of the shard are in these statuses."""

    @abc.abstractmethod
    def close(self) -> None: ...


def open_workflow_recorder(url: str) -> WorkflowRecorder:
    """The recorder a URL names (`memory://`, `sqlite:///path/to/file.db`)."""
    backend, parts, options = backend_for(url)
    opener = getattr(backend, "open_workflow_recorder", None)
    if opener is None:
        raise InvalidConfig(
            f"workflow state cannot live on {parts.scheme}://: set INMOTION_WORKFLOW_STORE=sqlite:///path/to/file.db"
        )
    recorder: WorkflowRecorder = opener(url, parts, options)
    return recorder
