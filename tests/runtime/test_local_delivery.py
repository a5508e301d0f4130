"""Records that an app publishes reach its own consumers without a read from the log, and
that shortcut never changes what is delivered: every event once, in offset order, and only
the partitions this member owns."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from inmotion.log import Log, Record, TopicConfig, connect
from inmotion.runtime import App, Context
from inmotion.testing import eventually


@pytest.fixture(params=["memory", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with connect("memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'log.db'}") as log:
        yield log


def test_local_records_are_delivered_in_order_around_gaps_left_by_other_publishers(shared: Log) -> None:
    handled: dict[int, list[int]] = {0: [], 1: []}
    read: set[tuple[int, int]] = set()
    original_read = shared.read

    def counting_read(topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        records = original_read(topic, partition, offset, limit)
        read.update((r.partition, r.offset) for r in records)
        return records

    shared.read = counting_read  # type: ignore[method-assign]

    async def scenario() -> None:
        with App("shop", shared) as app, App("elsewhere", shared) as other:
            app.log.create_topic("orders", TopicConfig(partitions=2))

            @app.subscribe("orders", group="billing")
            async def charge(order: dict[str, int], ctx: Context) -> None:
                handled[ctx.partition].append(ctx.offset)

            await app.start()
            # the hand-off needs an owner: publishing before the member holds its partitions
            # (appends no longer wait on a thread) would leave every record to the fetch loop
            await eventually(lambda: len(app.coordinator.owners("billing")) == 2, what="the member to join")
            published = 0
            for round in range(20):
                # The app's own publishes come straight to its consumer; the others' (another
                # app's publisher, publish_sync from a thread) leave gaps that it must read.
                await app.publish_many("orders", [app.build_event("orders", {"n": n}, key=str(n)) for n in range(10)])
                if round % 3 == 0:
                    await other.publish("orders", {"n": round}, key=str(round))
                    published += 1
                if round % 4 == 0:
                    await asyncio.to_thread(app.publish_sync, "orders", {"n": round}, key=str(round + 1))
                    published += 1
                published += 10
            await eventually(lambda: len(handled[0]) + len(handled[1]) == published, what="every event")
            await asyncio.sleep(0.1)  # nothing more arrives: no duplicates
            await app.stop()
            for partition, offsets in handled.items():
                assert offsets == list(range(shared.latest_offset("orders", partition)))

    asyncio.run(scenario())
    delivered = {(p, o) for p, offsets in handled.items() for o in offsets}
    assert delivered - read, "every record was read back: the local hand-off was not used"


def test_local_records_of_partitions_another_member_owns_are_left_to_it(shared: Log) -> None:
    handled: dict[str, list[tuple[int, int]]] = {"one": [], "two": []}

    def make(name: str) -> App:
        app = App(name, shared, session_timeout=1.0)

        @app.subscribe("orders", group="billing")
        async def charge(order: dict[str, int], ctx: Context) -> None:
            handled[name].append((ctx.partition, ctx.offset))

        return app

    async def scenario() -> None:
        with make("one") as one, make("two") as two:
            one.log.create_topic("orders", TopicConfig(partitions=4))
            await one.start()
            await two.start()
            await eventually(lambda: len(set(one.coordinator.owners("billing").values())) == 2, what="a split")
            await asyncio.sleep(0.2)  # let both members start their workers
            for n in range(0, 200, 10):
                await one.publish_many(
                    "orders", [one.build_event("orders", {"n": i}, key=str(i)) for i in range(n, n + 10)]
                )
            await eventually(lambda: len(handled["one"]) + len(handled["two"]) == 200, what="every event")
            await asyncio.sleep(0.1)
            await one.stop()
            await two.stop()

    asyncio.run(scenario())
    assert handled["two"], "the second member got no partitions"
    ones = {partition for partition, _ in handled["one"]}
    twos = {partition for partition, _ in handled["two"]}
    assert not ones & twos
    assert len(set(handled["one"]) | set(handled["two"])) == 200
