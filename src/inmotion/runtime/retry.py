"""Retry policies: how many attempts, which errors, and the backoff between them."""

from __future__ import annotations

import dataclasses
import random

from inmotion.errors import InvalidConfig, InvalidEvent


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """How often a failing handler is tried, and how long to wait between tries.

    `attempts` counts every try, the first included. The wait before try n+1 is
    `backoff * multiplier**(n-1)`, capped at `max_backoff`; with `jitter` it is drawn uniformly from
    [wait/2, wait] so that many consumers failing together do not retry in lockstep.
    Exceptions that are instances of `give_up_on` go to the dead-letter topic at once, as do
    payloads that do not fit the handler's annotation (`InvalidEvent`).
    """

    attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 30.0
    jitter: bool = True
    multiplier: float = 2.0
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise InvalidConfig(f"Retry attempts must be an integer >= 1, got {self.attempts!r}")
        for name in ("backoff", "max_backoff", "multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidConfig(f"Retry {name} must be a number >= 0, got {value!r}")
        for kind in self.give_up_on:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise InvalidConfig(f"Retry give_up_on takes exception classes, got {kind!r}")

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after try number `failed_attempt` (1-based) failed."""
        wait: float = min(self.max_backoff, self.backoff * float(self.multiplier) ** (failed_attempt - 1))
        if self.jitter and wait > 0:
            wait = float((rng or random).uniform(wait / 2, wait))
        return wait

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        if failed_attempt >= self.attempts:
            return False
        return not isinstance(error, (InvalidEvent, *self.give_up_on))
