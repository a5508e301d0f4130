"""The chaos run's checker: what a run recorded, held against inmotion's promises.

Kept apart from the runner so that a made-up run can prove each violation is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LEVELS = ("plain", "idempotent", "transactional", "routed")


@dataclass(frozen=True)
class Handled:
    """One effect a subscription recorded: the event's key and its sequence number within that key."""

    key: str
    seq: int


@dataclass
class Report:
    acknowledged: int = 0
    lost: int = 0
    duplicates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    order: int = 0
    stalls: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def violated(self) -> bool:
        # Plain, idempotent and routed duplicates are allowed by at-least-once; only counted.
        return self.lost > 0 or self.duplicates["transactional"] > 0 or self.order > 0 or self.stalls > 0


def check(
    acknowledged: Iterable[tuple[str, int]],
    handled: Mapping[str, tuple[str, Sequence[Handled]]],
    progress: Sequence[tuple[float, int, int]] = (),
    stall_after: float = float("inf"),
    paused: Sequence[tuple[float, float]] = (),
) -> Report:
    """Checks a run.

    `handled` maps each subscription to its guarantee level and its effects in the order they
    happened; `progress` holds (time, effects so far, events still pending) samples, a stall being
    pending work with no new effect for longer than `stall_after` seconds, not counting the
    `paused` (start, end) times when the run held a process stopped: one stopped while it held
    SQLite's write lock holds up every writer of the file until it goes on (SQLite has one writer
    at a time), which is no stall of the others.
    """
    acked = set(acknowledged)
    report = Report(acknowledged=len(acked))
    for subscription, (level, effects) in handled.items():
        seen: set[tuple[str, int]] = set()
        highest: dict[str, int] = {}
        for effect in effects:
            event = (effect.key, effect.seq)
            if event in seen:
                report.duplicates[level] += 1
                continue  # a redelivery of a sequence already seen is no order violation
            seen.add(event)
            if effect.seq < highest.get(effect.key, -1):
                report.order += 1
                report.details.append(f"{subscription}: key {effect.key} seq {effect.seq} after {highest[effect.key]}")
            highest[effect.key] = max(effect.seq, highest.get(effect.key, -1))
        missing = sorted(acked - seen)
        report.lost += len(missing)
        report.details += [f"{subscription}: lost key {key} seq {seq}" for key, seq in missing[:10]]
    stalls = _stalls(progress, stall_after, paused)
    report.stalls = len(stalls)
    report.details += [f"stall: no new effect from {a:.1f}s to {b:.1f}s, {n} pending" for a, b, n in stalls]
    return report


def _stalls(
    progress: Sequence[tuple[float, int, int]], stall_after: float, paused: Sequence[tuple[float, float]]
) -> list[tuple[float, float, int]]:
    """Each stall as (since, until, pending): until is the first sample with progress (or the last)."""
    stalls: list[tuple[float, float, int]] = []
    since: tuple[float, int] | None = None
    for at, effects, pending in progress:
        if pending == 0 or since is None or effects != since[1]:
            since = (at, effects)
        elif at - since[0] - _overlap(paused, since[0], at) > stall_after:
            if stalls and stalls[-1][0] == since[0]:
                stalls[-1] = (since[0], at, pending)
            else:
                stalls.append((since[0], at, pending))
    return stalls


def _overlap(windows: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """How long the (start, end) windows cover of the time from `start` to `end`."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in windows)


def summary(report: Report, label: str, kills: int, stops: int, crashes: int = 0) -> str:
    """One line: what the run did to the processes (`crashes`: ended on their own, started again)
    and what the checker found."""
    dup = " ".join(f"dup({level})={report.duplicates[level]}" for level in LEVELS)
    return (
        f"chaos: {label} kills={kills} stops={stops} crashes={crashes} acknowledged={report.acknowledged}"
        f" lost={report.lost} {dup}"
        f" order={report.order} stalls={report.stalls}"
    )
