"""Replay from any point: a worker that dies leaves a prefix of an instance's history, and the
next worker, replaying the function over it, must end the same way, without running again a
step or an undo whose end was recorded, and without changing what was recorded (hypothesis:
random workflows, resumed from every prefix of their history)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from inmotion import App, Retry
from inmotion.clock import FakeClock
from inmotion.log import partition_for_key
from inmotion.testing.properties import on_a_backend
from inmotion.workflows import Workflow, WorkflowFailed
from inmotion.workflows.store import Entry, Instance, NewEntry

from .test_workflows import running

# A workflow is a list of operations: a step that returns its number (with an undo or not), a
# step that always fails, or a sleep.
operation = st.one_of(
    st.tuples(st.just("step"), st.booleans()),
    st.tuples(st.just("fail"), st.booleans()),
    st.tuples(st.just("sleep"), st.integers(min_value=0, max_value=3600)),
)
PARTITIONS = 4
"""The partitions of the app's inbox (App's default topic config): an instance's shard."""


def define(app: App, calls: collections.Counter[str]) -> None:
    app.workflows.retry = Retry(attempts=1)

    @app.workflow("spec")
    async def spec(wf: Workflow, operations: list[list[Any]]) -> int:
        total = 0
        for n, (kind, argument) in enumerate(operations):
            if kind == "sleep":
                await wf.sleep(argument)
                continue

            async def run(number: int = n, fails: bool = kind == "fail") -> int:
                calls[f"{wf.id} run {number}"] += 1
                if fails:
                    raise RuntimeError(f"step {number} fails")
                return number

            async def undo(result: int, number: int = n) -> None:
                calls[f"{wf.id} undo {number}"] += 1

            total += await wf.step(run, name=f"op{n}", compensate=undo if argument else None)
        return total


async def histories(
    operations: list[list[Any]], prefixes: dict[str, list[Entry]]
) -> tuple[dict[str, list[Entry]], collections.Counter[str]]:
    """Run instance "whole" from its start and, beside it, one instance per prefix, resumed
    from what a dead worker left; every instance's history, and the calls of steps and undos."""
    calls: collections.Counter[str] = collections.Counter()
    spec = msgspec.json.encode(operations)
    with App("replay", "memory://", clock=FakeClock()) as app:
        define(app, calls)
        for id, prefix in prefixes.items():
            status = "compensating" if any(e.kind == "compensating" for e in prefix) else "running"
            shard = partition_for_key(id.encode(), PARTITIONS)
            instance = Instance(f"spec/{id}", "spec", id, id, shard, status, spec, len(prefix), 0, 0)
            app.workflows.recorder.create(instance, [NewEntry(e.kind, e.seq, e.name, e.payload) for e in prefix])
        async with running(app):
            if not prefixes:
                await app.start_workflow("spec", operations, id="whole")
            for id in prefixes or ["whole"]:
                with contextlib.suppress(WorkflowFailed):  # the operations may fail it: compared below
                    await app.workflows.handle(f"spec/{id}").result(10)
        found = {id: app.workflows.recorder.load(f"spec/{id}") for id in prefixes or ["whole"]}
    return {id: history[1] for id, history in found.items() if history is not None}, calls


def shape(history: list[Entry]) -> list[tuple[str, int, str]]:
    return [(e.kind, e.seq, e.name) for e in history]


@on_a_backend(max_examples=30)
@given(st.lists(operation, min_size=1, max_size=6))
def test_resuming_from_any_prefix_ends_as_an_uninterrupted_run(operations: list[Any]) -> None:
    spec = [list(op) for op in operations]
    ran, calls = asyncio.run(histories(spec, {}))
    whole = ran["whole"]
    prefixes = {f"cut{cut}": whole[:cut] for cut in range(1, len(whole))}
    resumed, calls_after = asyncio.run(histories(spec, prefixes))
    for id, prefix in prefixes.items():
        assert shape(resumed[id]) == shape(whole), id
        assert [e.payload for e in resumed[id][: len(prefix)]] == [e.payload for e in prefix], id
        ended = {int(e.name[2:]) for e in prefix if e.kind in ("step", "step_failed")}
        undone = {e.name for e in prefix if e.kind == "undone"}
        for number in range(len(spec)):
            # a step or undo whose end was recorded does not run again; the others run as often
            # as in the uninterrupted run (once: no retries here)
            expected = 0 if number in ended else calls[f"whole run {number}"]
            assert calls_after[f"{id} run {number}"] == expected, (id, number)
            expected = 0 if f"op{number}" in undone else calls[f"whole undo {number}"]
            assert calls_after[f"{id} undo {number}"] == expected, (id, number)
