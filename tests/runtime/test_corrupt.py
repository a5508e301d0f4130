"""Stored records that the log cannot decode (a damaged file): a subscription stops their
partition by default, or skips or dead-letters them by `on_corrupt`, and the other partitions go
on. A record that decodes but is no CloudEvent is not corrupt: it is dead-lettered as before."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inmotion.errors import InvalidConfig
from inmotion.events import Event
from inmotion.log import Message, TopicConfig, connect
from inmotion.runtime import App
from inmotion.runtime.deadletter import entries
from inmotion.testing import eventually
from tests.damage import damage

INMOTION = str(Path(sys.executable).with_name("inmotion"))
FOREIGN = Message(b"\xffnot an event", headers=(("source-system", b"legacy"),), partition=1)


def _event(n: int, partition: int) -> Message:
    message = Message.from_event(Event.create("shop.order.placed", {"n": n}, source="/shop"))
    return Message(message.value, None, message.headers, partition)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Partition 0: batches [0, 1], [2, 3, 4] (damaged) and [5]; partition 1: events 10 and 11
    with a record of another producer between them."""
    path = tmp_path / "log.db"
    with connect(f"sqlite:///{path}") as log:
        log.create_topic("orders", TopicConfig(partitions=2))
        for batch in ([0, 1], [2, 3, 4], [5]):
            log.append("orders", [_event(n, 0) for n in batch])
        log.append("orders", [_event(10, 1), FOREIGN, _event(11, 1)])
    assert damage(path, "orders", 0, 2) == (2, 4)
    return f"sqlite:///{path}"


def _run(url: str, handled: list[int], expected: int, late: bool = False, **options: Any) -> App:
    """Run a subscription until `expected` events were handled and everything it will finish
    is finished (committed once it stops); with `late`, then until event 12, appended to
    partition 1 meanwhile, was handled too."""

    async def scenario() -> App:
        with App("svc", url) as app:

            @app.subscribe("orders", group="svc", **options)
            async def handle(order: dict[str, int]) -> None:
                handled.append(order["n"])

            await app.start()
            await eventually(lambda: len(handled) == expected, what=f"{expected} events")
            await eventually(lambda: app.metrics.value("inmotion_dead_lettered_total") >= 1, what="the foreign record")
            if late:
                await asyncio.to_thread(app.log.append, "orders", [_event(12, 1)])
                await eventually(lambda: 12 in handled, what="the event after the damaged partition stopped")
            await app.stop()
            return app

    return asyncio.run(scenario())


def test_by_default_the_partition_stops_at_the_damaged_batch_and_commits_nothing_past_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[int] = []
    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        _run(url, handled, 4, late=True)
        stopped = "stopped reading orders/0 at offset 2: corrupt records orders/0@2-4: the stored batch does not decode"
        assert caplog.text.count(stopped) == 1
    assert sorted(handled) == [0, 1, 10, 11, 12]  # not 5, past the damage; partition 1 goes on
    with connect(url) as log:
        assert log.committed("svc", "orders") == {0: 2, 1: 4}
        [foreign] = list(entries(log, "svc.dlq"))  # the other producer's record: no CloudEvent
        assert foreign.error["error_type"] == "inmotion.errors.InvalidEvent"
    listed = subprocess.run([INMOTION, "dlq", "list", "--broker", url], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr  # it failed on an entry that is no CloudEvent
    assert "svc.dlq@0  from orders/1@1  (not a CloudEvent)  attempts=1  InvalidEvent: " in listed.stdout


def test_skip_goes_past_the_damaged_batch_logging_its_offsets(url: str, caplog: pytest.LogCaptureFixture) -> None:
    handled: list[int] = []
    with caplog.at_level(logging.ERROR, logger="inmotion.runtime"):
        app = _run(url, handled, 5, on_corrupt="skip")
        assert "skipped orders/0@2-4 (on_corrupt='skip'): corrupt records orders/0@2-4" in caplog.text
    assert sorted(handled) == [0, 1, 5, 10, 11]
    assert app.metrics.value("inmotion_skipped_total", group="svc") == 3
    with connect(url) as log:
        assert log.committed("svc", "orders") == {0: 6, 1: 3}
        assert len(list(entries(log, "svc.dlq"))) == 1  # the foreign record only


def test_dead_letter_sends_the_raw_bytes_with_the_error_and_dlq_list_shows_them(url: str) -> None:
    with connect(url) as log:
        raw = log.read("orders", 0, 0)  # only the records before the damage
        assert [r.offset for r in raw] == [0, 1]
    handled: list[int] = []
    _run(url, handled, 5, on_corrupt="dead-letter")
    assert sorted(handled) == [0, 1, 5, 10, 11]
    with connect(url) as log:
        assert log.committed("svc", "orders") == {0: 6, 1: 3}
        letters = {entry.error["topic"] + "/" + entry.error["partition"]: entry for entry in entries(log, "svc.dlq")}
    corrupt = letters["orders/0"]
    assert corrupt.error["error_type"] == "inmotion.errors.CorruptRecord"
    assert corrupt.error["error_message"].startswith("corrupt records orders/0@2-4: the stored batch does not decode")
    assert corrupt.error["offset"] == "2"
    assert corrupt.record.value is not None
    assert b"shop.order.placed" in corrupt.record.value  # the stored batch's bytes, as they are
    assert letters["orders/1"].error["error_type"] == "inmotion.errors.InvalidEvent"

    listed = subprocess.run(
        [INMOTION, "dlq", "list", "--broker", url, "--json"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    documents = {d["partition"]: d for d in map(json.loads, listed.stdout.splitlines())}
    assert documents["0"]["error_type"] == "inmotion.errors.CorruptRecord"
    assert documents["0"]["type"] is None
    assert documents["0"]["offset"] == "2"
    text = subprocess.run([INMOTION, "dlq", "list", "--broker", url], capture_output=True, text=True, timeout=60)
    assert "from orders/0@2  (not a CloudEvent)  attempts=1  CorruptRecord: corrupt records orders/0@2-4" in text.stdout


def test_on_corrupt_is_checked() -> None:
    with App("svc", "memory://") as app:

        async def handle(order: dict[str, int]) -> None: ...

        with pytest.raises(InvalidConfig, match="on_corrupt must be 'stop', 'skip' or 'dead-letter', got 'ignore'"):
            app.subscribe("orders", on_corrupt="ignore")(handle)  # type: ignore[arg-type]
        with pytest.raises(InvalidConfig, match="on_corrupt='dead-letter' needs a dead-letter topic"):
            app.subscribe("orders", on_corrupt="dead-letter", dead_letter=False)(handle)
