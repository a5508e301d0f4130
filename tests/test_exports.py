"""The public API is small and explicit: what users import from `inmotion` and its documented
subpackages. A name added or removed here is a decision, not an accident."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

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
    "inmotion.errors": [
        "BrokerUnavailable",
        "Closed",
        "ConcurrencyError",
        "CorruptRecord",
        "InmotionError",
        "InvalidConfig",
        "InvalidEvent",
        "InvalidPattern",
        "InvalidSql",
        "NotAuthorized",
        "StorageError",
        "TopicExists",
        "UnknownPartition",
        "UnknownTopic",
    ],
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
        "DEFAULT_SESSION_TIMEOUT",
        "Assignment",
        "Coordinator",
        "Key",
        "Log",
        "MemberInfo",
        "Membership",
        "Message",
        "PartitionInfo",
        "Position",
        "Record",
        "TopicConfig",
        "TopicInfo",
        "TopicPartition",
        "Transaction",
        "connect",
        "default_broker",
        "murmur2",
        "partition_for_key",
        "register_backend",
    ],
    "inmotion.patterns": ["Matcher", "Pattern", "event_document"],
    "inmotion.routing": [
        "DeliveryFailed",
        "DeliveryRejected",
        "Forward",
        "HandlerTarget",
        "HttpTarget",
        "InputTransform",
        "Matcher",
        "Pattern",
        "Router",
        "Rule",
        "RuleSet",
        "Target",
        "TopicTarget",
        "event_document",
        "load_rules",
        "parse_rules",
        "route_file",
    ],
    "inmotion.runtime": ["App", "Context", "DeadLetter", "EventFilter", "Retry", "TypeIs", "TypePrefix"],
    "inmotion.sourcing": [
        "Aggregate",
        "AggregateNotFound",
        "ConcurrencyError",
        "EventStore",
        "EventTypes",
        "NewEvent",
        "NewSnapshot",
        "OutboxRelay",
        "Projection",
        "Projector",
        "Repository",
        "Source",
        "StoreSource",
        "StoredEvent",
        "StoredSnapshot",
        "TopicSource",
        "Transaction",
        "UnreadableEvent",
        "applies",
        "handles",
    ],
    "inmotion.streams": ["Column", "Job", "JobTakenOver", "Query", "Statement", "Table", "Watermark", "parse"],
    "inmotion.workflows": [
        "ChangedCode",
        "Engine",
        "StepFailed",
        "UnknownWorkflow",
        "Workflow",
        "WorkflowCancelled",
        "WorkflowError",
        "WorkflowFailed",
        "WorkflowHandle",
        "WorkflowTimeout",
    ],
    "inmotion.testing": [
        "GroupContract",
        "LogContract",
        "RecorderContract",
        "WorkflowStoreContract",
        "eventually",
        "unique_topic",
        "wait_until",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exports_are_exactly_the_public_api(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == sorted(PUBLIC[module])
    for name in imported.__all__:
        assert getattr(imported, name) is not None


def test_the_top_level_package_offers_the_app() -> None:
    import inmotion.runtime

    assert inmotion.App is inmotion.runtime.App
    assert inmotion.Context is inmotion.runtime.Context
    assert inmotion.Retry is inmotion.runtime.Retry


def test_sourcing_offers_the_error_that_a_lost_save_race_raises() -> None:
    import inmotion.errors
    import inmotion.sourcing

    assert inmotion.sourcing.ConcurrencyError is inmotion.errors.ConcurrencyError


def test_importing_the_core_does_not_import_kafka() -> None:
    import subprocess
    import sys

    code = "import sys, inmotion, inmotion.cli.main; print('confluent_kafka' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_testing_extra_installs_what_inmotion_testing_imports() -> None:
    import ast
    import sys
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    module_of = {"pyyaml": "yaml", "confluent-kafka": "confluent_kafka"}

    def modules(requirements: list[str]) -> set[str]:
        names = {re.split(r"[<>=!~\[ ]", requirement)[0].lower() for requirement in requirements}
        return {module_of.get(name, name) for name in names}

    imported: set[str] = set()
    for path in (root / "src" / "inmotion" / "testing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"inmotion"}
    assert third_party - modules(project["dependencies"]) == modules(project["optional-dependencies"]["testing"])


@pytest.mark.parametrize("missing", ["pytest", "hypothesis"])
def test_inmotion_testing_without_its_extra_says_how_to_install_it(missing: str) -> None:
    import subprocess
    import sys

    code = f"import sys; sys.modules[{missing!r}] = None; import inmotion.testing"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"ImportError: inmotion.testing needs {missing}: pip install 'inmotion[testing]'" in result.stderr
