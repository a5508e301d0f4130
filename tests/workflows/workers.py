"""What the multi-process workflow tests run in their child processes (started with `spawn`):
a trip-booking saga whose steps and undos write each run to an effects file."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from inmotion import App, Retry
from inmotion.workflows import Workflow


def effect(path: str, line: str) -> None:
    """One line per run of a step or undo; O_APPEND keeps the lines of several processes whole."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def trip_app(url: str, effects: str, name: str = "trips", session_timeout: float = 1.0) -> App:
    app = App(name, url, session_timeout=session_timeout)
    app.workflows.retry = Retry(attempts=3, backoff=0.01)

    async def book(kind: str, trip: str, seconds: float) -> str:
        effect(effects, f"book {kind}-{trip}")
        await asyncio.sleep(seconds)
        return f"{kind}-{trip}"

    async def cancel(booking: str) -> None:
        effect(effects, f"cancel {booking}")
        await asyncio.sleep(0.2)

    async def pay(trip: str, fails: bool) -> None:
        effect(effects, f"pay {trip}")
        if fails:
            raise RuntimeError("card declined")

    @app.workflow("trip")
    async def trip(wf: Workflow, plan: dict[str, Any]) -> str:
        hotel = await wf.step(book, "hotel", wf.id, plan["slow"], compensate=cancel)
        await wf.sleep(plan["sleep"])
        car = await wf.step(book, "car", wf.id, plan["slow"], compensate=cancel)
        await wf.step(pay, wf.id, plan["fails"], retry=Retry(attempts=1))
        return f"{hotel}+{car}"

    return app


def serve(url: str, effects: str, name: str = "trips", session_timeout: float = 1.0) -> None:
    logging.basicConfig(level=logging.WARNING)
    trip_app(url, effects, name, session_timeout).run_sync()
