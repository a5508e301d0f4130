"""Hypothesis settings for the contract suites' property tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def on_a_backend(max_examples: int) -> settings:
    """Settings for a property test of a backend: the suite's fixture (the backend) serves
    every example, and examples take as long as the backend does (a real broker's included)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
