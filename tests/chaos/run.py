"""The chaos run: workers and producers of tests/chaos/app.py and two `inmotion route` processes
of one group, killed (-9) and stopped (SIGSTOP) at seeded random times, then let catch up and
checked (tests/chaos/check.py). The routers send every event to a topic and to an HTTP endpoint
this runner serves, which answers 503 to about one request in fifty (their retries at work).

`python -m tests.chaos.run [--seconds S] [--broker sqlite:///PATH | --kafka-port PORT] [--seed N]`;
prints one summary line and exits 1 on a violation. With `--kafka-port` it runs on a Kafka broker
of its own (scripts/kafka, fresh data) that it kills (-9) and starts again every 15 to 25 s;
Kafka has no transactional subscription. Processes that end on their own (a worker that found
no broker at start-up, librdkafka aborting during a restart) are started again and counted as
`crashes`. Lives in the test tree because its app and checker are test code
that the slow test runs as is; `scripts/chaos` is the way in for people.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import msgspec

from inmotion.errors import InmotionError
from inmotion.log import TopicConfig, connect
from tests.chaos.check import Handled, check, summary

WORKERS = 3
PRODUCERS = 2
ROUTERS = 2
SOURCE_TOPIC = "chaos.events"  # tests/chaos/app.py's TOPIC (importing the app would make its App)
ROUTER_GROUP = "chaos.router"
ROUTED_TOPIC = "chaos.routed"
SESSION_TIMEOUT = 2.0
CATCH_UP = 60.0
# A killed member's partitions wait out its session, then the rebalance its restart brings
# (a new process: 1-2 s to start on a loaded 2-core machine); kills in a row add up: lulls of up
# to 6 s were seen. A lock held until SQLite's busy timeout (10 s) gave way is a stall.
SQLITE_STALL = 4 * SESSION_TIMEOUT
STACKS_AFTER = 5.0
"""Seconds without progress after which the run saves every process's stacks (once a stall)."""
# On Kafka a partition also waits for its broker to start again (about 10 s here) and for its
# group to settle after that: pending work without progress for this long is a stall.
KAFKA_STALL = 45.0
KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka"
LEVELS = {"chaos.plain": "plain", "chaos.idempotent": "idempotent", "chaos.transactional": "transactional"}
RULES = """\
rules:
  - name: everything
    sources: [%s]
    pattern: {data: {key: [{exists: true}]}}
    targets:
      - topic: %s
      - http: %s
        retry: {attempts: 20, backoff: 0.05, max_backoff: 1}
"""


class Endpoint(http.server.ThreadingHTTPServer):
    """The routers' HTTP target: records each event it accepts ("time_ns key seq" lines, as the
    app's effects) and refuses about one request in fifty with a 503, seeded."""

    daemon_threads = True

    def __init__(self, directory: Path, seed: int) -> None:
        super().__init__(("127.0.0.1", 0), _Delivery)
        self.effects: IO[str] = (directory / "routed-http.effects").open("a")
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a router killed mid-request is no news
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/events"


