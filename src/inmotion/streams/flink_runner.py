"""Runs a job's statements on Apache Flink through PyFlink. `inmotion sql run --engine flink`
starts this file with the Python that has PyFlink (it imports nothing of inmotion, whose
environment may not have PyFlink), the job as a JSON object on standard input:

    {"name": job, "settings": {option: value}, "tables": [CREATE TABLE ...],
     "inserts": [INSERT INTO ...], "jars": [path], "address": "host:port" or null,
     "state": directory}

It submits the INSERTs as one Flink job (on a local mini-cluster in this process, or on the
cluster whose REST endpoint is `address`), resuming from the newest savepoint or retained
checkpoint under `state`, says `job <name> running as <id>` on standard error and waits.
SIGTERM or SIGINT stop the job with a savepoint, which the next run resumes from; a crash
leaves the checkpoints, taken every `execution.checkpointing.interval` (10 s unless the script
sets it). A job that fails exits 1 with Flink's reason."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError  # type: ignore[import-not-found]
from pyflink.common import Configuration  # type: ignore[import-not-found]
from pyflink.java_gateway import get_gateway  # type: ignore[import-not-found]
from pyflink.table import EnvironmentSettings, TableEnvironment  # type: ignore[import-not-found]

CHECKPOINT_INTERVAL = "10 s"
_DONE = ("FINISHED", "CANCELED", "FAILED")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def newest_state(state: Path) -> Path | None:
    """The newest savepoint or retained checkpoint (a directory with `_metadata`) under `state`."""
    found = [p.parent for p in state.glob("savepoints/*/_metadata")]
    found += [p.parent for p in state.glob("checkpoints/*/chk-*/_metadata")]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def configuration(job: dict[str, Any], state: Path) -> Configuration:
    config = Configuration()
    settings = {
        "parallelism.default": "1",
        "pipeline.name": job["name"],
        "table.local-time-zone": "UTC",  # TIMESTAMP_LTZ as the embedded engine reads and writes it
        "pipeline.jars": ";".join(f"file://{Path(jar).resolve()}" for jar in job["jars"]),
        "execution.checkpointing.interval": CHECKPOINT_INTERVAL,
        "execution.checkpointing.dir": f"file://{state / 'checkpoints'}",
        "execution.checkpointing.savepoint-dir": f"file://{state / 'savepoints'}",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        **job["settings"],
    }
    if job.get("address"):
        host, _, port = job["address"].rpartition(":")
        settings.update({"execution.target": "remote", "rest.address": host, "rest.port": port})
    resume = newest_state(state)
    if resume is not None:
        settings["execution.state-recovery.path"] = f"file://{resume}"
        say(f"job {job['name']}: resuming from {resume}")
    for key, value in settings.items():
        config.set_string(key, str(value))
    return config


def main() -> int:
    job = json.load(sys.stdin)
    state = Path(job["state"]).resolve()
    state.mkdir(parents=True, exist_ok=True)
    settings = (
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(configuration(job, state)).build()
    )
    env = TableEnvironment.create(settings)
    for statement in job["tables"]:
        env.execute_sql(statement)
    statements = env.create_statement_set()
    for insert in job["inserts"]:
        statements.add_insert_sql(insert)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = statements.execute().get_job_client()
    say(f"job {job['name']} running as {client.get_job_id()}")
    while not stop.wait(0.5):
        status = client.get_job_status().result().name
        if status in _DONE:
            break
    else:
        # PyFlink 2.3's stop_with_savepoint calls a Java method that is gone: Java's, directly
        canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        stopping = client._j_job_client.stopWithSavepoint(False, f"file://{state / 'savepoints'}", canonical)
        path = stopping.get()
        say(f"job {job['name']} stopped with savepoint {path}")
        return 0
    try:
        client.get_job_execution_result().result()
    except Py4JJavaError as exc:
        cause = exc.java_exception
        while cause.getCause() is not None:
            cause = cause.getCause()
        say(f"job {job['name']} failed: {cause.toString()}")
        return 1
    say(f"job {job['name']} ended: {status.lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
