"""Nexmark's generator: seeded, in the published proportions, readable by the engine's tables."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from inmotion.log import connect
from inmotion.streams import Job, nexmark
from inmotion.streams.job import job_results
from tests.test_cli import INMOTION


def test_the_same_seed_gives_the_same_events_in_nexmarks_proportions() -> None:
    first = [(topic, e.id, e.data) for topic, e in nexmark.events(1_000, seed=7)]
    assert first == [(topic, e.id, e.data) for topic, e in nexmark.events(1_000, seed=7)]
    assert first != [(topic, e.id, e.data) for topic, e in nexmark.events(1_000, seed=8)]
    assert Counter(topic for topic, _, _ in first) == {"persons": 20, "auctions": 60, "bids": 920}
    bids = [data for topic, _, data in first if topic == "bids"]
    auctions = {data["id"] for topic, _, data in first if topic == "auctions"}
    assert {bid["auction"] for bid in bids} <= auctions | {1000}
    times = [data["dateTime"] for _, _, data in first]
    assert times == sorted(times)
    assert times[1] == "2026-01-01T00:00:00.000Z" < times[10] == "2026-01-01T00:00:00.001Z"


def test_every_query_runs_over_the_generated_topics(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path}/nexmark.db") as log:
        nexmark.write(log, 5_000)
        for name, query in nexmark.QUERIES.items():
            rows = [row for _, table in Job(log, nexmark.DDL + query).query() for row in job_results(table)]
            if name in ("q0", "q1"):
                assert len(rows) == 4_600
            if name == "q2":
                assert rows
                assert all(row["auction"] % 123 == 0 for row in rows)
            if name == "q5-counts":
                assert sum(row["num"] for row in rows) == 4_600 * 5  # each bid in 5 sliding windows


def test_the_command_generates_and_prints_what_to_run(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/cli.db"
    result = subprocess.run(
        [INMOTION, "sql", "nexmark", "--events", "500", "--broker", broker], capture_output=True, text=True, check=True
    )
    assert "appended 500 events to persons, auctions, bids" in result.stderr
    assert "CREATE TABLE bid (" in result.stdout
    assert "-- q5-counts" in result.stdout
    with connect(broker) as log:
        assert log.latest_offset("bids", 0) == 460
