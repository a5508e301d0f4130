"""The lease rules the embedded backends share: members and partition leases kept in storage.

There is no leader. Every member computes the same assignment from the list of live members
(partitions dealt round-robin over the members sorted by id, `deal`) and takes only leases that
are free, so a partition has at most one live owner at a time. A backend keeps the state
(`GroupState`) wherever it likes (memory, tables of the log's file) and says how to change it
(`LeaseCoordinator._change`). Times come from the coordinator's clock.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterable, Mapping

from inmotion.clock import Clock, SystemClock
from inmotion.log.groups import (
    DEFAULT_SESSION_TIMEOUT,
    Assignment,
    Coordinator,
    MemberInfo,
    Membership,
    TopicPartition,
    deal,
    new_member_id,
)


@dataclasses.dataclass(slots=True)
class Lease:
    owner: str
    expires_ms: int


@dataclasses.dataclass(slots=True)
class GroupState:
    """One group's members and leases, as the assignment rules see them."""

    members: dict[str, MemberInfo]
    leases: dict[TopicPartition, Lease]


def _heartbeat(state: GroupState, me: MemberInfo, partitions: Mapping[str, int], now_ms: int) -> Assignment:
    """Renew `me`, drop dead members and expired leases, take free leases that the deal gives
    `me`, and say which held partitions `me` must give up."""
    state.members[me.member_id] = dataclasses.replace(me, heartbeat_ms=now_ms)
    session_ms = me.session_ms
    assert session_ms is not None  # an embedded group's members always have one
    for member in [m for m, info in state.members.items() if not info.live(now_ms)]:
        del state.members[member]
    for tp in [
        tp for tp, lease in state.leases.items() if lease.expires_ms < now_ms or lease.owner not in state.members
    ]:
        del state.leases[tp]
    wanted = deal(partitions, {m: info.topics for m, info in state.members.items()})[me.member_id]
    revoke = set()
    for tp, lease in state.leases.items():
        if lease.owner == me.member_id:
            lease.expires_ms = now_ms + session_ms
            if tp not in wanted:
                revoke.add(tp)
    for tp in wanted:
        if tp not in state.leases:
            state.leases[tp] = Lease(me.member_id, now_ms + session_ms)
    owned = frozenset(tp for tp, lease in state.leases.items() if lease.owner == me.member_id)
    return Assignment(owned, frozenset(revoke))


def _member(member_id: str, partitions: Mapping[str, int], now_ms: int, session_timeout: float) -> MemberInfo:
    topics = tuple(sorted(partitions))
    return MemberInfo(member_id, socket.gethostname(), os.getpid(), topics, now_ms, now_ms, int(session_timeout * 1000))


class LeaseCoordinator(Coordinator):
    """The embedded backends' shared rules; a subclass only says how to change a group's state."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()

    def now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    @abc.abstractmethod
    def _change(self, group: str) -> contextlib.AbstractContextManager[GroupState]:
        """The group's state, to read and change; the changes are kept when the block ends."""

    def join(
        self,
        group: str,
        partitions: Mapping[str, int],
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        member_id: str | None = None,
    ) -> Membership:
        return LeaseMembership(self, group, member_id or new_member_id(), dict(partitions), session_timeout)


class LeaseMembership(Membership):
    def __init__(
        self, owner: LeaseCoordinator, group: str, member_id: str, partitions: dict[str, int], timeout: float
    ) -> None:
        super().__init__(group, member_id, timeout)
        self._owner = owner
        self._partitions = partitions
        self._info = _member(member_id, partitions, owner.now_ms(), timeout)

    def heartbeat(self) -> Assignment:
        with self._owner._change(self.group) as state:
            return _heartbeat(state, self._info, self._partitions, self._owner.now_ms())

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        mine = set(partitions)
        with self._owner._change(self.group) as state:
            for tp in [tp for tp, lease in state.leases.items() if tp in mine and lease.owner == self.member_id]:
                del state.leases[tp]

    def leave(self) -> None:
        with self._owner._change(self.group) as state:
            state.members.pop(self.member_id, None)
            for tp in [tp for tp, lease in state.leases.items() if lease.owner == self.member_id]:
                del state.leases[tp]
