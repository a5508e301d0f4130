"""The shop demo runs end to end: services in their own processes, retries, the DLQ."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inmotion.log import connect
from inmotion.runtime.deadletter import entries

ROOT = Path(__file__).resolve().parents[2]


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
    assert "6 orders: 3 shipped, 1 rejected (out of stock), 2 dead-lettered" in result.stdout
    return result.stdout


@pytest.mark.slow
def test_the_shop_demo_ships_rejects_and_dead_letters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    output = run_demo(url)
    assert "handler failed (attempt 1, will retry): GatewayTimeout" in output
    # every follow-up event has a cause of its own: their short ids must differ
    causes = re.findall(r"caused by (\S+)", output)
    assert len(causes) >= 6
    assert len(set(causes)) == len(causes), causes
    with connect(url) as log:
        failed = [entry.event().data["order_id"] for entry in entries(log, "shop.payment.dlq")]
        assert sorted(failed) == ["o-002", "o-006"]
    # the command the summary suggests draws a shipped order's flow
    (command,) = re.findall(r"an order's flow: +inmotion (trace \S+ --broker \S+)", output)
    traced = subprocess.run(
        [sys.executable, "-m", "inmotion", *command.split()], capture_output=True, text=True, timeout=60, check=True
    )
    drawn = [line.split(" id ")[0].rsplit("  ", 2)[0] for line in traced.stdout.splitlines()[1:]]
    assert drawn == [
        "shop.order.placed",
        "└─ shop.inventory.reserved",
        "   └─ shop.payment.captured",
        "      └─ shop.shipment.created",
    ]


@pytest.mark.slow
@pytest.mark.kafka
def test_the_same_demo_runs_on_kafka(kafka_bootstrap: str) -> None:
    output = run_demo(f"kafka://{kafka_bootstrap}")
    assert "dead-lettered shop.inventory/" in output
