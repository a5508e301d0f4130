"""The consumer-group contract as reusable pytest test cases.

A backend's test module subclasses `GroupContract` and provides a `log` fixture; the suite
runs against `log.group_coordinator()` (group and topic names are unique per test, so a
shared broker is fine):

    class TestSqliteGroups(GroupContract):
        transactions = True

        @pytest.fixture
        def log(self, tmp_path):
            with inmotion.connect(f"sqlite:///{tmp_path}/log.db") as log:
                yield log

The embedded backends' coordinators follow the lease rules of `inmotion.log.leases`: the suite
puts them on a `FakeClock`, so session timeouts expire when a test advances it, without
sleeping. A backend whose groups run on a broker's clock sets `fake_clock = False` and the
tests of expiry skip. A backend that commits a handler's writes with its position
(`Coordinator.transaction`) sets `transactions = True`; the others must refuse with
`InvalidConfig`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

from inmotion.clock import Clock, FakeClock, SystemClock
from inmotion.errors import InmotionError, InvalidConfig, UnknownTopic
from inmotion.log import Coordinator, Log, Membership, Message, TopicConfig, TopicPartition, Transaction
from inmotion.log.leases import LeaseCoordinator
from inmotion.testing.log_contract import unique_topic
from inmotion.testing.waiting import wait_until

PARTITIONS = 4
SESSION_TIMEOUT = 3.0
"""Long enough for a broker's group protocol; on a fake clock, tests advance past it."""
SETTLE = 60.0
"""How long a group may take to settle: a round of heartbeats on the embedded backends, a few
rebalances on a broker."""

Join = Callable[..., Membership]


def beat(
    *members: Membership, released: list[frozenset[TopicPartition]] | None = None
) -> dict[str, frozenset[TopicPartition]]:
    """One round of heartbeats, as consumers run them: each member releases at once what it
    must hand over (no events in flight to finish), noting it in `released`. What each member
    then holds."""
    held = {}
    for member in members:
        assignment = member.heartbeat()
        if assignment.revoke:
            assert assignment.revoke <= assignment.owned  # held until released
            member.release(assignment.revoke)
            if released is not None:
                released.append(assignment.revoke)
        held[member.member_id] = assignment.owned - assignment.revoke
    return held


def split_evenly(held: Mapping[str, frozenset[TopicPartition]], partitions: frozenset[TopicPartition]) -> bool:
    """Every partition has exactly one owner and the members' shares differ by at most one."""
    shares = [len(owned) for owned in held.values()]
    every = frozenset().union(*held.values())
    return every == partitions and sum(shares) == len(partitions) and max(shares) - min(shares) <= 1


