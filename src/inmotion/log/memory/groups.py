"""Consumer groups of a `memory://` log (or any log shared inside one process): the lease
rules with their state in this process's memory."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from inmotion.clock import Clock
from inmotion.log.groups import MemberInfo, TopicPartition
from inmotion.log.leases import GroupState, LeaseCoordinator


class MemoryCoordinator(LeaseCoordinator):
    """The groups of one in-process log (`memory://`, or any log shared inside one process)."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._lock = threading.Lock()
        self._groups: dict[str, GroupState] = {}
        self._seen: dict[str, dict[tuple[str, str], int]] = {}

    @contextlib.contextmanager
    def _change(self, group: str) -> Iterator[GroupState]:
        with self._lock:
            yield self._groups.setdefault(group, GroupState({}, {}))

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(g for g, state in self._groups.items() if state.members)

    def members(self, group: str, *, live_only: bool = True) -> list[MemberInfo]:
        now = self.now_ms()
        with self._change(group) as state:
            found = [m for m in state.members.values() if m.live(now) or not live_only]
        return sorted(found, key=lambda m: m.member_id)

    def owners(self, group: str) -> dict[TopicPartition, str]:
        now = self.now_ms()
        with self._change(group) as state:
            return {tp: lease.owner for tp, lease in state.leases.items() if lease.expires_ms >= now}

    def seen(self, group: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        with self._lock:
            known = self._seen.get(group, {})
            return {key for key in keys if key in known}

    def remember(self, group: str, keys: Sequence[tuple[str, str]]) -> None:
        now = self.now_ms()
        with self._lock:
            self._seen.setdefault(group, {}).update(dict.fromkeys(keys, now))

    def forget(self, group: str, keys: Sequence[tuple[str, str]]) -> int:
        with self._lock:
            known = self._seen.get(group, {})
            return sum(known.pop(key, None) is not None for key in set(keys))

    def forget_before(self, group: str, cutoff_ms: int) -> int:
        with self._lock:
            known = self._seen.get(group, {})
            old = [key for key, seen_ms in known.items() if seen_ms < cutoff_ms]
            for key in old:
                del known[key]
        return len(old)
