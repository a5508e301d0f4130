import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_minute_of_kills_and_stops_on_sqlite_breaks_no_promise(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.chaos.run", "--seconds", "60", "--seed", "7", "--dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    line = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", line))
    assert (counts["lost"], counts["dup(transactional)"], counts["order"], counts["stalls"]) == ("0", "0", "0", "0"), (
        line + result.stderr[-2000:]
    )
    assert int(counts["acknowledged"]) > 0
    assert int(counts["kills"]) > 0
    assert result.returncode == 0
