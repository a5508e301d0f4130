"""Consumer groups on the real broker beyond the contract (tests/kafka/test_kafka_contract.py):
session timeouts Kafka refuses, the CLI showing and moving groups, idempotent subscriptions
deduping across members."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.log import Log, Membership, Message, TopicConfig, TopicPartition
from inmotion.log.kafka.groups import handled_topic
from inmotion.runtime import App, Context
from inmotion.testing import eventually, wait_until

pytestmark = pytest.mark.kafka

INMOTION = str(Path(sys.executable).with_name("inmotion"))


def inmotion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INMOTION, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def names(log: Log) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"orders-{suffix}", f"billing-{suffix}"
    log.create_topic(topic, TopicConfig(partitions=2))
    yield topic, group
    log.delete_topic(topic)


def owned(member: Membership) -> frozenset[TopicPartition]:
    return member.heartbeat().owned


def test_a_session_timeout_kafka_refuses_is_a_clear_error(log: Log, names: tuple[str, str]) -> None:
    topic, group = names
    coordinator = log.group_coordinator()
    member = coordinator.join(group, {topic: 2}, session_timeout=0.2)  # the broker's minimum is 0.5 s here
    try:
        with pytest.raises(InvalidConfig, match=r"Kafka refused session_timeout=0\.2s"):
            wait_until(lambda: bool(owned(member)), 15, "an error")
    finally:
        member.leave()
        coordinator.close()


def test_groups_and_replay_commands_on_kafka(log: Log, log_url: str, names: tuple[str, str]) -> None:
    topic, group = names
    log.append(topic, [Message(value=b"{}", key=f"k{n}".encode()) for n in range(20)])
    latest = {p: log.latest_offset(topic, p) for p in range(2)}
    log.commit(group, topic, {0: 1})  # an empty group: through the admin client
    coordinator = log.group_coordinator()
    member = coordinator.join(group, {topic: 2}, session_timeout=5.0, member_id="cli-7-00000000")
    try:
        wait_until(lambda: len(owned(member)) == 2, 30, "the member to own both partitions")
        listed = inmotion("groups", "list", "--broker", log_url, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {"group": group, "members": 1, "topics": [topic], "lag": latest[0] - 1 + latest[1]} in rows
        described = inmotion("groups", "describe", group, "--broker", log_url, "--json")
        assert described.returncode == 0, described.stderr
        document: dict[str, Any] = json.loads(described.stdout)
        assert [m["member"] for m in document["members"]] == ["cli-7-00000000"]
        # Kafka does not tell a member's heartbeat or session: none made up
        assert [(m["last_heartbeat_s"], m["session_timeout_s"]) for m in document["members"]] == [(None, None)]
        assert [(p["partition"], p["owner"], p["committed"]) for p in document["partitions"]] == [
            (0, "cli-7-00000000", 1),
            (1, "cli-7-00000000", None),
        ]
        refused = inmotion("replay", topic, "--group", group, "--from-beginning", "--broker", log_url)
        assert refused.returncode != 0
        assert "live member" in refused.stderr
        # Kafka itself refuses offset changes of a group with members, even with --force
        forced = inmotion("replay", topic, "--group", group, "--offset", "0", "--force", "--broker", log_url)
        assert forced.returncode != 0
        assert len(forced.stderr.strip().splitlines()) == 1, forced.stderr
        assert forced.stderr.startswith(f"error: committing offsets of group {group}: "), forced.stderr
    finally:
        member.leave()
        coordinator.close()
    wait_until(lambda: not log.group_coordinator().members(group), 30, "the group to empty")
    back = inmotion("replay", topic, "--group", group, "--offset", "3", "--broker", log_url, "--json")
    assert back.returncode == 0, back.stderr
    assert log.committed(group, topic) == {p: min(3, latest[p]) for p in range(2)}


def test_idempotent_subscriptions_dedupe_across_members_on_kafka(log_url: str, names: tuple[str, str]) -> None:
    topic, group = names
    handled: list[tuple[str, int]] = []
    event = Event.create("shop.order.placed", {"n": 1}, source="shop", key="k1")

    async def one_member(name: str, publish: list[Event], expect: int) -> None:
        with App(name, log_url, session_timeout=3.0) as app:

            @app.subscribe(topic, group=group, idempotent=True)
            async def handle(payload: dict[str, int], ctx: Context) -> None:
                handled.append((ctx.event.id, payload["n"]))

            await app.start()
            for e in publish:
                await app.publish(topic, e)
            marker = await app.publish(topic, {"n": -1}, key="k1")
            await eventually(lambda: marker.id in [h[0] for h in handled], 30, "the marker")
            await app.stop()
            assert len(handled) == expect

    asyncio.run(one_member("a", [event, event], expect=2))  # the event once, then the marker
    # a later member of the group (another App, another coordinator) knows the event was handled
    asyncio.run(one_member("b", [event], expect=3))
    assert [n for _, n in handled] == [1, -1, -1]
    with App("check", log_url) as app:
        assert handled_topic(group) not in app.log.list_topics()  # kept out of sight, like __consumer_offsets
        assert app.log.latest_offset(handled_topic(group), 0) >= 3
    # a replay forgets the record (a tombstone in the topic): another coordinator no longer knows it
    key = (event.source, event.id)
    with App("replay", log_url) as app:
        assert app.coordinator.forget(group, [key, key, ("shop", "never-handled")]) == 1
    with App("later", log_url) as app:
        assert app.coordinator.seen(group, [key]) == set()
    asyncio.run(one_member("c", [event], expect=5))  # the event handled again, then the marker
    assert [n for _, n in handled] == [1, -1, -1, 1, -1]
