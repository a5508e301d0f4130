"""The shop demo runs end to end: an order saga over services in their own processes, with
a payment that times out and a shipment that fails, both compensated."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = (
    "6 orders: 3 shipped, 1 rejected (out of stock), 2 compensated (1 payment timed out: stock released; "
    "1 shipping failed: payment refunded, stock released)"
)


def inmotion(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "inmotion", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def run_demo(broker: str) -> str:
    """Six orders through the demo on `broker`; its output, once it exited cleanly."""
    env = {k: v for k, v in os.environ.items() if k != "INMOTION_BROKER"} | {"COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "examples.shop", "--broker", broker, "--orders", "6"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert SUMMARY in result.stdout
    return result.stdout


@pytest.mark.slow
def test_the_shop_saga_ships_rejects_and_compensates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    output = run_demo(url)
    assert "payment !! no answer from the card gateway for o-002" in output
    assert "payment !! refunded pay-o-005 (23.50)" in output
    # each of the saga's commands has a cause, and each reply is caused by its command
    assert len(re.findall(r"caused by order/o-00\d/\d", output)) >= 11

    listed = [json.loads(line) for line in inmotion("workflows", "list", "--broker", url, "--json").splitlines()]
    statuses = {instance["key"]: instance["status"] for instance in listed}
    assert statuses == {
        "order/o-001": "completed",
        "order/o-002": "compensated",
        "order/o-003": "completed",
        "order/o-004": "completed",
        "order/o-005": "compensated",
        "order/o-006": "completed",
    }
    (describe,) = re.findall(r"a compensated one: +inmotion (workflows describe order/o-002 --broker \S+)", output)
    described = inmotion(*describe.split())
    assert "order/o-002: compensated" in described
    assert "#2 waited timeout=true" in described
    assert "#1 undone release_stock" in described

    # the command the summary suggests draws a shipped order's flow: each command under the
    # order, each reply under its command
    (command,) = re.findall(r"an order's flow: +inmotion (trace \S+ --broker \S+)", output)
    drawn = [re.sub(r"^([│├└─ ]*\S+).*", r"\1", line) for line in inmotion(*command.split()).splitlines()[1:]]
    assert drawn[0] == "shop.order.placed"
    for request, reply in [
        ("shop.stock.reserve", "shop.stock.reserved"),
        ("shop.payment.charge", "shop.payment.charged"),
        ("shop.shipment.create", "shop.shipment.created"),
    ]:
        at = drawn.index(f"├─ {request}")
        assert drawn[at + 1] == f"│  └─ {reply}"
    assert drawn[-1] == "└─ inmotion.workflow.completed"


@pytest.mark.slow
@pytest.mark.kafka
def test_the_same_demo_runs_on_kafka(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INMOTION_WORKFLOW_STORE", f"sqlite:///{tmp_path / 'workflows.db'}")
    output = run_demo(f"kafka://{kafka_bootstrap}")
    assert "saga -> timed_out" in output
