"""A real gateway: `inmotion serve` in a process of its own on 127.0.0.1, a free port, and a
SQLite log in the test's directory; and a client that reads its Server-Sent Events."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmotion.log import TopicConfig, connect
from inmotion.testing import wait_until
from tests.test_cli import INMOTION


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def inmotion(broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INMOTION_BROKER": broker}
    return subprocess.run([INMOTION, *args], capture_output=True, text=True, env=env, timeout=60)


def create_token(broker: str, name: str, *options: str) -> str:
    created = inmotion(broker, "tokens", "create", name, *options)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


@dataclasses.dataclass
class Server:
    broker: str
    port: int
    options: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, "INMOTION_BROKER": self.broker}
        command = [INMOTION, "serve", "--port", str(self.port), "--log-level", "warning", *self.options]
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
        wait_until(self._healthy, 30, "the gateway to answer")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"inmotion serve exited {self.process.returncode}: {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """kill -9."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def broker(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    with connect(url) as log:
        log.create_topic("orders", TopicConfig(partitions=3))
        log.create_topic("shipments", TopicConfig(partitions=1))
    return url


@pytest.fixture
def server(broker: str) -> Iterator[Server]:
    running = Server(broker, free_port()).start()
    try:
        yield running
    finally:
        running.stop()


@dataclasses.dataclass(frozen=True)
class Frame:
    id: str
    event: str
    data: dict[str, Any]


def read_frames(
    url: str, count: int, *, token: str | None = None, last_id: str | None = None, timeout: float = 20
) -> list[Frame]:
    """The first `count` SSE events of a stream (then the client disconnects)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    frames: list[Frame] = []
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "data" in fields:
                frames.append(Frame(fields["id"], fields["event"], json.loads(fields["data"])))
                if len(frames) == count:
                    break
            fields = {}
    return frames
