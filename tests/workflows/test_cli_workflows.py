"""`inmotion workflows list|describe|cancel|retry` as a user runs them, against an app running
on the same SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from inmotion import App, Retry
from inmotion.clock import FakeClock
from inmotion.testing import eventually
from inmotion.workflows import Workflow
from tests.test_cli import run

from .test_workflows import running, status


def post_office(broker: str, check_address: Callable[[str], Awaitable[str]]) -> App:
    """An app with two workflows: one that waits an hour for an approval, one whose only step
    checks an address (and fails while `check_address` does)."""
    app = App("post", broker, clock=FakeClock(autojump=False))
    app.workflows.retry = Retry(attempts=1)

    @app.workflow("approval", listen="approvals")
    async def approval(wf: Workflow, request: dict[str, int]) -> str:
        decision = await wf.wait_for("approvals", timeout=3600)
        return str(decision.data)

    @app.workflow("delivery")
    async def delivery(wf: Workflow, address: str) -> str:
        return str(await wf.step(check_address, address))

    return app


def test_list_describe_cancel_and_retry(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    broken = True

    async def check_address(address: str) -> str:
        if broken:
            raise ValueError(f"no such street: {address}")
        return address.upper()

    async def cli(*args: str, check: bool = True) -> tuple[int, str, str]:
        result = await asyncio.to_thread(run, broker, "workflows", *args, check=check)
        return result.returncode, result.stdout, result.stderr

    async def scenario() -> None:
        nonlocal broken
        with post_office(broker, check_address) as app:
            async with running(app):
                await app.start_workflow("approval", {"amount": 5}, id="a1")
                await app.start_workflow("delivery", "elm street", id="b1")
                await eventually(
                    lambda: status(app, "approval/a1") == "waiting" and status(app, "delivery/b1") == "failed"
                )

                _, listed, _ = await cli("list")
                lines = listed.splitlines()
                assert lines[0].split() == ["INSTANCE", "STATUS", "UPDATED", "NOTE"]
                assert lines[1].split()[:2] == ["approval/a1", "waiting"]
                assert "until 2023-11-14T23:13:20.000Z" in lines[1]
                assert lines[2].split()[:2] == ["delivery/b1", "failed"]
                assert "ValueError: no such street: elm street" in lines[2]
                _, waiting, _ = await cli("list", "--status", "waiting", "--json")
                assert [json.loads(line)["key"] for line in waiting.splitlines()] == ["approval/a1"]

                _, described, _ = await cli("describe", "b1")
                assert "delivery/b1: failed" in described
                assert 'input "elm street"' in described
                assert "#1 step_failed check_address error=ValueError: no such street: elm street" in described
                _, as_json, _ = await cli("describe", "approval/a1", "--json")
                document = json.loads(as_json)
                assert document["input"] == {"amount": 5}
                assert [entry["kind"] for entry in document["history"]] == ["started", "wait"]

                code, _, error = await cli("cancel", "b1", check=False)
                assert code == 1
                assert (
                    "delivery/b1 is failed: only running, sleeping, waiting, compensating instances can be cancelled"
                    in error
                )
                code, _, error = await cli("retry", "a1", check=False)
                assert (code, error.strip()) == (
                    1,
                    "error: approval/a1 is waiting: only failed, compensation_failed instances can be retried",
                )

                _, said, _ = await cli("cancel", "a1")
                assert said.startswith("cancel requested: approval/a1")
                await eventually(lambda: status(app, "approval/a1") == "failed")
                broken = False
                await cli("retry", "delivery/b1")
                await eventually(lambda: status(app, "delivery/b1") == "completed")
                assert await app.workflows.handle("delivery/b1").result(10) == "ELM STREET"

    asyncio.run(scenario())


def test_unknown_instances_statuses_and_stores_are_clear_errors(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path / 'log.db'}"
    missing = run(f"sqlite:///{tmp_path / 'missing.db'}", "workflows", "list", check=False)
    assert (missing.returncode, missing.stderr.startswith("error: no workflow store at sqlite:///")) == (1, True)
    assert not (tmp_path / "missing.db").exists()
    run(broker, "topics", "create", "anything")
    assert run(broker, "workflows", "list").stdout == "no workflow instances\n"
    unknown = run(broker, "workflows", "describe", "order/nope", check=False)
    assert (unknown.returncode, unknown.stderr) == (1, "error: no workflow instance 'order/nope'\n")
    bad = run(broker, "workflows", "list", "--status", "stuck", check=False)
    assert bad.returncode == 2
    assert "unknown status stuck: use running, sleeping, waiting, compensating, completed" in bad.stderr
