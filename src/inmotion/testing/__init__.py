"""Test helpers that ship with inmotion: the contract suites any backend runs, and waiting for
a condition that another thread, process or task makes true."""

from inmotion.testing.group_contract import GroupContract
from inmotion.testing.log_contract import LogContract, unique_topic
from inmotion.testing.recorder_contract import RecorderContract
from inmotion.testing.waiting import eventually, wait_until

__all__ = ["GroupContract", "LogContract", "RecorderContract", "eventually", "unique_topic", "wait_until"]
