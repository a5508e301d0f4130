"""The runtime: `App` with publish, subscribe, consumer groups, retries, dead letters,
idempotency and metrics."""

from inmotion.runtime.app import App
from inmotion.runtime.coordination import (
    Assignment,
    Coordinator,
    MemberInfo,
    Membership,
    TopicPartition,
    coordinator_for,
)
from inmotion.runtime.deadletter import DeadLetter
from inmotion.runtime.filters import EventFilter, TypeIs, TypePrefix
from inmotion.runtime.handler import Context
from inmotion.runtime.retry import Clock, FakeClock, Retry, SystemClock

__all__ = [
    "App",
    "Assignment",
    "Clock",
    "Context",
    "Coordinator",
    "DeadLetter",
    "EventFilter",
    "FakeClock",
    "MemberInfo",
    "Membership",
    "Retry",
    "SystemClock",
    "TopicPartition",
    "TypeIs",
    "TypePrefix",
    "coordinator_for",
]
