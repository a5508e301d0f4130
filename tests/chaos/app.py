"""The chaos run's app: one subscription per guarantee level on topic `chaos.events`.

`CHAOS_DIR` is where plain and idempotent effects go, one append-only file per process and
level ("time_ns key seq" lines, flushed per effect, never fsynced: a kill -9 loses nothing the OS
has); transactional effects go to the log's own file (`chaos_effects`) through `ctx.db`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import IO, Any

from inmotion import App, Context

TOPIC = "chaos.events"
app = App("chaos", session_timeout=2)
_files: dict[str, IO[str]] = {}


def _record(level: str, payload: dict[str, Any]) -> None:
    if level not in _files:
        path = Path(os.environ["CHAOS_DIR"]) / f"{level}.{os.getpid()}.effects"
        _files[level] = path.open("a")
    # the time orders effects of different processes when the checker merges their files
    _files[level].write(f"{time.time_ns()} {payload['key']} {payload['seq']}\n")
    _files[level].flush()


@app.on_startup
def create_effects_table() -> None:
    broker = os.environ.get("INMOTION_BROKER", "")
    if broker.startswith("sqlite:///"):
        with sqlite3.connect(broker.removeprefix("sqlite:///")) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS chaos_effects (key TEXT, seq INTEGER)")


@app.subscribe(TOPIC, group="chaos.plain")
def plain(payload: dict[str, Any]) -> None:
    _record("plain", payload)


@app.subscribe(TOPIC, group="chaos.idempotent", idempotent=True)
def idempotent(payload: dict[str, Any]) -> None:
    _record("idempotent", payload)


def transactional(payload: dict[str, Any], ctx: Context) -> None:
    assert ctx.db is not None
    ctx.db.execute("INSERT INTO chaos_effects (key, seq) VALUES (?, ?)", (payload["key"], payload["seq"]))


if os.environ.get("INMOTION_BROKER", "").startswith("sqlite:///"):  # transactions are SQLite's
    app.subscribe(TOPIC, group="chaos.transactional", transaction=True)(transactional)
