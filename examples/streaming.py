"""What the continuous-SQL examples share: their job runs as `inmotion sql run JOB.sql`, a
process of its own, while the example appends its input in chunks; with `--kill` the job is
killed with SIGKILL halfway and started again, and the results must come out the same (each
once). Their command line: `--broker URL` (else a SQLite file in a temporary directory), `--kill`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inmotion.events import Event
from inmotion.log import Log, TopicConfig, connect
from inmotion.streams.checkpoints import open_checkpoints
from inmotion.testing import wait_until

INMOTION = str(Path(sys.executable).parent / "inmotion")


def start(broker: str, job: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [INMOTION, "sql", "run", str(job), "--broker", broker, "--log-level", "warning", "--interval", "0.05"],
        stdout=subprocess.DEVNULL,
    )


def caught_up(log: Log, job: str, topics: Sequence[str]) -> bool:
    """Has the job read everything its sources hold (and checkpointed it)?"""
    for info in open_checkpoints(log).jobs():
        if info.name == job:
            ends = {t: {p: log.latest_offset(t, p) for p in range(log.partition_count(t))} for t in topics}
            read = dict(info.positions.values())
            return all(read.get(t) == ends[t] for t in topics)
    return False


def run(
    broker: str,
    job: Path,
    inputs: Sequence[tuple[str, Event]],
    sinks: Sequence[str],
    *,
    kill: bool,
    partitions: int = 4,
) -> dict[str, list[dict[str, Any]]]:
    """Run `job` over `inputs` (topic, event), appended in 10 chunks while it runs; with
    `kill`, SIGKILL it after the fifth chunk and start it again. The sinks' events' data, by
    sink, in the order the job appended them."""
    topics = sorted({topic for topic, _ in inputs})
    with connect(broker) as log:
        for topic in topics:
            if topic not in log.list_topics():
                log.create_topic(topic, TopicConfig(partitions=partitions))
        process = start(broker, job)
        try:
            chunk = -(-len(inputs) // 10)
            for n, first in enumerate(range(0, len(inputs), chunk), 1):
                for topic in topics:
                    log.append_events(topic, [e for t, e in inputs[first : first + chunk] if t == topic])
                if kill and n == 5:
                    wait_until(lambda: any(_events(log, s) for s in sinks), what="the job's first results")
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    print(f"  (job killed with SIGKILL after {first + chunk} of {len(inputs)} events; restarted)")
                    process = start(broker, job)
            wait_until(lambda: caught_up(log, job.stem, topics), limit=60, what="the job to read every event")
        finally:
            process.send_signal(signal.SIGTERM)
            if process.wait(timeout=30) != 0:
                raise SystemExit(f"the job stopped with exit status {process.returncode}")
        return {sink: _events(log, sink) for sink in sinks}


def _events(log: Log, topic: str) -> list[dict[str, Any]]:
    if topic not in log.list_topics():
        return []
    found: list[dict[str, Any]] = []
    for partition in range(log.partition_count(topic)):
        found.extend(
            {"type": event.type, **event.data}
            for event in (record.event() for record in log.read(topic, partition, 0, 1_000_000))
        )
    return found


def main(example: Callable[[str, bool], int], description: str | None) -> None:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", help="the log (default: a SQLite file in a temporary directory)")
    parser.add_argument("--kill", action="store_true", help="kill the job with SIGKILL halfway, then restart it")
    args = parser.parse_args()
    if args.broker:
        sys.exit(example(args.broker, args.kill))
    with tempfile.TemporaryDirectory() as directory:
        os.environ.pop("INMOTION_BROKER", None)
        sys.exit(example(f"sqlite:///{directory}/example.db", args.kill))
