"""`memory://`: the log, its consumer groups, the event store and workflow instances in this
process's memory, for tests; the same rules as the other backends (the contract suites check it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

from inmotion.log.memory.groups import MemoryCoordinator
from inmotion.log.memory.log import MemoryLog

if TYPE_CHECKING:
    from inmotion.sourcing.store import Recorder
    from inmotion.streams.checkpoints import Checkpoints
    from inmotion.workflows.store import WorkflowRecorder

__all__ = ["MemoryCoordinator", "MemoryLog", "open_checkpoints", "open_log", "open_recorder", "open_workflow_recorder"]


def open_log(url: str, parts: SplitResult, options: Mapping[str, str], *, create: bool = True) -> MemoryLog:
    return MemoryLog(url)


def open_recorder(url: str, parts: SplitResult, options: Mapping[str, str]) -> Recorder:
    from inmotion.log.memory.store import MemoryRecorder  # the event store's layer, loaded when used

    return MemoryRecorder()


def open_workflow_recorder(url: str, parts: SplitResult, options: Mapping[str, str]) -> WorkflowRecorder:
    from inmotion.log.memory.workflows import MemoryWorkflowRecorder  # the workflows' layer, loaded when used

    return MemoryWorkflowRecorder()


def open_checkpoints(log: MemoryLog) -> Checkpoints:
    from inmotion.log.memory.jobs import checkpoints_of  # the streams layer's, loaded when used

    return checkpoints_of(log)
