"""The chaos run: workers and producers of tests/chaos/app.py and two `inmotion route` processes
of one group, killed (-9) and stopped (SIGSTOP) at seeded random times, then let catch up and
checked (tests/chaos/check.py). The routers send every event to a topic and to an HTTP endpoint
this runner serves, which answers 503 to about one request in fifty (their retries at work).

`python -m tests.chaos.run [--seconds S] [--broker URL] [--seed N]`; prints one summary line
and exits 1 on a violation. Lives in the test tree because its app and checker are test code
that the slow test runs as is; `scripts/chaos` is the way in for people.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
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
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
    def __init__(self, directory: Path, broker: str) -> None:
        self.directory = directory
        self.broker = broker
        env = dict(os.environ, INMOTION_BROKER=broker, CHAOS_DIR=str(directory))
        self.env = env
        self.workers: list[subprocess.Popen[bytes]] = []
        self.producers: list[subprocess.Popen[bytes]] = []
        self.routers: list[subprocess.Popen[bytes]] = []
        self.log = (directory / "processes.log").open("ab")
        self.rules = directory / "rules.yaml"

    def start_worker(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "inmotion", "run", "tests.chaos.app:app"]
        return subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)

    def start_router(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "inmotion", "route", "--rules", str(self.rules), "--group", ROUTER_GROUP]
        command += ["--session-timeout", str(SESSION_TIMEOUT)]
        return subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)

    def start_producer(self, name: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "tests.chaos.run", "--produce", name, "--dir", str(self.directory)]
        return subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)

    def acknowledged(self) -> list[tuple[str, int]]:
        return _read_pairs(sorted(self.directory.glob("*.acked")))

    def handled(self) -> dict[str, tuple[str, list[Handled]]]:
        result: dict[str, tuple[str, list[Handled]]] = {}
        for group, level in LEVELS.items():
            if level == "transactional":
                pairs = self._transactional()
            else:
                pairs = _read_effects(sorted(self.directory.glob(f"{level}.*.effects")))
            result[group] = (level, [Handled(key, seq) for key, seq in pairs])
        http = _read_effects(sorted(self.directory.glob("routed-http.effects")))
        result[f"{ROUTER_GROUP} -> http"] = ("routed", [Handled(key, seq) for key, seq in http])
        result[f"{ROUTER_GROUP} -> {ROUTED_TOPIC}"] = ("routed", [Handled(k, s) for k, s in self._routed()])
        return result

    def _routed(self) -> list[tuple[str, int]]:
        """The events in the routers' target topic, partition by partition (a key's events are
        all in one partition, in the order they were routed)."""
        pairs = []
        with connect(self.broker) as log:
            for partition in range(log.partition_count(ROUTED_TOPIC)):
                offset = 0
                while batch := log.read(ROUTED_TOPIC, partition, offset, 1000):
                    for record in batch:
                        payload = msgspec.json.decode(record.value or b"{}")
                        pairs.append((str(payload["key"]), int(payload["seq"])))
                    offset = batch[-1].offset + 1
        return pairs

    def _transactional(self) -> list[tuple[str, int]]:
        path = self.broker.removeprefix("sqlite:///")
        try:
            with sqlite3.connect(path, timeout=30) as conn:
                rows = conn.execute("SELECT key, seq FROM chaos_effects ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # the table is created by the first worker
            return []
        return [(str(key), int(seq)) for key, seq in rows]

    def sample(self, started: float) -> tuple[float, int, int]:
        acked = set(self.acknowledged())
        handled = self.handled()
        effects = sum(len(effects) for _, effects in handled.values())
        pending = sum(len(acked - {(e.key, e.seq) for e in effects}) for _, effects in handled.values())
        return time.monotonic() - started, effects, pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--broker")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--produce")
    args = parser.parse_args(argv)
    if args.produce:
        produce(args.dir, args.produce)
        return 0
    if args.broker and not args.broker.startswith("sqlite:///"):
        print("scripts/chaos: only sqlite:/// brokers are supported so far", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 1)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    directory.mkdir(parents=True, exist_ok=True)
    broker = args.broker or f"sqlite:///{directory / 'log.db'}"
    rng = random.Random(args.seed)
    run = Run(directory, broker)
    endpoint = Endpoint(directory, args.seed)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    run.rules.write_text(RULES % (SOURCE_TOPIC, ROUTED_TOPIC, endpoint.url))
    with connect(broker) as log:  # the routers need their topics; the app makes its own alike
        for topic in (SOURCE_TOPIC, ROUTED_TOPIC):
            if topic not in log.list_topics():
                log.create_topic(topic, TopicConfig(partitions=4))
    run.workers = [run.start_worker() for _ in range(WORKERS)]
    run.producers = [run.start_producer(f"p{i}") for i in range(PRODUCERS)]
    run.routers = [run.start_router() for _ in range(ROUTERS)]
    kills = stops = 0
    started = time.monotonic()
    progress = []
    try:
        while time.monotonic() - started < seconds:
            time.sleep(rng.uniform(0.3, 2.0))
            pool = [("worker", i) for i in range(WORKERS)] + [("producer", i) for i in range(PRODUCERS)]
            pool += [("router", i) for i in range(ROUTERS)]
            kind, index = rng.choice(pool)
            processes = {"worker": run.workers, "producer": run.producers, "router": run.routers}[kind]
            process = processes[index]
            if rng.random() < 0.7:
                process.kill()
                process.wait()
                kills += 1
                if kind == "worker":
                    processes[index] = run.start_worker()
                elif kind == "router":
                    processes[index] = run.start_router()
                else:
                    processes[index] = run.start_producer(f"p{index}")
            else:
                process.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0, 2 * SESSION_TIMEOUT))
                process.send_signal(signal.SIGCONT)
                stops += 1
            progress.append(run.sample(started))
        for producer in run.producers:
            producer.terminate()
            producer.wait()
        deadline = time.monotonic() + CATCH_UP
        while time.monotonic() < deadline:
            progress.append(run.sample(started))
            if progress[-1][2] == 0:
                break
            time.sleep(0.5)
    finally:
        for process in run.workers + run.producers + run.routers:
            process.terminate()
        for process in run.workers + run.producers + run.routers:
            process.wait()
        endpoint.shutdown()
    report = check(run.acknowledged(), run.handled(), progress, stall_after=2 * SESSION_TIMEOUT)
    label = f"{seconds:g}s sqlite seed={args.seed}"
    print(summary(report, label, kills, stops))
    for detail in report.details[:20]:
        print(f"  {detail}", file=sys.stderr)
    print(f"  run directory: {directory}", file=sys.stderr)
    return 1 if report.violated else 0


if __name__ == "__main__":
    sys.exit(main())
