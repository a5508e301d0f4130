"""Test helpers that ship with inmotion: the log contract suite any backend runs."""

from inmotion.testing.log_contract import LogContract, unique_topic

__all__ = ["LogContract", "unique_topic"]
