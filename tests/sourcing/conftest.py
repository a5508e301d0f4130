from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.sourcing import EventStore


@pytest.fixture
def directory() -> Iterator[Path]:
    """A fresh directory of this test's own: pytest's tmp_path sits under a base directory that
    another pytest run of the same user may clean up while a long test still uses it."""
    with tempfile.TemporaryDirectory(prefix="inmotion-sourcing-") as name:
        yield Path(name)


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, directory: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{directory / 'store.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    with EventStore(store_url) as store:
        yield store


@pytest.fixture
def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'store.db'}"
