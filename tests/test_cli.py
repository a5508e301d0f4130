"""The `inmotion` command as a user runs it: a real process on a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import inmotion
from tests.damage import damage

INMOTION = shutil.which("inmotion", path=str(Path(sys.executable).parent)) or "inmotion"


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def run(broker: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INMOTION_BROKER": broker}
    result = subprocess.run([INMOTION, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"inmotion {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def test_create_publish_tail(broker: str) -> None:
    assert (
        "created topic orders (3 partitions)" in run(broker, "topics", "create", "orders", "--partitions", "3").stdout
    )
    run(broker, "publish", "orders", '{"order": 1}', "--key", "o1", "--type", "shop.order.placed", "--source", "/shop")
    out = run(broker, "tail", "orders", "--json").stdout.splitlines()
    (event,) = [json.loads(line) for line in out]
    assert event["type"] == "shop.order.placed"
    assert event["source"] == "/shop"
    assert event["data"] == {"order": 1}
    assert event["partitionkey"] == "o1"
    assert event["topic"] == "orders"
    assert event["partition"] == inmotion.log.partition_for_key(b"o1", 3)
    assert event["offset"] == 0
    human = run(broker, "tail", "orders").stdout
    assert "shop.order.placed key=o1" in human


def test_topics_list_describe_delete(broker: str) -> None:
    run(broker, "topics", "create", "audit", "--retention", "7d", "--retention-bytes", "1MiB")
    run(broker, "topics", "create", "latest", "--compact")
    listed = [json.loads(line) for line in run(broker, "topics", "list", "--json").stdout.splitlines()]
    assert [t["name"] for t in listed] == ["audit", "latest"]
    described = json.loads(run(broker, "topics", "describe", "audit", "--json").stdout)
    assert described["retention_ms"] == 7 * 86_400_000
    assert described["retention_bytes"] == 1024 * 1024
    assert described["cleanup_policy"] == "delete"
    assert json.loads(run(broker, "topics", "describe", "latest", "--json").stdout)["cleanup_policy"] == "compact"
    assert "retention:       1w" in run(broker, "topics", "describe", "audit").stdout
    run(broker, "topics", "delete", "audit")
    assert "audit" not in run(broker, "topics", "list").stdout


def test_publish_from_stdin_data_and_cloudevents(broker: str) -> None:
    run(broker, "topics", "create", "in")
    lines = "\n".join(
        [
            '{"n": 1}',
            "",
            json.dumps({"specversion": "1.0", "id": "e-2", "source": "/up", "type": "up.thing", "partitionkey": "pk"}),
            '"text"',
        ]
    )
    out = run(broker, "publish", "in", "-", "--type", "in.value", "--json", stdin=lines).stdout.splitlines()
    assert [json.loads(line)["offset"] for line in out] == [0, 1, 2]
    events = [json.loads(line) for line in run(broker, "tail", "in", "--from-beginning", "--json").stdout.splitlines()]
    assert [e["type"] for e in events] == ["in.value", "up.thing", "in.value"]
    assert events[1]["id"] == "e-2"
    assert events[1]["partitionkey"] == "pk"
    assert events[2]["data"] == "text"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"ok": 1}\n{not json\n{"ok": 2}\n', "line 2"),
        ('{"ok": 1}\n{"specversion": "1.0", "id": "1", "source": "/s"}\n', "line 2: invalid event: type"),
        ('{"specversion": "1.0", "id": "1", "type": "t"}\n', "line 1: invalid event: source"),
    ],
)
def test_one_bad_line_rejects_the_whole_batch(broker: str, stdin: str, message: str) -> None:
    run(broker, "topics", "create", "strict")
    result = run(broker, "publish", "strict", "-", stdin=stdin, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert run(broker, "tail", "strict", "--from-beginning").stdout == ""


def test_tail_start_positions_and_limit(broker: str) -> None:
    run(broker, "topics", "create", "seq")
    run(broker, "publish", "seq", "-", stdin="\n".join(str(i) for i in range(25)))

    def data(*args: str) -> list[object]:
        out = run(broker, "tail", "seq", "--json", *args).stdout
        return [json.loads(line)["data"] for line in out.splitlines()]

    assert data() == list(range(15, 25))
    assert data("--limit", "3") == [22, 23, 24]
    assert data("--from-beginning", "--limit", "4") == [0, 1, 2, 3]
    assert data("--offset", "20") == [20, 21, 22, 23, 24]
    assert data("--since", "1h") == list(range(25))
    assert data("--since", "2999-01-01T00:00:00Z") == []


def test_tail_follow_prints_new_events(broker: str) -> None:
    run(broker, "topics", "create", "live")
    env = {**os.environ, "INMOTION_BROKER": broker}
    follower = subprocess.Popen(
        [INMOTION, "tail", "live", "--follow", "--json", "--limit", "2"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        run(broker, "publish", "live", '"first"')
        run(broker, "publish", "live", '"second"')
        out, _ = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert [json.loads(line)["data"] for line in out.splitlines()] == ["first", "second"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "nope", "1"), "unknown topic 'nope' (create it with: inmotion topics create nope)"),
        (("tail", "nope"), "unknown topic 'nope'"),
        (("topics", "create", "zero", "--partitions", "0"), "partitions must be between 1 and 10000"),
        (("topics", "create", "bad name"), "invalid topic name"),
        (("topics", "create", "r", "--retention", "7 days"), "invalid duration"),
        (("topics", "describe", "nope"), "unknown topic"),
        (("tail", "x", "--broker", "redis://localhost"), "unknown broker URL"),
        (("tail", "x", "--since", "someday"), "invalid time"),
        (("tail", "x", "--since", "20261203"), "invalid time"),
        (("tail", "x", "--since", "2026-12-03T10"), "invalid time"),
        (("publish", "x", "-"), "not an RFC 3339 timestamp"),
    ],
)
def test_errors_are_one_clear_line(broker: str, args: tuple[str, ...], message: str) -> None:
    run(broker, "topics", "create", "x")
    stdin = '{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "2026-W49-4T10:00:00Z"}\n'
    result = run(broker, *args, stdin=stdin if args[-1] == "-" else None, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_publish_invalid_json_argument(broker: str) -> None:
    run(broker, "topics", "create", "x")
    result = run(broker, "publish", "x", "not-json", check=False)
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr


def test_corrupt_and_locked_database(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 1000)
    result = run(f"sqlite:///{corrupt}", "topics", "list", check=False)
    assert result.returncode == 1
    assert "corrupt or not a SQLite database" in result.stderr
    assert corrupt.read_bytes() == b"garbage" * 1000

    locked = tmp_path / "locked.db"
    run(f"sqlite:///{locked}", "topics", "create", "t")
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(f"sqlite:///{locked}?timeout=0.3", "publish", "t", "1", check=False)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    assert "locked by another process" in result.stderr
    assert run(f"sqlite:///{locked}", "tail", "t").stdout == ""


def test_tail_names_a_damaged_record_in_one_error_line(broker: str) -> None:
    """A flipped bit in a stored record: `tail` prints the records before it, then one error
    line naming topic/partition@offset (it was a msgspec traceback)."""
    run(broker, "topics", "create", "orders", "--partitions", "1")
    for n in range(3):
        run(broker, "publish", "orders", f'{{"n": {n}}}')
    damage(broker.removeprefix("sqlite:///"), "orders", 0, 1)
    for json_option in ((), ("--json",)):
        result = run(broker, "tail", "orders", "--from-beginning", *json_option, check=False)
        assert result.returncode == 1
        assert len(result.stdout.splitlines()) == 1
        assert '"n":0' in result.stdout
        assert result.stderr.startswith("error: corrupt record orders/0@1: the stored batch does not decode: ")
        assert len(result.stderr.splitlines()) == 1


def run_bytes(broker: str, *args: str | bytes, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "INMOTION_BROKER": broker}
    return subprocess.run([INMOTION, *args], input=stdin, capture_output=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        ((b"publish", b"orders", b'"\xff"'), b"", "not valid UTF-8"),
        ((b"publish", b"orders", b"-"), b'{"ok": 1}\n"\xff\xfe"\n', "line 2: invalid event: JSON is not valid UTF-8"),
        ((b"publish", b"orders", b"-"), b"[" * 1500 + b"]" * 1500 + b"\n", "nested too deeply"),
        ((b"publish", b"orders", b"[" * 1500 + b"]" * 1500), b"", "nested too deeply"),
        ((b"publish", b"orders", b'"\\ud800"'), b"", "lone UTF-16 surrogate"),
        ((b"publish", b"orders", b"-"), b'{"a": "\\ud800"}\n', "lone UTF-16 surrogate"),
        ((b"tail", b"orders", b"--offset", b"99999999999999999999"), b"", "--offset must be between 0 and"),
        ((b"tail", b"orders", b"--offset", b"-5"), b"", "--offset must be between 0 and"),
        ((b"replay", b"orders", b"--group", b"g", b"--offset", b"99999999999999999999"), b"", "--offset must be"),
        ((b"topics", b"create", b"big", b"--retention", b"99999999999999999999w"), b"", "duration must be positive"),
        ((b"topics", b"create", b"big", b"--retention-bytes", b"99999999999999999999TiB"), b"", "size must be"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    broker: str, args: tuple[bytes, ...], stdin: bytes, says: str
) -> None:
    run(broker, "topics", "create", "orders")
    result = run_bytes(broker, *args, stdin=stdin)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert says in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    listed = [json.loads(line)["name"] for line in run(broker, "topics", "list", "--json").stdout.splitlines()]
    assert listed == ["orders"]
    assert run(broker, "tail", "orders", "--json").stdout == ""


@pytest.mark.parametrize("command", [["tail", "orders"], ["groups", "list"], ["topics", "list"], ["dlq", "list"]])
def test_commands_that_only_look_do_not_create_a_log(tmp_path: Path, command: list[str]) -> None:
    mistyped = tmp_path / "typo.db"
    result = run(f"sqlite:///{mistyped}", *command, check=False)
    assert result.returncode == 1
    assert f"{mistyped} does not exist" in result.stderr
    assert not mistyped.exists()


@pytest.mark.parametrize("option", ["poll=0", "timeout=-1", "retention_interval=0", "poll=inf"])
def test_sqlite_url_options_must_be_positive(broker: str, option: str) -> None:
    run(broker, "topics", "create", "orders")
    result = run(f"{broker}?{option}", "tail", "orders", check=False)
    assert result.returncode == 1
    assert "seconds, got" in result.stderr


def test_each_command_runs_with_only_its_own_module_loaded() -> None:
    from inmotion.cli.main import COMMANDS

    for command in COMMANDS:
        result = subprocess.run([INMOTION, command, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"inmotion {command} [OPTIONS]" in result.stdout
    listed = subprocess.run([INMOTION, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert all(command in listed for command in COMMANDS)
