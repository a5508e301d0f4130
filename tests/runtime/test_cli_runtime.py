"""`inmotion groups`, `replay`, `dlq` and `run`, through the installed command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inmotion.events import Event
from inmotion.log import Message, TopicConfig, connect
from inmotion.log.sqlite.groups import SqliteCoordinator
from inmotion.runtime import App
from inmotion.testing import wait_until

INMOTION = str(Path(sys.executable).with_name("inmotion"))


def inmotion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INMOTION_BROKER"}
    return subprocess.run([INMOTION, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with connect(url) as log:
        log.create_topic("orders", TopicConfig(partitions=2))
        log.append("orders", _messages(10))
        log.commit("billing", "orders", {0: 1})
    return url


def _messages(count: int) -> list[Message]:
    return [
        Message.from_event(Event.create("shop.order.placed", {"n": n}, source="t", key=f"k{n}")) for n in range(count)
    ]


@pytest.mark.slow
def test_groups_list_and_describe_show_offsets_lag_and_members(url: str, tmp_path: Path) -> None:
    with connect(url) as log:
        latest = {p: log.latest_offset("orders", p) for p in range(2)}
        coordinator = SqliteCoordinator(tmp_path / "log.db")
        member = coordinator.join("billing", {"orders": 2}, member_id="m-1")
        member.heartbeat()
        coordinator.close()
    listed = inmotion("groups", "list", "--broker", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json_lines(listed.stdout) == [
        {"group": "billing", "members": 1, "topics": ["orders"], "lag": latest[0] - 1 + latest[1]}
    ]
    described = inmotion("groups", "describe", "billing", "--broker", url, "--json")
    assert described.returncode == 0, described.stderr
    [document] = json_lines(described.stdout)
    assert [m["member"] for m in document["members"]] == ["m-1"]
    assert document["members"][0]["session_timeout_s"] == 10.0
    assert 0 <= document["members"][0]["last_heartbeat_s"] < 60
    assert document["partitions"] == [
        {"topic": "orders", "partition": 0, "owner": "m-1", "committed": 1, "latest": latest[0], "lag": latest[0] - 1},
        {"topic": "orders", "partition": 1, "owner": "m-1", "committed": None, "latest": latest[1], "lag": latest[1]},
    ]
    text = inmotion("groups", "describe", "billing", "--broker", url)
    assert "m-1" in text.stdout
    missing = inmotion("groups", "describe", "nobody", "--broker", url)
    assert missing.returncode != 0
    assert missing.stderr.strip() == "error: unknown consumer group 'nobody' (list them with: inmotion groups list)"


@pytest.mark.slow
def test_replay_moves_offsets_and_refuses_while_the_group_is_live(url: str, tmp_path: Path) -> None:
    with connect(url) as log:
        latest = {p: log.latest_offset("orders", p) for p in range(2)}
        coordinator = SqliteCoordinator(tmp_path / "log.db")
        member = coordinator.join("billing", {"orders": 2}, member_id="m-1")
        member.heartbeat()
    refused = inmotion("replay", "orders", "--group", "billing", "--from-beginning", "--broker", url)
    assert refused.returncode != 0
    assert "live member" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    forced = inmotion(
        "replay", "orders", "--group", "billing", "--offset", "1000", "--force", "--broker", url, "--json"
    )
    assert forced.returncode == 0, forced.stderr
    assert {d["partition"]: d["to"] for d in json_lines(forced.stdout)} == latest
    member.leave()
    coordinator.close()
    back = inmotion("replay", "orders", "--group", "billing", "--from-beginning", "--partition", "1", "--broker", url)
    assert back.returncode == 0, back.stderr
    since = inmotion("replay", "orders", "--group", "billing", "--since", "1h", "-p", "0", "--broker", url)
    assert since.returncode == 0, since.stderr
    with connect(url) as log:
        assert log.committed("billing", "orders") == {0: 0, 1: 0}
    for bad, message in [
        (["--from-beginning", "--offset", "1"], "choose exactly one"),
        (["--offset", "-1"], "--offset must be between 0 and"),
        (["--since", "yesterday"], "invalid time"),
        (["--from-beginning", "-p", "7"], "has no partition 7"),
    ]:
        result = inmotion("replay", "orders", "--group", "billing", *bad, "--broker", url)
        assert result.returncode != 0
        assert message in result.stderr
    unknown = inmotion("replay", "nope", "--group", "billing", "--from-beginning", "--broker", url)
    assert unknown.returncode != 0
    assert "unknown topic 'nope'" in unknown.stderr


def handle_all(url: str, group: str) -> list[int]:
    """Run an idempotent subscriber of `orders` until it has committed every event; the `n` of
    each event its handler got."""
    handled: list[int] = []

    async def scenario() -> None:
        with App("ledger", url) as app:

            @app.subscribe("orders", group=group, idempotent=True)
            async def handle(order: dict[str, int]) -> None:
                handled.append(order["n"])

            await app.start()
            deadline = time.monotonic() + 30
            while app.log.committed(group, "orders") != {p: app.log.latest_offset("orders", p) for p in range(2)}:
                assert time.monotonic() < deadline, "the subscriber did not commit every event"
                await asyncio.sleep(0.05)
            await app.stop()

    asyncio.run(scenario())
    return sorted(handled)


@pytest.mark.slow
def test_replay_of_an_idempotent_group_warns_of_its_dedupe_records_and_can_forget_them(url: str) -> None:
    assert handle_all(url, "ledger") == list(range(10))
    with connect(url) as log:
        log.append("orders", _messages(1))  # not handled yet: no dedupe record
        later = {p: log.latest_offset("orders", p) for p in range(2)}
    warned = inmotion("replay", "orders", "--group", "ledger", "--from-beginning", "--broker", url, "--json")
    assert warned.returncode == 0, warned.stderr
    assert warned.stderr.strip() == (
        "warning: group 'ledger' has dedupe records for 10 of the 11 event(s) from the replay point on:"
        " an idempotent subscription skips them as seen. Pass --forget-dedupe to handle them again."
    )
    documents = json_lines(warned.stdout)
    assert [(d["partition"], d["to"], d["events"]) for d in documents] == [(p, 0, later[p]) for p in range(2)]
    assert sum(d["dedupe_records"] for d in documents) == 10
    assert handle_all(url, "ledger") == [0]  # the new event; the ten others skipped as seen
    forgot = inmotion("replay", "orders", "--group", "ledger", "--from-beginning", "--forget-dedupe", "--broker", url)
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stderr == ""
    assert forgot.stdout.splitlines()[-1] == (
        "forgot the dedupe records of group 'ledger' for 11 of the 11 event(s) replayed"
    )
    assert handle_all(url, "ledger") == sorted([0, *range(10)])
    other = inmotion("replay", "orders", "--group", "billing", "--from-beginning", "--broker", url)
    assert other.returncode == 0, other.stderr
    assert other.stderr == ""  # a group without dedupe records: nothing to say


SERVICE = """
from pathlib import Path
from inmotion.runtime import App, Context, Retry

