"""The runtime's public names: what users import from `inmotion` and `inmotion.runtime`."""

from __future__ import annotations

import inmotion
import inmotion.runtime


def test_the_runtime_exports_exactly_its_public_api() -> None:
    assert sorted(inmotion.runtime.__all__) == [
        "App",
        "Assignment",
        "Context",
        "Coordinator",
        "DeadLetter",
        "EventFilter",
        "MemberInfo",
        "Membership",
        "Retry",
        "TopicPartition",
        "TypeIs",
        "TypePrefix",
        "coordinator_for",
    ]
    for name in inmotion.runtime.__all__:
        assert getattr(inmotion.runtime, name).__module__.startswith("inmotion.runtime.")


def test_the_top_level_package_offers_the_app() -> None:
    assert inmotion.App is inmotion.runtime.App
    assert inmotion.Context is inmotion.runtime.Context
    assert inmotion.Retry is inmotion.runtime.Retry
