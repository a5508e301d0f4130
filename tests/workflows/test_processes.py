"""Workflow workers as real processes on one SQLite file, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator, Mapping
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

import inmotion
from inmotion.testing import wait_until
from inmotion.workflows.store import FINISHED, WorkflowRecorder, open_workflow_recorder

from . import workers

spawn = multiprocessing.get_context("spawn")


@contextlib.contextmanager
def worker(url: str, effects: Path, *options: object) -> Iterator[BaseProcess]:
    process = spawn.Process(target=workers.serve, args=(url, str(effects), *options), daemon=True)
    process.start()
    try:
        yield process
    finally:
        if process.is_alive():
            process.terminate()
            process.join(timeout=30)


def kill(process: BaseProcess) -> None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL


def start_trips(url: str, effects: Path, plans: Mapping[str, Mapping[str, object]], name: str = "trips") -> None:
    """Start instances from a process that does not run the app: their start requests wait
    on the inbox for a worker."""

    async def start() -> None:
        with workers.trip_app(url, str(effects), name) as app:
            for trip, plan in plans.items():
                await app.start_workflow("trip", plan, id=trip)

    asyncio.run(start())


def statuses(recorder: WorkflowRecorder) -> collections.Counter[str]:
    return collections.Counter(i.status for i in recorder.instances())


def test_instances_of_a_killed_worker_finish_on_another_with_each_step_recorded_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    effects = tmp_path / "effects.txt"
    plans = {
        f"t{n}": {"slow": 0.05 + 0.05 * (n % 4), "sleep": 0.3 + 0.2 * (n % 5), "fails": n % 3 == 0} for n in range(40)
    }
    start_trips(url, effects, plans)
    recorder = open_workflow_recorder(url)
    try:
        with worker(url, effects) as first:
            # kill it while some instances sleep, some run a step and some compensate
            wait_until(
                lambda: {"sleeping", "compensating"} <= set(statuses(recorder)),
                what="instances sleeping and compensating",
            )
            at_kill = statuses(recorder)
            kill(first)
        killed_at = time.monotonic()
        with worker(url, effects):
            wait_until(
                lambda: sum(statuses(recorder)[s] for s in FINISHED) == len(plans), limit=60, what="every trip to end"
            )
            took = time.monotonic() - killed_at
        instances = {i.id: i for i in recorder.instances()}
        histories = {trip: (recorder.load(f"trip/{trip}") or (None, []))[1] for trip in plans}
    finally:
        recorder.close()
    assert at_kill["completed"] < len(plans), at_kill
    assert took < 30
    for trip, plan in plans.items():
        assert instances[trip].status == ("compensated" if plan["fails"] else "completed"), instances[trip]
        steps = [(e.seq, e.kind) for e in histories[trip] if e.kind in ("step", "step_failed")]
        assert steps == [(1, "step"), (3, "step"), (4, "step_failed" if plan["fails"] else "step")]
        undone = [e.seq for e in histories[trip] if e.kind == "undone"]
        assert undone == ([2, 1] if plan["fails"] else [])

    runs = collections.Counter(line.rsplit(" ", 1)[0] for line in effects.read_text().splitlines())
    for trip, plan in plans.items():
        # at-least-once: a step or undo that was running when the worker died ran again, once
        for action in (f"book hotel-{trip}", f"book car-{trip}", f"pay {trip}"):
            assert 1 <= runs[action] <= 2, (action, runs[action])
        for booking in (f"hotel-{trip}", f"car-{trip}"):
            assert runs[f"cancel {booking}"] in ((1, 2) if plan["fails"] else (0,)), (booking, runs)
    repeated = sum(count - 1 for count in runs.values() if count > 1)
    print(f"at the kill: {dict(at_kill)}; runs repeated after it: {repeated}; all ended {took:.1f}s after it")
    assert repeated <= at_kill["running"] + at_kill["compensating"]


def test_a_thousand_instances_with_timers_finish_across_two_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    effects = tmp_path / "effects.txt"
    plans = {f"t{n}": {"slow": 0, "sleep": 1.0, "fails": False} for n in range(1000)}
    recorder = open_workflow_recorder(url)
    try:
        with worker(url, effects), worker(url, effects), inmotion.connect(url) as log:
            coordinator = log.group_coordinator()
            wait_until(
                lambda: len(set(coordinator.owners("trips.workflows").values())) == 2,
                what="both workers to own shards",
            )
            coordinator.close()
            start_trips(url, effects, plans)
            wait_until(lambda: statuses(recorder)["completed"] == len(plans), limit=120, what="1,000 trips to complete")
        histories = [(recorder.load(f"trip/{trip}") or (None, []))[1] for trip in plans]
    finally:
        recorder.close()
    for history in histories:
        assert [(e.seq, e.kind) for e in history if e.kind == "step"] == [(1, "step"), (3, "step"), (4, "step")]
    lines = effects.read_text().splitlines()
    runs = collections.Counter(line.rsplit(" ", 1)[0] for line in lines)
    assert set(runs) == {f"{action}{trip}" for trip in plans for action in ("book hotel-", "book car-", "pay ")}
    # each step ran once, unless a worker too busy to renew its leases in time lost a shard to
    # the other while running it (at-least-once); its history records it once all the same
    assert sum(count - 1 for count in runs.values()) <= len(plans) // 20
    assert len({line.rsplit(" ", 1)[1] for line in lines}) == 2, "both workers ran instances"


@pytest.mark.kafka
@pytest.mark.slow
def test_on_kafka_a_killed_workers_instances_finish_on_another(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands, replies and the inbox on Kafka (Kafka's group protocol moves the shards), the
    histories in a SQLite file."""
    url = f"kafka://{kafka_bootstrap}"
    store = f"sqlite:///{tmp_path / 'workflows.db'}"
    monkeypatch.setenv("INMOTION_WORKFLOW_STORE", store)  # the workers inherit it
    name = f"trips-{uuid.uuid4().hex[:8]}"
    effects = tmp_path / "effects.txt"
    plans = {f"k{n}": {"slow": 0.05, "sleep": 3.0, "fails": n % 4 == 0} for n in range(20)}
    recorder = open_workflow_recorder(store)
    try:
        with worker(url, effects, name, 6.0) as first:
            start_trips(url, effects, plans, name)
            wait_until(lambda: statuses(recorder)["sleeping"] == len(plans), limit=60, what="every trip asleep")
            kill(first)
        with worker(url, effects, name, 6.0):
            wait_until(
                lambda: sum(statuses(recorder)[s] for s in FINISHED) == len(plans), limit=90, what="every trip to end"
            )
        instances = {i.id: i for i in recorder.instances()}
        histories = {trip: (recorder.load(f"trip/{trip}") or (None, []))[1] for trip in plans}
    finally:
        recorder.close()
    for trip, plan in plans.items():
        assert instances[trip].status == ("compensated" if plan["fails"] else "completed")
        steps = [(e.seq, e.kind) for e in histories[trip] if e.kind in ("step", "step_failed")]
        assert steps == [(1, "step"), (3, "step"), (4, "step_failed" if plan["fails"] else "step")]
    runs = collections.Counter(line.rsplit(" ", 1)[0] for line in effects.read_text().splitlines())
    assert all(runs[f"book hotel-{trip}"] == 1 for trip in plans), runs  # recorded before the kill
