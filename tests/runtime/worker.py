"""A consumer-group member for the multi-process tests: `python worker.py URL GROUP LOGFILE MODE [TOPIC]`.

MODE `log` appends "time_ns partition offset key seq" for every handled event to LOGFILE;
MODE `tx` also inserts the event into the `effects` table inside the handler's transaction
and publishes a follow-up event to TOPIC.out (exactly-once effects and events); MODE `slow`
is `log` with 5 ms per event. Prints "ready" once the app runs; exits after SIGTERM once
in-flight events are committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import time

from inmotion.runtime import App, Context

TOPIC = "orders"


def build(url: str, group: str, logfile: str, mode: str, topic: str = TOPIC) -> App:
    app = App("worker", url, session_timeout=2.0)
    out = open(logfile, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def record(payload: dict[str, int | str], ctx: Context) -> None:
        out.write(f"{time.time_ns()} {ctx.partition} {ctx.offset} {payload['key']} {payload['seq']}\n")

    if mode == "tx":

        @app.subscribe(topic, group=group, idempotent=True, transaction=True)
        def apply(payload: dict[str, int | str], ctx: Context) -> None:
            assert ctx.db is not None
            ctx.db.execute(
                "INSERT INTO effects (event_id, key, seq) VALUES (?, ?, ?)",
                (ctx.event.id, payload["key"], payload["seq"]),
            )
            # appended in the same transaction as the effect: exactly once as well
            ctx.publish_sync(f"{topic}.out", {"key": payload["key"], "seq": payload["seq"]}, key=str(payload["key"]))
            record(payload, ctx)

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT, key TEXT, seq INTEGER)")
    else:
        delay = 0.005 if mode == "slow" else 0.0

        @app.subscribe(topic, group=group)
        async def handle(payload: dict[str, int | str], ctx: Context) -> None:
            if delay:
                await asyncio.sleep(delay)
            record(payload, ctx)

    return app


async def main() -> None:
    logging.basicConfig(level=os.environ.get("WORKER_LOG_LEVEL", "WARNING"), format="%(relativeCreated)6d %(message)s")
    url, group, logfile, mode = sys.argv[1:5]
    app = build(url, group, logfile, mode, *sys.argv[5:6])
    ready = asyncio.get_running_loop().call_later(0.2, lambda: print("ready", flush=True))
    try:
        await app.run()
    finally:
        ready.cancel()
        app.close()


if __name__ == "__main__":
    asyncio.run(main())
