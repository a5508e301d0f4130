"""Test helpers that ship with inmotion: the contract suites any backend runs, and waiting for
a condition that another thread, process or task makes true. They run on pytest and hypothesis,
which the `testing` extra installs."""

try:
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
except ImportError as exc:
    raise ImportError(f"inmotion.testing needs {exc.name}: pip install 'inmotion[testing]'", name=exc.name) from exc

from inmotion.testing.group_contract import GroupContract
from inmotion.testing.log_contract import LogContract, unique_topic
from inmotion.testing.recorder_contract import RecorderContract
from inmotion.testing.waiting import eventually, wait_until
from inmotion.testing.workflow_store_contract import WorkflowStoreContract

__all__ = [
    "GroupContract",
    "LogContract",
    "RecorderContract",
    "WorkflowStoreContract",
    "eventually",
    "unique_topic",
    "wait_until",
]
