"""The gateway's HTTP ingress and its publish -> Server-Sent Events latency, next to a bare
Starlette endpoint that does nothing (the HTTP stack's limit on this machine) on the same
uvicorn settings, in one run. Node drives the load (bench/gateway_load.mjs: kept-alive
connections, one process), so the Python servers get a core of their own.

    .venv/bin/python bench/gateway.py            # 5 s a measurement
    .venv/bin/python bench/gateway.py --quick    # 1 s a measurement

- bare: POST of one structured CloudEvent to an endpoint that reads the body and answers 202.
- single: the same request to `inmotion serve` (a token checked, the event parsed, deduped,
  appended to a SQLite log with 4 partitions, positions returned).
- batch: batches of 100 events a request (application/cloudevents-batch+json).
- latency: one event a millisecond POSTed while an SSE client reads the topic; from the POST
  being sent to the event arriving on the stream.

Targets: batched ingress >= 50,000 events/s; single-event ingress >= 0.5x the bare endpoint's
requests/s; p99 publish -> SSE <= 20 ms at 1,000 events/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from inmotion.gateway.tokens import Tokens
from inmotion.log import TopicConfig, connect
from inmotion.testing import wait_until

HERE = Path(__file__).resolve().parent
INMOTION = str(Path(sys.executable).parent / "inmotion")
CONNECTIONS = 32
ROUNDS = 3

BARE = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inmotion.gateway.server import collect_less

async def nothing(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"events": []}, status_code=202)

app = Starlette(routes=[Route("/topics/{topic}/events", nothing, methods=["POST"])])
collect_less()  # the garbage collector set as `inmotion serve` sets it
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", proxy_headers=False,
            server_header=False, timeout_graceful_shutdown=5)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env)

    def up() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return True
        except httpx.TransportError:
            return False

    wait_until(up, 30, "the server to listen")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def node(*args: str) -> dict[str, object]:
    done = subprocess.run(["node", str(HERE / "gateway_load.mjs"), *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the load generator failed: {done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def load(url: str, token: str, seconds: float, batch: int) -> tuple[float, float]:
    """Requests and events a second; every answer must be 202."""
    result = node("post", url, token, str(seconds), str(CONNECTIONS), str(batch))
    if set(result["statuses"]) != {"202"}:  # type: ignore[call-overload]
        raise SystemExit(f"{url} answered {result['statuses']}")
    elapsed = float(result["seconds"])  # type: ignore[arg-type]
    return float(result["requests"]) / elapsed, float(result["events"]) / elapsed  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s a measurement")
    seconds = 1.0 if parser.parse_args().quick else 5.0
    if shutil.which("node") is None:
        raise SystemExit("bench/gateway.py needs node (the load generator)")
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/gateway.db"
        with connect(url) as log:
            log.create_topic("bench", TopicConfig(partitions=4))
            log.create_topic("latency", TopicConfig(partitions=1))
            token, _ = Tokens(log).create("bench", publish=["*"], subscribe=["*"])
        env = {**os.environ, "INMOTION_BROKER": url}

        bare_port, port = free_port(), free_port()
        bare = start([sys.executable, "-c", BARE, str(bare_port)], bare_port, env)
        gateway = start([INMOTION, "serve", "--port", str(port), "--log-level", "warning"], port, env)
        base = f"http://127.0.0.1:{port}"
        bare_url, gateway_url = f"http://127.0.0.1:{bare_port}/topics/bench/events", f"{base}/topics/bench/events"
        try:
            for url_ in (bare_url, gateway_url):
                load(url_, token, min(seconds, 1.0), 1)  # warm-up
            # rounds in turn, the best of each: the machine is shared and its noise comes and goes
            bare_rps = single_rps = batch_rps = batch_eps = 0.0
            for _ in range(ROUNDS):
                bare_rps = max(bare_rps, load(bare_url, token, seconds, 1)[0])
                single_rps = max(single_rps, load(gateway_url, token, seconds, 1)[0])
                requests, events = load(gateway_url, token, seconds, 100)
                if events > batch_eps:
                    batch_rps, batch_eps = requests, events
            latency = node("latency", base, "latency", token, "1000", str(max(seconds, 3.0)))
        finally:
            stop(gateway)
            stop(bare)
        with connect(url) as log:
            stored = sum(log.latest_offset("bench", p) for p in range(4))

    print(
        f"gateway bench (best of {ROUNDS} rounds of {seconds:g} s, {CONNECTIONS} connections, node load generator;"
        f" uvicorn with {'httptools' if importlib.util.find_spec('httptools') else 'h11'})"
    )
    print(f"  bare Starlette endpoint      {bare_rps:>9,.0f} requests/s")
    print(
        f"  ingress, one event/request   {single_rps:>9,.0f} requests/s"
        f"   {single_rps / bare_rps:.2f}x the bare endpoint (target >= 0.5x)"
    )
    print(
        f"  ingress, 100 events/request  {batch_eps:>9,.0f} events/s"
        f"   ({batch_rps:,.0f} requests/s; target >= 50,000 events/s)"
    )
    print(
        f"  publish -> SSE at 1,000/s    p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms,"
        f" max {latency['max_ms']:.1f} ms   ({latency['received']} of {latency['sent']} events; target p99 <= 20 ms)"
    )
    print(f"  events stored in the log: {stored:,}")


if __name__ == "__main__":
    main()
