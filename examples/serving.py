"""What the gateway's examples share: `inmotion serve` in a process of its own, and their
command line (`--broker URL`, else a SQLite file in a temporary directory)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from inmotion.gateway.server import listen
from inmotion.testing import eventually

INMOTION = str(Path(sys.executable).parent / "inmotion")


@contextlib.asynccontextmanager
async def gateway(broker: str) -> AsyncIterator[str]:
    """`inmotion serve` on a free local port of `broker`, until the block ends; its URL."""
    with listen("127.0.0.1", 0) as probe:
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        INMOTION, "serve", "--port", str(port), "--broker", broker, "--log-level", "warning",
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: process.returncode is None and _answers(url), 30, "the gateway to listen")
        yield url
    finally:
        process.terminate()
        await process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def main(run: Callable[[str], Coroutine[Any, Any, int]], description: str | None) -> None:
    """Parse the example's command line and run it on its broker."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", help="the log (default: a SQLite file in a temporary directory)")
    args = parser.parse_args()
    if args.broker:
        sys.exit(asyncio.run(run(args.broker)))
    with tempfile.TemporaryDirectory() as directory:
        os.environ.pop("INMOTION_BROKER", None)
        sys.exit(asyncio.run(run(f"sqlite:///{directory}/example.db")))
