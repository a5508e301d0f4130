from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import inmotion
from inmotion.log import Log
from inmotion.testing import GroupContract


class TestMemoryGroups(GroupContract):
    @pytest.fixture
    def log(self) -> Iterator[Log]:
        with inmotion.connect("memory://") as log:
            yield log


class TestSqliteGroups(GroupContract):
    transactions = True

    @pytest.fixture
    def log(self, tmp_path: Path) -> Iterator[Log]:
        with inmotion.connect(f"sqlite:///{tmp_path}/log.db") as log:
            yield log
