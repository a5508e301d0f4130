"""`inmotion sql query|run|explain|jobs|reset`: continuous SQL over topics (inmotion.streams).

The engine (and Arrow) load only when one of these commands runs."""

from __future__ import annotations

import json as json_module
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from inmotion.cli.common import BrokerOption, JsonOption, fail, open_log, print_json
from inmotion.errors import InmotionError
from inmotion.log import default_broker

if TYPE_CHECKING:
    import pyarrow as pa

    from inmotion.streams.operators import Plan

_logger = logging.getLogger("inmotion.streams")

sql_app = typer.Typer(help="Continuous SQL over topics, in Flink's dialect.", no_args_is_help=True)

ScriptArgument = Annotated[
    str,
    typer.Argument(
        metavar="SQL",
        help="A file of SQL (CREATE TABLEs, then queries), or the SQL itself; - reads standard input.",
    ),
]


def _script(text: str) -> str:
    if text == "-":
        return sys.stdin.read()
    path = Path(text)
    if text.endswith(".sql") or (len(text) < 4096 and "\n" not in text and path.is_file()):
        try:
            return path.read_text()
        except OSError as exc:
            fail(f"cannot read {text}: {exc.strerror}")
    return text


def _value(value: Any) -> Any:
    from inmotion.streams.job import iso_millis

    return iso_millis(value) if isinstance(value, datetime) else value


def query(
    sql: ScriptArgument,
    broker: BrokerOption = None,
    json: JsonOption = False,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Seconds before a silent partition stops holding the watermark.")
    ] = 5.0,
) -> None:
    """Run SELECTs once over what the topics hold now: windows fire as the watermark passes
    them and the rest at the end. Rows print as a table, or one JSON object per line."""
    from inmotion.streams.job import Job

    text = _script(sql)
    log = open_log(broker, create=False)
    console = Console(stderr=True)
    try:
        job = Job(log, text, idle_timeout=idle_timeout)
        printed: dict[int, Table] = {}
        with Progress(console=console, transient=True, disable=json or not console.is_terminal) as bar:
            task = bar.add_task("reading", total=None)
            for plan, table in job.query(lambda done, total: bar.update(task, completed=done, total=total)):
                if json:
                    _print_json(table)
                else:
                    _add_rows(printed, plan, table)
        for shown in printed.values():
            Console().print(shown)
        if not json and not printed:
            typer.echo("(no rows)")
    finally:
        log.close()


def _print_json(table: pa.Table) -> None:
    names = table.column_names
    for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
        print_json({n: _value(v) for n, v in zip(names, row, strict=True)})


def _add_rows(printed: dict[int, Table], plan: Plan, table: pa.Table) -> None:
    shown = printed.get(id(plan))
    if shown is None:
        shown = printed[id(plan)] = Table(*table.column_names)
    for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
        shown.add_row(*("NULL" if v is None else str(_value(v)) for v in row))