class GroupContract:
    """Every backend's `Log.group_coordinator()` passes these. Subclasses provide the `log` fixture."""

    fake_clock: ClassVar[bool] = True
    """True when the coordinator keeps the lease rules on a clock the suite may replace."""
    transactions: ClassVar[bool] = False
    """True when the coordinator offers `transaction` (a SQLite connection to write effects on)."""

    @pytest.fixture
    def clock(self) -> Clock:
        return FakeClock(time.time()) if self.fake_clock else SystemClock()

    @pytest.fixture
    def coordinator(self, log: Log, clock: Clock) -> Iterator[Coordinator]:
        coordinator = log.group_coordinator()
        if self.fake_clock:
            if not isinstance(coordinator, LeaseCoordinator):
                pytest.fail(f"{type(coordinator).__name__} keeps no lease clock: set fake_clock = False")
            coordinator.clock = clock
        yield coordinator
        coordinator.close()

    @pytest.fixture
    def topic(self, log: Log) -> Iterator[str]:
        name = unique_topic("orders")
        log.create_topic(name, TopicConfig(partitions=PARTITIONS))
        yield name
        with contextlib.suppress(InmotionError):
            log.delete_topic(name)

    @pytest.fixture
    def group(self) -> str:
        """A fresh group name; a test that needs a second group uses `{group}-other`."""
        return unique_topic("group")

    @pytest.fixture
    def join(self, coordinator: Coordinator, group: str, topic: str) -> Iterator[Join]:
        """`join(**options)`: a member of `group` for `topic`; every member leaves at the end."""
        members: list[Membership] = []

        def join(**options: Any) -> Membership:
            member = coordinator.join(group, {topic: PARTITIONS}, **{"session_timeout": SESSION_TIMEOUT, **options})
            members.append(member)
            return member

        yield join
        for member in members:
            with contextlib.suppress(InmotionError):
                member.leave()

    @pytest.fixture
    def partitions(self, topic: str) -> frozenset[TopicPartition]:
        return frozenset(TopicPartition(topic, p) for p in range(PARTITIONS))

    @staticmethod
    def fake(clock: Clock) -> FakeClock:
        if not isinstance(clock, FakeClock):
            pytest.skip("the group's sessions run on the broker's clock")
        return clock

    # --- membership and assignment --------------------------------------------------------
    def test_a_lone_member_owns_every_partition(
        self, coordinator: Coordinator, join: Join, group: str, topic: str, partitions: frozenset[TopicPartition]
    ) -> None:
        member = join()
        wait_until(lambda: beat(member)[member.member_id] == partitions, SETTLE, "the member to own every partition")
        assert coordinator.owners(group) == dict.fromkeys(partitions, member.member_id)
        [info] = coordinator.members(group)
        assert (info.member_id, info.pid, info.topics) == (member.member_id, os.getpid(), (topic,))
        assert group in coordinator.groups()

    def test_members_split_the_partitions_and_each_has_one_owner_at_a_time(
        self, coordinator: Coordinator, join: Join, group: str, partitions: frozenset[TopicPartition]
    ) -> None:
        members = [join(), join(), join()]
        rounds: list[dict[str, frozenset[TopicPartition]]] = []

        def settled() -> bool:
            rounds.append(beat(*members))
            return split_evenly(rounds[-1], partitions)

        wait_until(settled, SETTLE, "the members to split the partitions")
        for held in rounds:  # no round, settled or not, saw a partition held twice
            assert sum(map(len, held.values())) == len(frozenset().union(*held.values()))
        assert coordinator.owners(group) == {tp: m for m, owned in rounds[-1].items() for tp in owned}
        assert [m.member_id for m in coordinator.members(group)] == sorted(m.member_id for m in members)

    def test_a_joining_member_gets_partitions_only_when_the_owner_hands_them_over(
        self, log: Log, join: Join, group: str, topic: str, partitions: frozenset[TopicPartition]
    ) -> None:
        first = join()
        wait_until(lambda: beat(first)[first.member_id] == partitions, SETTLE, "the first member to own everything")
        taken: list[frozenset[TopicPartition]] = []

        def hand_over(partitions: frozenset[TopicPartition]) -> dict[TopicPartition, int]:
            taken.append(partitions)
            return dict.fromkeys(partitions, 1)

        # a broker takes partitions inside the heartbeat, through revoke_now (which commits
        # the offsets it returns); the lease rules ask for them in `revoke`, to be released
        first.revoke_now = hand_over
        second = join()
        assert second.heartbeat().owned == frozenset()  # the first has not heartbeaten since
        assert second.heartbeat().owned == frozenset()
        released: list[frozenset[TopicPartition]] = []
        wait_until(
            lambda: split_evenly(beat(first, second, released=released), partitions),
            SETTLE,
            "the partitions to be handed over",
        )
        moved = beat(second)[second.member_id]
        assert frozenset().union(*taken, *released) == moved
        assert beat(first)[first.member_id] == partitions - moved
        if taken:
            assert log.committed(group, topic) == {tp.partition: 1 for tp in moved}

    def test_a_member_that_leaves_hands_its_partitions_to_the_others(
        self, coordinator: Coordinator, join: Join, group: str, partitions: frozenset[TopicPartition]
    ) -> None:
        stays, leaves = join(), join()
        wait_until(lambda: split_evenly(beat(stays, leaves), partitions), SETTLE, "a split")
        leaves.leave()
        wait_until(lambda: beat(stays)[stays.member_id] == partitions, SETTLE, "the leaver's partitions to move")
        assert [m.member_id for m in coordinator.members(group)] == [stays.member_id]
        stays.leave()
        assert coordinator.members(group) == []
        assert group not in coordinator.groups()

    def test_a_silent_member_loses_its_partitions_after_the_session_timeout(
        self, coordinator: Coordinator, clock: Clock, join: Join, group: str, partitions: frozenset[TopicPartition]
    ) -> None:
        fake = self.fake(clock)
        silent, alive = join(member_id="a", session_timeout=1.0), join(member_id="b", session_timeout=1.0)
        wait_until(lambda: split_evenly(beat(silent, alive), partitions), SETTLE, "a split")
        kept = beat(alive)["b"]
        fake.advance(0.6)
        assert beat(alive)["b"] == kept  # the other is late but not gone yet
        fake.advance(0.6)
        assert [m.member_id for m in coordinator.members(group)] == ["b"]
        assert [m.member_id for m in coordinator.members(group, live_only=False)] == ["a", "b"]
        assert set(coordinator.owners(group).values()) == {"b"}  # the silent one's leases ran out
        assert beat(alive)["b"] == partitions
        assert [m.member_id for m in coordinator.members(group, live_only=False)] == ["b"]
        # the silent member comes back: it holds nothing until the other hands partitions over
        assert silent.heartbeat().owned == frozenset()
        wait_until(lambda: split_evenly(beat(alive, silent), partitions), SETTLE, "a split again")

    def test_a_session_timeout_out_of_range_is_refused(self, join: Join) -> None:
        for bad in (0, 0.05, 7200):
            with pytest.raises(InvalidConfig, match="session_timeout"):
                join(session_timeout=bad)

    # --- dedupe records -------------------------------------------------------------------
    def test_dedupe_records_are_kept_per_group(self, coordinator: Coordinator, group: str) -> None:
        coordinator.remember(group, [("src", "1"), ("src", "2")])
        assert coordinator.seen(group, [("src", "1"), ("src", "3")]) == {("src", "1")}
        assert coordinator.seen(f"{group}-other", [("src", "1")]) == set()

    def test_many_dedupe_records_are_asked_for_at_once(self, coordinator: Coordinator, group: str) -> None:
        keys = [(f"src-{n % 3}", str(n)) for n in range(1200)]  # more than one query's worth of a source
        coordinator.remember(group, keys[::2])
        assert coordinator.seen(group, keys) == set(keys[::2])

    def test_dedupe_records_remembered_now_are_seen(self, coordinator: Coordinator, group: str) -> None:
        """`remember_now` either does nothing (False: remember in a thread) or all of it."""
        if coordinator.remember_now(group, [("src", "1"), ("src", "2")]):
            assert coordinator.seen(group, [("src", "1"), ("src", "2"), ("src", "3")]) == {("src", "1"), ("src", "2")}
        else:
            assert coordinator.seen(group, [("src", "1"), ("src", "2")]) == set()

    def test_dedupe_records_of_chosen_events_can_be_forgotten(self, coordinator: Coordinator, group: str) -> None:
        coordinator.remember(group, [("src", "1"), ("src", "2"), ("src", "3")])
        coordinator.remember(f"{group}-other", [("src", "1")])
        coordinator.flush(group)
        assert coordinator.forget(group, [("src", "1"), ("src", "2"), ("src", "2"), ("src", "9")]) == 2
        assert coordinator.seen(group, [("src", "1"), ("src", "2"), ("src", "3")]) == {("src", "3")}
        assert coordinator.seen(f"{group}-other", [("src", "1")]) == {("src", "1")}
        assert coordinator.forget(group, [("src", "1")]) == 0

    def test_flushed_dedupe_records_are_seen_by_every_coordinator_of_the_log(
        self, log: Log, coordinator: Coordinator, group: str
    ) -> None:
        coordinator.remember(group, [("src", "1")])
        coordinator.flush(group)
        other = log.group_coordinator()
        try:
            assert other.seen(group, [("src", "1"), ("src", "2")]) == {("src", "1")}
        finally:
            other.close()

    def test_dedupe_records_older_than_the_cutoff_are_forgotten(
        self, coordinator: Coordinator, clock: Clock, group: str
    ) -> None:
        coordinator.remember(group, [("src", "old")])
        if isinstance(clock, FakeClock):
            clock.advance(10)
            coordinator.remember(group, [("src", "new")])
            assert coordinator.forget_before(group, int((clock.time() - 5) * 1000)) == 1
            assert coordinator.seen(group, [("src", "old"), ("src", "new")]) == {("src", "new")}
        assert coordinator.forget_before(group, int((clock.time() + 1) * 1000)) == 1
        assert coordinator.seen(group, [("src", "old"), ("src", "new")]) == set()

    def test_forgotten_dedupe_records_stay_forgotten_when_a_member_takes_partitions(
        self, coordinator: Coordinator, clock: Clock, join: Join, group: str, partitions: frozenset[TopicPartition]
    ) -> None:
        """A member that gets partitions learns what their last owner handled (Kafka reads the
        group's records again): not what the group has forgotten since."""
        coordinator.remember(group, [("src", "old")])
        coordinator.flush(group)
        assert coordinator.forget_before(group, int((clock.time() + 1) * 1000)) == 1
        member = join()
        wait_until(lambda: beat(member)[member.member_id] == partitions, SETTLE, "the member to own every partition")
        assert coordinator.seen(group, [("src", "old")]) == set()

    # --- appending what a group has not seen ---------------------------------------------
    @staticmethod
    def values(log: Log, topic: str) -> list[bytes]:
        return sorted(
            record.value or b"" for partition in range(PARTITIONS) for record in log.read(topic, partition, 0, 1000)
        )

    def test_append_unseen_appends_each_event_once(
        self, log: Log, coordinator: Coordinator, group: str, topic: str
    ) -> None:
        """A copy is skipped within one call (the first one counts) and in later calls."""
        messages = [Message(b"a", b"k"), Message(b"b", b"k"), Message(b"a-copy", b"k")]
        first = coordinator.append_unseen(log, group, topic, messages, [("src", "a"), ("src", "b"), ("src", "a")])
        assert [position is not None for position in first] == [True, True, False]
        assert first[0] is not None
        assert first[1] is not None
        assert first[0].offset + 1 == first[1].offset
        again = coordinator.append_unseen(
            log, group, topic, [Message(b"a-again"), Message(b"c")], [("src", "a"), ("src", "c")]
        )
        assert again[0] is None
        assert again[1] is not None
        assert self.values(log, topic) == [b"a", b"b", b"c"]
        assert coordinator.seen(group, [("src", "a"), ("src", "b"), ("src", "c")]) == {
            ("src", "a"),
            ("src", "b"),
            ("src", "c"),
        }
        assert coordinator.seen(f"{group}-other", [("src", "a")]) == set()

    def test_append_unseen_now_appends_all_or_nothing(
        self, log: Log, coordinator: Coordinator, group: str, topic: str
    ) -> None:
        positions = coordinator.append_unseen_now(log, group, topic, [Message(b"a")], [("src", "a")])
        if positions is None:  # not at once: nothing done
            assert (self.values(log, topic), coordinator.seen(group, [("src", "a")])) == ([], set())
        else:
            assert positions[0] is not None
            assert (self.values(log, topic), coordinator.seen(group, [("src", "a")])) == ([b"a"], {("src", "a")})

    def test_append_unseen_to_a_missing_topic_remembers_nothing(
        self, log: Log, coordinator: Coordinator, group: str
    ) -> None:
        with pytest.raises(UnknownTopic):
            coordinator.append_unseen(log, group, unique_topic("missing"), [Message(b"a")], [("src", "a")])
        assert coordinator.seen(group, [("src", "a")]) == set()

    # --- transactions ---------------------------------------------------------------------
    def test_a_backend_without_transactions_refuses_them(self, coordinator: Coordinator, group: str) -> None:
        if self.transactions:
            pytest.skip("the backend offers transactions")
        with pytest.raises(InvalidConfig, match="transaction=True"):
            coordinator.transaction(group)

    @pytest.fixture
    def owner(self, join: Join, partitions: frozenset[TopicPartition]) -> Membership:
        """A member that holds every partition (for transactions)."""
        if not self.transactions:
            pytest.skip("the backend offers no transactions")
        member = join()
        wait_until(lambda: beat(member)[member.member_id] == partitions, SETTLE, "the member to own everything")
        return member

    @pytest.fixture
    def transaction(self, coordinator: Coordinator, owner: Membership, group: str) -> Iterator[Transaction]:
        transaction = coordinator.transaction(group)
        yield transaction
        transaction.rollback()
        transaction.close()

    @staticmethod
    def effect(transaction: Transaction, value: str) -> None:
        """Write a handler's effect through the transaction's connection (DB-API, qmark style)."""
        cursor = transaction.connection.cursor()
        cursor.execute("CREATE TABLE IF NOT EXISTS contract_effects (value TEXT)")
        cursor.execute("INSERT INTO contract_effects (value) VALUES (?)", (value,))

    @staticmethod
    def effects(coordinator: Coordinator, group: str) -> list[str]:
        """The effects committed so far, read in a transaction of their own."""
        reader = coordinator.transaction(group)
        try:
            reader.begin()
            cursor = reader.connection.cursor()
            cursor.execute("CREATE TABLE IF NOT EXISTS contract_effects (value TEXT)")
            cursor.execute("SELECT value FROM contract_effects ORDER BY value")
            return [value for (value,) in cursor.fetchall()]
        finally:
            reader.rollback()
            reader.close()

    def test_a_transaction_commits_effects_dedupe_record_events_and_offset_together(
        self,
        log: Log,
        coordinator: Coordinator,
        owner: Membership,
        transaction: Transaction,
        group: str,
        topic: str,
    ) -> None:
        followups = unique_topic("followups")
        transaction.begin()
        assert not transaction.seen(("src", "1"))
        self.effect(transaction, "one")
        transaction.append(followups, [Message(b"booked")], TopicConfig(partitions=1))
        assert transaction.commit(("src", "1"), TopicPartition(topic, 2), 8, owner.member_id)
        assert self.effects(coordinator, group) == ["one"]
        assert coordinator.seen(group, [("src", "1")]) == {("src", "1")}
        assert [r.value for r in log.read(followups, 0, 0)] == [b"booked"]
        assert log.committed(group, topic) == {2: 8}
        transaction.begin()
        assert transaction.seen(("src", "1"))
        transaction.rollback()

    def test_a_rolled_back_transaction_leaves_nothing(
        self,
        log: Log,
        coordinator: Coordinator,
        owner: Membership,
        transaction: Transaction,
        group: str,
        topic: str,
    ) -> None:
        followups = unique_topic("followups")
        transaction.begin()
        self.effect(transaction, "lost")
        transaction.append(followups, [Message(b"lost")], TopicConfig(partitions=1))
        transaction.rollback()
        assert self.effects(coordinator, group) == []
        assert followups not in log.list_topics()
        with pytest.raises(UnknownTopic):
            log.read(followups, 0, 0)
        assert log.committed(group, topic) == {}
        assert coordinator.seen(group, [("src", "1")]) == set()

    def test_a_transaction_commits_nothing_once_the_member_lost_the_partition(
        self,
        log: Log,
        coordinator: Coordinator,
        clock: Clock,
        owner: Membership,
        transaction: Transaction,
        group: str,
        topic: str,
    ) -> None:
        def attempt(value: str, partition: int) -> bool:
            transaction.begin()
            self.effect(transaction, value)
            transaction.append(topic, [Message(value.encode(), partition=partition)], None)
            return transaction.commit(("src", value), TopicPartition(topic, partition), 1, owner.member_id)

        if isinstance(clock, FakeClock):
            clock.advance(owner.session_timeout + 1)  # silent past its session: its leases ran out
            assert not attempt("expired", 0)
            beat(owner)
        owner.leave()
        assert not attempt("left", 1)
        assert self.effects(coordinator, group) == []
        assert coordinator.seen(group, [("src", "expired"), ("src", "left")]) == set()
        assert log.committed(group, topic) == {}
        assert [log.latest_offset(topic, p) for p in range(PARTITIONS)] == [0] * PARTITIONS
