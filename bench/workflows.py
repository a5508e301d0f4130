"""Durable workflows next to DBOS Transact (the `dbos` package, its default SQLite system
database), in one run.

    .venv/bin/python bench/workflows.py            # 2,000 workflows a round, 10,000 timers
    .venv/bin/python bench/workflows.py --quick    # a smoke run at a tenth of the size

- One at a time: a 3-step workflow (no-op steps, every step a durable write) started and
  awaited before the next; instances per second.
- Many in flight: the same, all started at once, then awaited (inmotion group-commits the step
  records of instances that are ready together).
- Request/reply: a workflow that sends a command to a service (a subscriber of the same app)
  and waits for its reply, one at a time and many in flight.
- Resume after kill -9: a worker process with instances asleep is killed; a second worker takes
  its shard over and finishes them. Seconds from the kill to the first instance finished,
  against the target of session timeout + 1 s.
- Timers: 10,000 instances started, then sleeping until due times spread over 5 s (from 6 s
  after the first start, when all are asleep); lateness of each wake-up.

Targets: >= 10x DBOS one at a time, >= 20x with many in flight; resume within session timeout
+ 1 s; with 10,000 pending timers, p99 lateness <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from inmotion import App, Context
from inmotion.testing import eventually, wait_until
from inmotion.workflows import Workflow
from inmotion.workflows.store import open_workflow_recorder

SESSION_TIMEOUT = 2.0
PARTITIONS = 4
"""The inbox's partitions (the App's default): a single worker owns them all."""


async def nothing(n: int) -> int:
    return n


# --- inmotion -----------------------------------------------------------------------------------------
def inmotion_app(url: str) -> App:
    app = App("bench", url, session_timeout=SESSION_TIMEOUT)

    @app.workflow("three")
    async def three(wf: Workflow, n: int) -> int:
        a = await wf.step(nothing, n)
        b = await wf.step(nothing, a)
        return int(await wf.step(nothing, b))

    @app.subscribe("bench.payments", group="payments")
    async def payments(n: int, ctx: Context) -> None:
        await ctx.reply(n + 1)

    @app.workflow("ask")
    async def ask(wf: Workflow, n: int) -> int:
        return int(await wf.request("bench.payments", n, reply=int, timeout=30))

    @app.workflow("nap")
    async def nap(wf: Workflow, due: float) -> float:
        await wf.sleep(max(0.0, due - wf.now().timestamp()))
        return time.time() - due

    return app


async def inmotion_rounds(directory: Path, count: int) -> dict[str, float]:
    rates = {}
    with inmotion_app(f"sqlite:///{directory / 'inmotion.db'}") as app:
        stop = asyncio.Event()
        running = asyncio.create_task(app.run(until=stop))
        await eventually(lambda: len(app.workflows.shards) == PARTITIONS, what="the app to own every shard")
        for name in ("three", "ask"):
            rates[f"{name} one at a time"] = await one_at_a_time(app, name, count // (4 if name == "ask" else 1))
            rates[f"{name} many in flight"] = await many_in_flight(app, name, count)
        stop.set()
        await running
    return rates


async def one_at_a_time(app: App, name: str, count: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        handle = await app.start_workflow(name, n, id=f"{name}-seq-{n}")
        await handle.result()
    return report(f"inmotion  {name}, one at a time", count, time.perf_counter() - start)


async def many_in_flight(app: App, name: str, count: int) -> float:
    start = time.perf_counter()
    handles = await asyncio.gather(*(app.start_workflow(name, n, id=f"{name}-par-{n}") for n in range(count)))
    await asyncio.gather(*(handle.result() for handle in handles))
    return report(f"inmotion  {name}, {count:,} in flight", count, time.perf_counter() - start)


async def timers(directory: Path, count: int) -> list[float]:
    """Lateness (seconds) of `count` sleeps due over 5 s, with all of them pending at once."""
    with inmotion_app(f"sqlite:///{directory / 'timers.db'}") as app:
        stop = asyncio.Event()
        running = asyncio.create_task(app.run(until=stop))
        await eventually(lambda: len(app.workflows.shards) == PARTITIONS, what="the app to own every shard")
        first_due = time.time() + 6.0  # after all are started
        handles = await asyncio.gather(
            *(app.start_workflow("nap", first_due + 5.0 * n / count, id=f"nap-{n}") for n in range(count))
        )
        lateness = [await handle.result() for handle in handles]
        stop.set()
        await running
    return lateness


def sleeping_worker(url: str) -> None:
    logging.basicConfig(level=logging.ERROR)
    inmotion_app(url).run_sync()


def resume_after_kill(directory: Path, count: int) -> float:
    """Start `count` instances asleep in a worker process, kill it with -9, start another:
    seconds from the kill to the first instance finished."""
    url = f"sqlite:///{directory / 'resume.db'}"
    spawn = multiprocessing.get_context("spawn")
    first = spawn.Process(target=sleeping_worker, args=(url,), daemon=True)
    first.start()

    async def start() -> None:
        with inmotion_app(url) as app:
            due = time.time() + 3.0
            await asyncio.gather(*(app.start_workflow("nap", due, id=f"nap-{n}") for n in range(count)))

    asyncio.run(start())
    recorder = open_workflow_recorder(url)
    wait_until(lambda: len(recorder.instances(statuses=("sleeping",))) == count, what="the instances to sleep")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    first.join()
    second = spawn.Process(target=sleeping_worker, args=(url,), daemon=True)
    second.start()
    wait_until(lambda: bool(recorder.instances(statuses=("completed",), limit=1)), what="an instance to finish")
    took = time.monotonic() - killed
    wait_until(lambda: len(recorder.instances(statuses=("completed",))) == count, what="every instance to finish")
    second.terminate()
    second.join()
    recorder.close()
    return took


# --- DBOS ---------------------------------------------------------------------------------------------
def dbos_rounds(directory: Path, count: int) -> dict[str, float]:
    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.ERROR)
    DBOS(config=DBOSConfig(name="bench", system_database_url=f"sqlite:///{directory / 'dbos.sqlite'}"))

    @DBOS.step()
    async def step(n: int) -> int:
        return n

    @DBOS.workflow()
    async def three(n: int) -> int:
        return await step(await step(await step(n)))

    async def rounds() -> dict[str, float]:
        start = time.perf_counter()
        for n in range(count):
            await (await DBOS.start_workflow_async(three, n)).get_result()
        sequential = report("DBOS      three, one at a time", count, time.perf_counter() - start)
        start = time.perf_counter()
        handles = await asyncio.gather(*(DBOS.start_workflow_async(three, n) for n in range(count)))
        await asyncio.gather(*(handle.get_result() for handle in handles))
        concurrent = report(f"DBOS      three, {count:,} in flight", count, time.perf_counter() - start)
        return {"three one at a time": sequential, "three many in flight": concurrent}

    DBOS.launch()
    try:
        return asyncio.run(rounds())
    finally:
        DBOS.destroy()


def report(label: str, count: int, seconds: float) -> float:
    rate = count / seconds
    print(f"  {label:<40} {rate:>9,.0f} workflows/s  ({seconds:.2f}s)", flush=True)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run at a tenth of the size")
    args = parser.parse_args()
    count, timer_count = (200, 1000) if args.quick else (2000, 10_000)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print("3-step workflows (no-op steps), SQLite on a local disk", flush=True)
        ours = asyncio.run(inmotion_rounds(directory, count))
        # DBOS is slower by design (a transaction per step): a fifth of the workflows gives steady figures
        theirs = dbos_rounds(directory, max(count // 5, 50))
        for label in ("three one at a time", "three many in flight"):
            print(f"  ratio, {label:<32} {ours[label] / theirs[label]:>9.1f}x DBOS")
        print(f"\nresume after kill -9 (session timeout {SESSION_TIMEOUT:g}s, 100 instances asleep)", flush=True)
        took = resume_after_kill(directory, 100)
        print(f"  first instance finished {took:.2f}s after the kill (target {SESSION_TIMEOUT + 1:g}s)")
        print(f"\n{timer_count:,} timers pending, due over 5 s", flush=True)
        lateness = sorted(x * 1000 for x in asyncio.run(timers(directory, timer_count)))
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))]
        print(f"  lateness p50 {statistics.median(lateness):.1f} ms, p99 {p99:.1f} ms, max {lateness[-1]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