def run(
    sql: ScriptArgument,
    name: Annotated[str | None, typer.Option("--name", help="The job's name (default: the file's name).")] = None,
    broker: BrokerOption = None,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Seconds before a silent partition stops holding the watermark.")
    ] = 5.0,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between checkpoints while busy.")] = 0.2,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="embedded: in this process; flink: on Apache Flink through PyFlink (the broker is kafka://).",
        ),
    ] = "embedded",
    flink: Annotated[
        str | None,
        typer.Option(
            "--flink",
            help="With --engine flink: a Flink cluster's REST address, host:port (default: a local mini-cluster).",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state", help="With --engine flink: the job's checkpoints and savepoints (default: .inmotion-flink/NAME)."
        ),
    ] = None,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="Share the job with the other processes running it --split: each runs the partitions a consumer"
            " group gives it (the job's state must be per key of its topic: see 'key.fields').",
        ),
    ] = False,
    session_timeout: Annotated[
        float,
        typer.Option("--session-timeout", help="With --split: seconds before a silent process's partitions move."),
    ] = 10.0,
) -> None:
    """Run a job until SIGTERM or Ctrl-C (then checkpoint and stop): its INSERT INTOs append
    results to their topics exactly once, also across crashes; the rows of its SELECTs print
    as JSON lines once checkpointed. A job resumes from its last checkpoint. With --engine
    flink the same SQL runs on Apache Flink: stopped with a savepoint, resumed from it."""
    from inmotion.streams.job import Job
    from inmotion.streams.shards import Shards

    text = _script(sql)
    job_name = name or (Path(sql).stem if sql.endswith(".sql") else None)
    if not job_name:
        fail("name the job: --name NAME (or run a .sql file, whose name it takes)", code=2)
    if engine not in ("embedded", "flink"):
        fail(f"--engine {engine}: the engines are embedded and flink", code=2)
    if split and engine == "flink":
        fail("--split shares an embedded job between processes; on Flink, set 'parallelism.default'", code=2)
    from inmotion.runtime import logs  # here, not above: the other sql commands start without the runtime

    logs.configure(log_level)
    if engine == "flink":
        _run_on_flink(text, job_name, broker or default_broker(), flink, state or Path(".inmotion-flink") / job_name)
        return
    log = open_log(broker)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        job: Job | Shards
        if split:
            shards = Shards(
                log, text, job_name, idle_timeout=idle_timeout, interval=interval, session_timeout=session_timeout
            )
            _logger.info("job %s: split by partition of %s, over %s", job_name, shards.topic, log.url)
            job = shards
        else:
            job = Job(log, text, name=job_name, idle_timeout=idle_timeout, interval=interval)
            _logger.info("job %s: %d queries over %s", job_name, len(job.plans), log.url)
        try:
            job.run(stop, lambda plan, table: _print_json(table))
        except InmotionError:
            raise
        except Exception as exc:  # a bug of the engine: one line, the traceback in the debug log
            _logger.debug("job %s failed", job_name, exc_info=True)
            fail(f"job {job_name} failed: {type(exc).__name__}: {exc} (--log-level debug shows where)")
    finally:
        log.close()


def _run_on_flink(text: str, name: str, broker: str, address: str | None, state: Path) -> None:
    """Submit the job to Flink through PyFlink's Python (`inmotion.streams.flink_runner`) and
    wait for it; SIGTERM and Ctrl-C stop it with a savepoint."""
    from inmotion.streams import flink
    from inmotion.streams.sql import parse

    url = urlsplit(broker)
    if url.scheme != "kafka":
        fail(f"--engine flink runs over Kafka (Flink reads and writes the topics): --broker kafka://..., not {broker}")
    statements = parse(text)
    job = flink.flink_job(statements, url.netloc, name)
    job.update(jars=flink.flink_jars(), address=address, state=str(state))
    python = flink.flink_python()
    with open_log(broker) as log:
        flink.prepare_topics(log, statements)
    _logger.info("job %s: submitting %d queries to Flink (%s)", name, len(job["inserts"]), address or "local")
    process = subprocess.Popen([python, str(flink.RUNNER)], stdin=subprocess.PIPE, text=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: process.send_signal(signal.SIGTERM))
    assert process.stdin is not None
    process.stdin.write(json_module.dumps(job))
    process.stdin.close()
    code = process.wait()
    if code:
        raise typer.Exit(code)


def explain(sql: ScriptArgument, broker: BrokerOption = None) -> None:
    """Print each query's operators: what it reads, its windows, keys and state, and whether
    the topics it reads exist on the broker."""
    from inmotion.streams.plan import plans
    from inmotion.streams.sql import parse

    text = _script(sql)
    queries = plans(parse(text), text)
    try:
        log = open_log(broker, create=False)
    except InmotionError:
        topics = None
    else:
        with log:
            topics = set(log.list_topics())
    for i, plan in enumerate(queries):
        if i:
            typer.echo("")
        first = " ".join(plan.query.text.split())
        typer.echo(f"query {i + 1}: {first[:100]}{'...' if len(first) > 100 else ''}")
        for line in plan.explain():
            typer.echo(f"  {line}")
        if topics is not None and plan.source.topic not in topics:
            typer.echo(f"  note: topic {plan.source.topic} does not exist yet")


