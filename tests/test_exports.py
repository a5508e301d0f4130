"""The public API is small and explicit: what users import from `inmotion` and its documented
subpackages. A name added or removed here is a decision, not an accident."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "inmotion": [
        "App",
        "Context",
        "Event",
        "Log",
        "Message",
        "Record",
        "Retry",
        "TopicConfig",
        "__version__",
        "connect",
    ],
    "inmotion.clock": ["Clock", "FakeClock", "SystemClock"],
    "inmotion.events": [
        "BATCH_CONTENT_TYPE",
        "STRUCTURED_CONTENT_TYPE",
        "Event",
        "from_batch",
        "from_binary",
        "from_data",
        "from_dict",
        "from_json",
        "to_batch",
        "to_binary",
        "to_builtins",
        "to_dict",
        "to_json",
    ],
    "inmotion.log": [
        "DEFAULT_BROKER",
        "Log",
        "Message",
        "PartitionInfo",
        "Position",
        "Record",
        "TopicConfig",
        "TopicInfo",
        "connect",
        "default_broker",
        "murmur2",
        "partition_for_key",
    ],
    "inmotion.patterns": ["Matcher", "Pattern", "event_document"],
    "inmotion.testing": ["LogContract", "unique_topic"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exports_are_exactly_the_public_api(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(PUBLIC[module])
    for name in imported.__all__:
        assert getattr(imported, name) is not None


def test_importing_the_core_does_not_import_kafka() -> None:
    import subprocess
    import sys

    code = "import sys, inmotion, inmotion.cli.main; print('confluent_kafka' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
