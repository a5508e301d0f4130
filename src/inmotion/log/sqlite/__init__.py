"""`sqlite:///path/to/file.db`: the embedded default. The log, its consumer groups (leases in the
same file), transactional handlers' effects, the event store and workflow instances share one SQLite file in WAL
mode, which several processes may open at once; projections' read models are SQLite files too
(the same file or another)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from inmotion.errors import InvalidConfig, StorageError
from inmotion.log.sqlite.file import database_path
from inmotion.log.sqlite.log import SqliteLog

if TYPE_CHECKING:
    from inmotion.sourcing.projection import ReadModel
    from inmotion.sourcing.store import Recorder
    from inmotion.streams.checkpoints import Checkpoints
    from inmotion.workflows.store import WorkflowRecorder

__all__ = ["SqliteLog", "open_checkpoints", "open_log", "open_read_model", "open_recorder", "open_workflow_recorder"]


def open_log(url: str, parts: SplitResult, options: Mapping[str, str], *, create: bool = True) -> SqliteLog:
    if not create and not database_path(url, parts.path).exists():
        raise StorageError(f"{database_path(url, parts.path)} does not exist (check the broker URL)")
    return SqliteLog.from_url(url, parts.path, options)


def open_recorder(url: str, parts: SplitResult, options: Mapping[str, str]) -> Recorder:
    from inmotion.log.sqlite.store import SqliteRecorder  # the event store's layer, loaded when used

    return SqliteRecorder.from_url(url, parts.path, options)


def open_read_model(url: str, parts: SplitResult, options: Mapping[str, str], **settings: Any) -> ReadModel:
    from inmotion.log.sqlite.read_model import SqliteReadModel  # the sourcing layer's, loaded when used

    if options:
        raise InvalidConfig(f"unknown read model URL option(s): {', '.join(sorted(options))}")
    return SqliteReadModel(database_path(url, parts.path), **settings)


def open_workflow_recorder(url: str, parts: SplitResult, options: Mapping[str, str]) -> WorkflowRecorder:
    from inmotion.log.sqlite.workflows import SqliteWorkflowRecorder  # the workflows' layer, loaded when used

    return SqliteWorkflowRecorder.from_url(url, parts.path, options)


def open_checkpoints(log: SqliteLog) -> Checkpoints:
    from inmotion.log.sqlite.jobs import SqliteCheckpoints  # the streams layer's, loaded when used

    return SqliteCheckpoints(log)
