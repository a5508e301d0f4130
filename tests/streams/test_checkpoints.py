"""The checkpoints contract on every backend that keeps them (memory, SQLite): claims and epochs,
a checkpoint all or nothing with its results, resets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inmotion.errors import InvalidConfig
from inmotion.log import Log, Message, TopicConfig, connect
from inmotion.streams.checkpoints import Checkpoints, JobTakenOver, Source, open_checkpoints


@pytest.fixture(params=["memory", "sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/checkpoints.db"
    with connect(url) as log:
        log.create_topic("in")
        yield log


def save(checkpoints: Checkpoints, epoch: int, sequence: int, **changes: object) -> None:
    checkpoints.save(
        "job",
        epoch,
        sequence,
        [Source("0", "in", {0: sequence * 10})],
        changes.get("state", {}),  # type: ignore[arg-type]
        f"progress {sequence}".encode(),
        changes.get("results", []),  # type: ignore[arg-type]
    )


def test_a_new_job_starts_empty_and_resumes_from_its_last_checkpoint(log: Log) -> None:
    checkpoints = open_checkpoints(log)
    first = checkpoints.claim("job", "sql-1", "host:1")
    assert (first.epoch, first.sequence, dict(first.positions), first.progress, dict(first.state)) == (
        1,
        0,
        {},
        b"",
        {},
    )
    save(checkpoints, 1, 1, state={(0, b"a"): b"1", (0, b"b"): b"2"})
    save(checkpoints, 1, 2, state={(0, b"a"): None, (1, b"c"): b"3"})
    checkpoints.finish("job", 1, "stopped")
    again = open_checkpoints(log).claim("job", "sql-1", "host:2")
    assert again.epoch == 2
    assert again.sequence == 2
    assert dict(again.positions) == {"0": {0: 20}}
    assert again.progress == b"progress 2"
    assert dict(again.state) == {(0, b"b"): b"2", (1, b"c"): b"3"}
    [info] = checkpoints.jobs()
    assert (info.name, info.status, info.owner, info.epoch, info.sequence) == ("job", "running", "host:2", 2, 2)


def test_a_checkpoint_of_an_older_epoch_is_refused_and_appends_nothing(log: Log) -> None:
    checkpoints = open_checkpoints(log)
    old = checkpoints.claim("job", "sql-1", "host:1")
    checkpoints.claim("job", "sql-1", "host:2")
    results = [("out", [Message(b'{"n": 1}', b"k")], TopicConfig(compact=True))]
    with pytest.raises(JobTakenOver):
        save(checkpoints, old.epoch, 1, state={(0, b"a"): b"1"}, results=results)
    assert "out" not in log.list_topics()
    assert dict(checkpoints.claim("job", "sql-1", "host:3").state) == {}
    checkpoints.finish("job", old.epoch, "stopped")  # a fenced run's finish changes nothing
    assert checkpoints.jobs()[0].status == "running"


def test_results_are_appended_with_their_checkpoint_to_topics_made_as_asked(log: Log) -> None:
    checkpoints = open_checkpoints(log)
    epoch = checkpoints.claim("job", "sql-1", "host:1").epoch
    results = [("upserts", [Message(b"1", b"k"), Message(None, b"k")], TopicConfig(compact=True))]
    save(checkpoints, epoch, 1, results=results)
    assert log.describe_topic("upserts").config.compact
    assert [(r.key, r.value) for r in log.read("upserts", 0, 0)] == [(b"k", b"1"), (b"k", None)]


def test_other_sql_under_a_jobs_name_is_refused_until_the_job_is_reset(log: Log) -> None:
    checkpoints = open_checkpoints(log)
    epoch = checkpoints.claim("job", "sql-1", "host:1").epoch
    save(checkpoints, epoch, 1, state={(0, b"a"): b"1"})
    with pytest.raises(InvalidConfig, match="ran other SQL before"):
        checkpoints.claim("job", "sql-2", "host:1")
    assert checkpoints.reset("job")
    assert not checkpoints.reset("job")
    fresh = checkpoints.claim("job", "sql-2", "host:1")
    assert (fresh.sequence, dict(fresh.positions), dict(fresh.state)) == (0, {}, {})
