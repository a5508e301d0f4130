import re
import subprocess
import sys
from pathlib import Path

import pytest


def _chaos(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.chaos.run", "--seconds", "60", "--seed", "7", "--dir", str(tmp_path)]
    return subprocess.run([*command, *options], capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_a_minute_of_kills_and_stops_on_sqlite_breaks_no_promise(tmp_path: Path) -> None:
    result = _chaos(tmp_path)
    line = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", line))
    assert (counts["lost"], counts["dup(transactional)"], counts["order"], counts["stalls"]) == ("0", "0", "0", "0"), (
        line + result.stderr[-2000:]
    )
    assert int(counts["acknowledged"]) > 0
    assert int(counts["kills"]) > 0
    assert result.returncode == 0


@pytest.mark.slow
@pytest.mark.kafka
def test_a_minute_of_kills_stops_and_broker_restarts_on_kafka_loses_nothing(tmp_path: Path) -> None:
    """On a Kafka broker of the run's own (port 9692), killed (-9) and started again twice."""
    result = _chaos(tmp_path, "--kafka-port", "9692")
    line = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", line))
    assert (counts["lost"], counts["order"], counts["stalls"]) == ("0", "0", "0"), line + result.stderr[-2000:]
    assert int(counts["broker_restarts"]) > 0
    assert int(counts["acknowledged"]) > 0
    assert result.returncode == 0
