"""Every workflow store backend passes the contract suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.errors import InvalidConfig
from inmotion.testing import WorkflowStoreContract
from inmotion.workflows.store import WorkflowRecorder, open_workflow_recorder


class TestMemoryWorkflowStore(WorkflowStoreContract):
    @pytest.fixture
    def recorder(self) -> Iterator[WorkflowRecorder]:
        recorder = open_workflow_recorder("memory://")
        yield recorder
        recorder.close()


class TestSqliteWorkflowStore(WorkflowStoreContract):
    @pytest.fixture
    def recorder(self, tmp_path: Path) -> Iterator[WorkflowRecorder]:
        recorder = open_workflow_recorder(f"sqlite:///{tmp_path / 'store.db'}")
        yield recorder
        recorder.close()


class TestSqliteWorkflowStoreFsync(WorkflowStoreContract):
    @pytest.fixture
    def recorder(self, tmp_path: Path) -> Iterator[WorkflowRecorder]:
        recorder = open_workflow_recorder(f"sqlite:///{tmp_path / 'store.db'}?durability=fsync")
        yield recorder
        recorder.close()


def test_a_store_on_a_log_that_cannot_hold_one_is_a_clear_error() -> None:
    with pytest.raises(InvalidConfig, match=r"set INMOTION_WORKFLOW_STORE=sqlite:///path/to/file\.db"):
        open_workflow_recorder("kafka://127.0.0.1:1")