class _Delivery(http.server.BaseHTTPRequestHandler):
    server: Endpoint
    protocol_version = "HTTP/1.1"  # keep-alive: the target reuses its connections

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:
            return  # a router killed mid-request: it sends the event again after its restart
        with self.server.lock:
            refused = self.server.rng.random() < 0.02
            if not refused:
                payload = json.loads(body)
                self.server.effects.write(f"{time.time_ns()} {payload['key']} {payload['seq']}\n")
                self.server.effects.flush()
        self.send_response(503 if refused else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet: the run prints one line
        pass


def produce(directory: Path, name: str) -> None:
    """A producer: keys `<name>-<n>` with a sequence per key; a line per acknowledged event."""
    from tests.chaos.app import TOPIC, app

    acked = (directory / f"{name}.{os.getpid()}.acked").open("a")
    counters = [0] * 5
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        n = random.randrange(len(counters))
        key, seq = f"{name}.{os.getpid()}-{n}", counters[n]  # a restarted producer starts new keys
        app.publish_sync(TOPIC, {"key": key, "seq": seq}, key=key)
        acked.write(f"{key} {seq}\n")
        acked.flush()
        counters[n] += 1
        time.sleep(0.005)


def _read_pairs(paths: list[Path]) -> list[tuple[str, int]]:
    pairs = []
    for path in paths:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line a kill cut short was never flushed whole
                pairs.append((parts[0], int(parts[1])))
    return pairs


def _read_effects(paths: list[Path]) -> list[tuple[str, int]]:
    timed = []
    for path in paths:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                timed.append((int(parts[0]), parts[1], int(parts[2])))
    return [(key, seq) for _, key, seq in sorted(timed)]


class Run:
    def __init__(self, directory: Path, broker: str, seed: int) -> None:
        self.directory = directory
        self.broker = broker
        self.env = dict(os.environ, INMOTION_BROKER=broker, CHAOS_DIR=str(directory))
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {"worker": [], "producer": [], "router": []}
        self.output = (directory / "processes.log").open("ab")
        self.actions = (directory / "actions.log").open("a")
        """What the run did and when (seconds since the chaos began), to read next to processes.log."""
        self.rules = directory / "rules.yaml"
        self.endpoint = Endpoint(directory, seed)
        threading.Thread(target=self.endpoint.serve_forever, daemon=True).start()
        self.rules.write_text(RULES % (SOURCE_TOPIC, ROUTED_TOPIC, self.endpoint.url))
        self.log = connect(broker)
        for topic in (SOURCE_TOPIC, ROUTED_TOPIC):  # the routers need theirs; the app makes its own alike
            if topic not in self.log.list_topics():
                self.log.create_topic(topic, TopicConfig(partitions=4))
        self._routed: list[tuple[str, int]] = []
        self._routed_next = dict.fromkeys(range(self.log.partition_count(ROUTED_TOPIC)), 0)

    def start(self, kind: str, index: int) -> subprocess.Popen[bytes]:
        if kind == "worker":
            command = ["-m", "inmotion", "run", "tests.chaos.app:app"]
        elif kind == "router":
            command = ["-m", "inmotion", "route", "--rules", str(self.rules), "--group", ROUTER_GROUP]
            command += ["--session-timeout", str(SESSION_TIMEOUT)]
        else:
            command = ["-m", "tests.chaos.run", "--produce", f"p{index}", "--dir", str(self.directory)]
        return subprocess.Popen([sys.executable, *command], env=self.env, stdout=self.output, stderr=self.output)

    def note(self, line: str) -> None:
        self.actions.write(line + "\n")
        self.actions.flush()

    def start_all(self) -> None:
        for kind, count in (("worker", WORKERS), ("producer", PRODUCERS), ("router", ROUTERS)):
            self.processes[kind] = [self.start(kind, i) for i in range(count)]

    def restart_crashed(self) -> int:
        """Start again the processes that ended on their own (not killed by the run); how many."""
        crashed = 0
        for kind, processes in self.processes.items():
            for index, process in enumerate(processes):
                if process.poll() is not None:
                    processes[index] = self.start(kind, index)
                    crashed += 1
        return crashed

    def stop_all(self) -> None:
        every = [process for processes in self.processes.values() for process in processes]
        for process in every:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                process.terminate()
        for process in every:
            process.wait()
        self.endpoint.shutdown()
        self.log.close()

    def acknowledged(self) -> list[tuple[str, int]]:
        return _read_pairs(sorted(self.directory.glob("*.acked")))

    def handled(self) -> dict[str, tuple[str, list[Handled]]]:
        result: dict[str, tuple[str, list[Handled]]] = {}
        for group, level in LEVELS.items():
            if level == "transactional":
                if not self.broker.startswith("sqlite:///"):
                    continue  # transactions are SQLite's: the app has no such subscription here
                pairs = self._transactional()
            else:
                pairs = _read_effects(sorted(self.directory.glob(f"{level}.*.effects")))
            result[group] = (level, [Handled(key, seq) for key, seq in pairs])
        http = _read_effects(sorted(self.directory.glob("routed-http.effects")))
        result[f"{ROUTER_GROUP} -> http"] = ("routed", [Handled(key, seq) for key, seq in http])
        result[f"{ROUTER_GROUP} -> {ROUTED_TOPIC}"] = ("routed", [Handled(k, s) for k, s in self.routed()])
        return result

    def _transactional(self) -> list[tuple[str, int]]:
        path = self.broker.removeprefix("sqlite:///")
        try:
            with sqlite3.connect(path, timeout=30) as conn:
                rows = conn.execute("SELECT key, seq FROM chaos_effects ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # the table is created by the first worker
            return []
        return [(str(key), int(seq)) for key, seq in rows]

    def routed(self) -> list[tuple[str, int]]:
        """The events in the routers' target topic, partition by partition (a key's events are
        all in one partition, in the order they were routed), read on from the last call. While
        the broker is away (Kafka restarts), what was read so far."""
        try:
            for partition, offset in self._routed_next.items():
                while batch := self.log.read(ROUTED_TOPIC, partition, offset, 1000):
                    for record in batch:
                        payload = msgspec.json.decode(record.value or b"{}")
                        self._routed.append((str(payload["key"]), int(payload["seq"])))
                    offset = self._routed_next[partition] = batch[-1].offset + 1
        except InmotionError:
            pass
        return self._routed

    def dump_stacks(self, at: float) -> None:
        """Every live process's Python stacks (py-spy, a dev dependency) into
        `stacks-<at>s.txt`: what each was doing while the run made no progress."""
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        with (self.directory / f"stacks-{at:.0f}s.txt").open("w") as out:
            for kind, processes in self.processes.items():
                for index, process in enumerate(processes):
                    if process.poll() is not None:
                        continue
                    out.write(f"=== {kind} {index} pid {process.pid}\n")
                    try:
                        dump = subprocess.run(
                            [py_spy, "dump", "--pid", str(process.pid)], capture_output=True, text=True, timeout=20
                        )
                        out.write(dump.stdout + dump.stderr)
                    except (OSError, subprocess.TimeoutExpired) as exc:
                        out.write(f"py-spy failed: {exc}\n")

    def sample(self, started: float) -> tuple[float, int, int]:
        acked = set(self.acknowledged())
        handled = self.handled()
        effects = sum(len(effects) for _, effects in handled.values())
        pending = sum(len(acked - {(e.key, e.seq) for e in effects}) for _, effects in handled.values())
        return time.monotonic() - started, effects, pending


class Broker:
    """A Kafka broker of the run's own (scripts/kafka on its own port, fresh data), killed (-9)
    and started again on the same data every 15 to 25 seconds by a thread of its own."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.env = dict(os.environ, KAFKA_PORT=str(port))
        self.rng = random.Random(seed)
        self.restarts = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._chaos, daemon=True)
        self._script("clean")
        self._script("up")

    def _script(self, command: str) -> None:
        subprocess.run([str(KAFKA_SCRIPT), command], env=self.env, check=True, capture_output=True, timeout=300)

    def kill_now_and_then(self) -> None:
        self._thread.start()

    def _chaos(self) -> None:
        pidfile = KAFKA_SCRIPT.parent.parent / ".kafka" / f"node-{self.port}" / "kafka.pid"
        while not self.stopping.wait(self.rng.uniform(15, 25)):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):  # scripts/kafka up refuses a port the dying broker still holds
                time.sleep(0.05)
            self.restarts += 1
            self._script("up")

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._script("down")


def _stuck_since(progress: list[tuple[float, int, int]]) -> float | None:
    """Since when the samples show pending work and no new effect (None: they do not)."""
    at, effects, pending = progress[-1]
    if pending == 0:
        return None
    since = at
    for earlier, count, _ in reversed(progress):
        if count != effects:
            break
        since = earlier
    return since


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--broker", help="a sqlite:/// URL (default: log.db in the run directory)")
    parser.add_argument("--kafka-port", type=int, help="run on a Kafka broker of its own on this port, restarted")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--produce")
    args = parser.parse_args(argv)
    if args.produce:
        produce(args.dir, args.produce)
        return 0
    if args.broker and not args.broker.startswith("sqlite:///"):
        print("scripts/chaos: --broker takes a sqlite:/// URL; --kafka-port runs on Kafka", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 1)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    kafka = Broker(args.kafka_port, args.seed) if args.kafka_port else None
    broker = f"kafka://127.0.0.1:{args.kafka_port}" if kafka else args.broker or f"sqlite:///{directory / 'log.db'}"
    rng = random.Random(args.seed)
    run = Run(directory, broker, args.seed)
    run.start_all()
    if kafka:
        kafka.kill_now_and_then()
    kills = stops = crashes = 0
    print(f"chaos: {seconds:g}s of kills and stops on {broker} (run directory {directory})", file=sys.stderr)
    started = time.monotonic()
    progress = []
    paused: list[tuple[float, float]] = []
    dumped: set[float] = set()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(rng.uniform(0.3, 2.0))
            crashes += run.restart_crashed()
            kind = rng.choice([kind for kind, processes in run.processes.items() for _ in processes])
            index = rng.randrange(len(run.processes[kind]))
            process = run.processes[kind][index]
            at = time.monotonic() - started
            if rng.random() < 0.7:
                process.kill()
                process.wait()
                kills += 1
                run.processes[kind][index] = run.start(kind, index)
                run.note(f"{at:.2f} kill {kind} {index} pid {process.pid}")
            else:
                process.send_signal(signal.SIGSTOP)
                pause = rng.uniform(0, 2 * SESSION_TIMEOUT)
                time.sleep(pause)
                process.send_signal(signal.SIGCONT)
                stops += 1
                paused.append((at, time.monotonic() - started))
                run.note(f"{at:.2f} stop {kind} {index} pid {process.pid} for {pause:.2f}s")
            progress.append(run.sample(started))
            run.note(f"{progress[-1][0]:.2f} sample: {progress[-1][1]} effects, {progress[-1][2]} pending")
            stuck = _stuck_since(progress)
            if stuck is not None and progress[-1][0] - stuck > STACKS_AFTER and stuck not in dumped:
                dumped.add(stuck)
                run.dump_stacks(progress[-1][0])
        if kafka:
            kafka.stopping.set()  # the broker stays up while the run catches up
        for producer in run.processes.pop("producer"):  # done: not restarted while the run catches up
            producer.terminate()
            producer.wait()
        print(f"chaos: catching up ({progress[-1][2] if progress else '?'} effects pending)", file=sys.stderr)
        deadline = time.monotonic() + CATCH_UP
        while time.monotonic() < deadline:
            crashes += run.restart_crashed()
            progress.append(run.sample(started))
            if progress[-1][2] == 0:
                break
            time.sleep(0.5)
        stall_after = KAFKA_STALL if kafka else SQLITE_STALL
        report = check(run.acknowledged(), run.handled(), progress, stall_after, paused)
    finally:
        run.stop_all()
        if kafka:
            kafka.stop()
    label = f"{seconds:g}s {'kafka' if kafka else 'sqlite'} seed={args.seed}"
    if kafka:
        label += f" broker_restarts={kafka.restarts}"
    print(summary(report, label, kills, stops, crashes))
    for detail in report.details[:20]:
        print(f"  {detail}", file=sys.stderr)
    print(f"  run directory: {directory}", file=sys.stderr)
    return 1 if report.violated else 0


if __name__ == "__main__":
    sys.exit(main())
