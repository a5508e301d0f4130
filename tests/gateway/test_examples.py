"""The gateway's examples, run as a user runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m examples.NAME` on a SQLite file of its own; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", "--broker", f"sqlite:///{tmp_path / 'example.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_notifications_fan_out_retry_dead_letter_and_redrive(tmp_path: Path) -> None:
    done = run_example("notifications", tmp_path)
    lines = done.stdout.splitlines()
    assert lines[-1] == (
        "summary: 3 sign-ups over HTTP from Node: 3 e-mails, 2 SMS, 3 chat messages"
        " (3 dead-lettered while chat was down, then redriven)"
    )
    assert sum("POST sign-up" in line for line in lines) == 3
    assert any("down: 9 tries answered 503, 3 messages dead-lettered" in line for line in lines)
    assert sum(line.strip().startswith("dlq ") and "after 3 attempts: HTTP 503" in line for line in lines) == 3
    assert sorted(line.split("<- ")[1] for line in lines if line.strip().startswith("chat") and "<-" in line) == [
        "ada to team engines",
        "grace to team compilers",
        "linus to team kernels",
    ]
    assert done.stderr == ""


def test_identity_commands_over_http_and_the_active_users_table(tmp_path: Path) -> None:
    lines = [line.strip() for line in run_example("identity", tmp_path).stdout.splitlines()]
    assert lines[-1] == "summary: 9 commands over HTTP, 5 accepted, 4 refused; active users: ada, grace"
    assert "result   cmd-6 refused: user ada is registered already" in lines
    assert "result   cmd-7 refused: user alan is deactivated" in lines
    assert "active   ada: Ada Lovelace <ada@analytical.engine>" in lines
    assert not any(line.startswith("active   alan") for line in lines)  # deactivated: a tombstone
