"""The continuous-SQL examples, run as a user runs them: each gives the same results when its
job is killed with SIGKILL halfway and restarted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, tmp_path: Path, *options: str) -> list[str]:
    broker = f"sqlite:///{tmp_path / (name + ''.join(options).replace('-', '') + '.db')}"
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", "--broker", broker, *options],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("name", ["iot", "fraud", "trading"])
def test_an_example_gives_the_same_results_after_a_kill_9_of_its_job(name: str, tmp_path: Path) -> None:
    calm = run_example(name, tmp_path)
    killed = run_example(name, tmp_path, "--kill")
    assert any("job killed with SIGKILL" in line for line in killed)
    assert [line for line in killed if "SIGKILL" not in line] == calm


def test_iot_alerts_a_hot_and_a_silent_sensor(tmp_path: Path) -> None:
    lines = run_example("iot", tmp_path)
    assert "averages: 4,585 (a sensor's 5 s window once the watermark passes it), for example" in lines
    alerts = [line.split() for line in lines if line.startswith("  iot.alert")]
    assert [(kind, sensor) for kind, sensor, *_ in alerts] == [("iot.alert.silent", "sensor-007")] + [
        ("iot.alert.hot", "sensor-042")
    ] * 4
    assert alerts[0][-3:] == ["after", "40", "readings"]


def test_fraud_catches_each_planted_fraud_and_nothing_else(tmp_path: Path) -> None:
    lines = run_example("fraud", tmp_path)
    alerts = [line.split()[:2] for line in lines if line.startswith("  card-")]
    assert alerts == [["card-9001", "burst"]] * 3 + [["card-9002", "spend"]] * 2 + [["card-9003", "countries"]] * 2


def test_trading_gives_vwap_and_three_movers_a_minute(tmp_path: Path) -> None:
    lines = run_example("trading", tmp_path)
    assert "VWAP: 180 (symbol, minute) figures, for example" in lines
    movers = [line.split() for line in lines if " #" in line]
    assert len(movers) == 9 * 3
    assert [m[1] for m in movers[:3]] == ["#1", "#2", "#3"]
    assert float(movers[0][3].rstrip("%")) >= float(movers[1][3].rstrip("%")) >= float(movers[2][3].rstrip("%"))