def jobs(broker: BrokerOption = None, json: JsonOption = False) -> None:
    """List SQL jobs: status (running, stopped, failed, or gone: killed without stopping),
    checkpoints, watermark, lag, late and malformed events."""
    import msgspec

    from inmotion.streams.checkpoints import open_checkpoints
    from inmotion.streams.job import Progress as JobProgress

    log = open_log(broker, create=False)
    try:
        rows = []
        for info in open_checkpoints(log).jobs():
            progress = msgspec.msgpack.decode(info.progress, type=list[JobProgress]) if info.progress else []
            lag = 0
            for topic, offsets in info.positions.values():
                lag += sum(max(0, log.latest_offset(topic, p) - o) for p, o in offsets.items())
            marks = [p.watermark for p in progress if p.watermark is not None]
            rows.append(
                {
                    "job": info.name,
                    "status": _status(info.status, info.owner),
                    "owner": info.owner,
                    "checkpoints": info.sequence,
                    "updated": datetime.fromtimestamp(info.updated_ms / 1000)
                    .astimezone()
                    .isoformat(timespec="seconds"),
                    "watermark": _value(datetime.fromtimestamp(min(marks) / 1000).astimezone()) if marks else None,
                    "lag": lag,
                    "read": sum(p.read for p in progress),
                    "emitted": sum(p.emitted for p in progress),
                    "late": sum(p.late for p in progress),
                    "malformed": sum(p.malformed for p in progress),
                    "error": info.error,
                }
            )
    finally:
        log.close()
    if json:
        for row in rows:
            print_json(row)
        return
    if not rows:
        typer.echo("no SQL jobs")
        return
    shown = [name for name in rows[0] if name not in ("owner", "updated", "error")]
    table = Table(*(name.upper() for name in shown))
    for row in rows:
        table.add_row(*("" if row[k] is None else str(row[k]) for k in shown))
    Console().print(table)
    for row in rows:
        if row["error"]:
            typer.echo(f"{row['job']}: {row['error']}")


def _status(status: str, owner: str) -> str:
    """A job marked running whose process on this host is gone was killed (kill -9, a crash):
    `gone`, until it is started again (it resumes from its last checkpoint)."""
    host, _, pid = owner.rpartition(":")
    if status != "running" or host != socket.gethostname() or not pid.isdigit():
        return status
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass
    return status


def reset(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's name.")],
    broker: BrokerOption = None,
) -> None:
    """Forget a job's state and positions: started again, it reads its sources from the start."""
    from inmotion.streams.checkpoints import open_checkpoints
    from inmotion.streams.shards import SEPARATOR

    log = open_log(broker, create=False)
    try:
        checkpoints = open_checkpoints(log)
        shards = [info.name for info in checkpoints.jobs() if info.name.startswith(f"{job}{SEPARATOR}")]
        found = [name for name in [job, *shards] if checkpoints.reset(name)]
        if not found:
            fail(f"no SQL job {job}")
    finally:
        log.close()
    typer.echo(f"job {job} reset" + (f" ({len(shards)} shards)" if shards else ""))


def nexmark(
    events: Annotated[int, typer.Option("--events", "-n", help="How many events (persons, auctions, bids).")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="The same seed gives the same events.")] = 0,
    rate: Annotated[int, typer.Option("--rate", help="Events per second of event time.")] = 10_000,
    ddl: Annotated[bool, typer.Option("--ddl", help="Only print the tables' CREATE TABLEs and the queries.")] = False,
    broker: BrokerOption = None,
) -> None:
    """Generate Nexmark's persons, auctions and bids into the topics persons, auctions, bids
    (seeded: the same on every machine), then print the tables' DDL and the queries to run."""
    from inmotion.streams import nexmark as model

    if not ddl:
        if events < 1 or rate < 1:
            fail("--events and --rate must be positive", code=2)
        log = open_log(broker)
        console = Console(stderr=True)
        try:
            with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
                task = bar.add_task("generating", total=events)
                model.write(log, events, seed=seed, rate=rate, progress=lambda done: bar.update(task, completed=done))
        finally:
            log.close()
        typer.echo(f"appended {events} events to {', '.join(model.TOPICS)}", err=True)
    typer.echo(model.DDL.strip())
    for name, text in model.QUERIES.items():
        typer.echo(f"-- {name}\n{text};")


sql_app.command("query")(query)
sql_app.command("run")(run)
sql_app.command("explain")(explain)
sql_app.command("jobs")(jobs)
sql_app.command("reset")(reset)
sql_app.command("nexmark")(nexmark)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the command line."""
    app.add_typer(sql_app, name="sql")
