from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.sourcing import EventStore
from inmotion.sourcing.store import Recorder
from inmotion.testing import RecorderContract


class TestMemoryRecorder(RecorderContract):
    @pytest.fixture
    def recorder(self) -> Iterator[Recorder]:
        with EventStore("memory://") as store:
            yield store.recorder


class TestSqliteRecorder(RecorderContract):
    @pytest.fixture
    def recorder(self, directory: Path) -> Iterator[Recorder]:
        with EventStore(f"sqlite:///{directory / 'store.db'}") as store:
            yield store.recorder


class TestSqliteRecorderFsync(RecorderContract):
    @pytest.fixture
    def recorder(self, directory: Path) -> Iterator[Recorder]:
        with EventStore(f"sqlite:///{directory / 'store.db'}?durability=fsync") as store:
            yield store.recorder