app = App("svc")
out = Path(__file__).with_name("handled.txt")

@app.subscribe("orders", group="svc", retry=Retry(attempts=2, backoff=0))
def handle(order: dict, ctx: Context) -> None:
    if order["n"] == 3:
        raise ValueError("three is poison")
    with out.open("a") as f:
        f.write(f"{order['n']}\\n")
"""


@pytest.mark.slow
def test_run_serves_an_app_until_sigterm_and_dlq_list_shows_its_failures(url: str, tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(SERVICE)
    env = {k: v for k, v in os.environ.items() if k != "INMOTION_BROKER"}
    process = subprocess.Popen(
        [INMOTION, "run", "svc:app", "--broker", url, "--json-logs"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        handled = tmp_path / "handled.txt"
        wait_until(lambda: handled.exists() and len(handled.read_text().split()) == 9, 30, "the handled events")
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    logs = json_lines(stderr)
    assert any(entry["message"] == "joined group" and entry["group"] == "svc" for entry in logs)
    assert any(entry["level"] == "error" and "dead-lettered" in str(entry["message"]) for entry in logs)
    with connect(url) as log:
        assert log.committed("svc", "orders") == {p: log.latest_offset("orders", p) for p in range(2)}
    listed = inmotion("dlq", "list", "--broker", url, "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json_lines(listed.stdout)
    assert entry["dlq"] == "svc.dlq"
    assert entry["error_type"] == "builtins.ValueError"
    assert entry["error_message"] == "three is poison"
    assert entry["attempts"] == "2"
    assert entry["topic"] == "orders"
    text = inmotion("dlq", "list", "svc.dlq", "--broker", url, "--traceback")
    assert "svc.dlq@0  from orders/" in text.stdout
    assert "ValueError: three is poison" in text.stdout
    assert 'raise ValueError("three is poison")' in text.stdout
    dry = inmotion("dlq", "redrive", "svc.dlq", "--type", "shop.order.*", "--dry-run", "--broker", url)
    assert "would redrive 1 event(s)" in dry.stdout
    none = inmotion("dlq", "redrive", "svc.dlq", "--error", "KeyError", "--broker", url)
    assert "redrove 0 event(s)" in none.stdout


STUCK = """
import asyncio
from pathlib import Path
from inmotion.runtime import App

