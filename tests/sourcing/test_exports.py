from __future__ import annotations

import inmotion.sourcing


def test_the_public_api_is_what_the_package_exports() -> None:
    assert sorted(inmotion.sourcing.__all__) == [
        "Aggregate",
        "AggregateNotFound",
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
    ]
    for name in inmotion.sourcing.__all__:
        assert getattr(inmotion.sourcing, name).__module__.startswith("inmotion.sourcing.")
