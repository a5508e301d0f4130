"""`sqlite:///path/to/file.db`: the embedded default. The log, its consumer groups (leases in the
same file), transactional handlers' effects and the event store share one SQLite file in WAL
mode, which several processes may open at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

from inmotion.log.sqlite.log import SqliteLog

if TYPE_CHECKING:
    from inmotion.sourcing.store import Recorder

__all__ = ["SqliteLog", "open_log", "open_recorder"]


def open_log(url: str, parts: SplitResult, options: Mapping[str, str]) -> SqliteLog:
    return SqliteLog.from_url(url, parts.path, options)


def open_recorder(url: str, parts: SplitResult, options: Mapping[str, str]) -> Recorder:
    from inmotion.log.sqlite.store import SqliteRecorder  # the event store's layer, loaded when used

    return SqliteRecorder.from_url(url, parts.path, options)