app = App("stuck", session_timeout=60)
here = Path(__file__).parent


@app.subscribe("orders", group="stuck")
async def handle(order: dict) -> None:
    (here / "handling.txt").write_text("handling")
    await asyncio.Event().wait()  # never finishes on its own


@app.task
async def watch() -> None:  # cancelled when the shutdown begins
    try:
        await asyncio.Event().wait()
    finally:
        (here / "stopping.txt").write_text("stopping")
"""


def wait_for_file(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None, f"the process ended ({process.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_during_shutdown_still_leaves_the_group(
    url: str, tmp_path: Path, second: signal.Signals
) -> None:
    """`timeout` and impatient users send a second signal while handlers finish: the process
    must still leave its group, or the next one waits a whole session timeout (60 s here) for
    the partitions."""
    (tmp_path / "stuck.py").write_text(STUCK)
    env = {k: v for k, v in os.environ.items() if k != "INMOTION_BROKER"}

    def start() -> subprocess.Popen[str]:
        command = [INMOTION, "run", "stuck:app", "--broker", url]
        return subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)

    coordinator = SqliteCoordinator(tmp_path / "log.db")
    first = start()
    try:
        wait_for_file(tmp_path / "handling.txt", first)
        first.send_signal(signal.SIGTERM)
        wait_for_file(tmp_path / "stopping.txt", first)
        first.send_signal(second)
        _, stderr = first.communicate(timeout=30)
        assert coordinator.members("stuck", live_only=False) == []
        assert coordinator.owners("stuck") == {}
        assert first.returncode == 0, stderr
        assert "cancelling the handlers still running" in stderr
        (tmp_path / "handling.txt").unlink()
        later = start()
        try:
            wait_for_file(tmp_path / "handling.txt", later)
            [member] = coordinator.members("stuck")
            assert member.pid == later.pid
            assert set(coordinator.owners("stuck").values()) == {member.member_id}
            assert len(coordinator.owners("stuck")) == 2
        finally:
            later.kill()
            later.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
        coordinator.close()


JOBS = """
from pathlib import Path
from inmotion.runtime import App

app = App("jobs")


@app.task
async def sweep() -> None:
    Path(__file__).with_name("swept.txt").write_text("swept")
    raise RuntimeError("the sweep broke")
"""


@pytest.mark.slow
def test_run_serves_an_app_of_background_tasks_and_ends_with_a_tasks_error(url: str, tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    result = inmotion("run", "jobs:app", "--broker", url, "--json-logs", cwd=tmp_path)
    assert result.returncode != 0
    assert (tmp_path / "swept.txt").read_text() == "swept"
    [logged] = [entry for entry in json_lines_of(result.stderr) if "background task" in entry["message"]]
    assert logged["message"] == "background task sweep failed"
    assert "RuntimeError: the sweep broke" in result.stderr


def json_lines_of(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's stderr (a traceback may follow them)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_run_refuses_what_is_not_an_app(tmp_path: Path) -> None:
    (tmp_path / "notapp.py").write_text("app = 42\n")
    (tmp_path / "own.py").write_text("from inmotion import App\napp = App('own', 'memory://')\n")
    (tmp_path / "idle.py").write_text("from inmotion import App\napp = App('idle')\n")
    for spec, message in [
        ("idle:app", "idle:app has no subscriptions or background tasks to run"),
        ("own:app", "names its own broker (memory://)"),
        ("notapp:app", "is a int, not an inmotion.App"),
        ("notapp:missing", "has no attribute 'missing'"),
        ("nosuchmodule:app", "cannot import 'nosuchmodule'"),
        ("noseparator", "expected MODULE:APP"),
    ]:
        result = inmotion("run", spec, "--broker", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
        assert result.returncode != 0
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
