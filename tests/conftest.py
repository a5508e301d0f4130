from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_ambient_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their broker explicitly; a developer's INMOTION_BROKER must not leak in."""
    if "INMOTION_BROKER" in os.environ:
        monkeypatch.delenv("INMOTION_BROKER")
