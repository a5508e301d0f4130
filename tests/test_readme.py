"""The README's Python examples run as they are, each in a fresh interpreter."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("source", EXAMPLES)
def test_readme_example_runs(source: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_readme_rules_file_checks_as_shown(tmp_path: Path) -> None:
    """The rules-file section's example file gives the output the README shows."""
    section = README.read_text().split("### Rules files", 1)[1]
    rules_file = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)[0]
    console = re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL)[0]
    (tmp_path / "rules.yaml").write_text(rules_file)
    runs = re.findall(r"^\$ inmotion (.*)\n((?:[^$].*\n)*)", console, flags=re.MULTILINE)
    assert len(runs) == 5
    for command, shown in runs:
        arguments = [sys.executable, "-m", "inmotion", *shlex.split(command)]
        result = subprocess.run(arguments, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stdout) == (0, shown), result.stderr


READINGS = """\
{"sensor": "s1", "temperature": 21.5, "ts": "2026-12-04T10:00:01Z"}
{"sensor": "s2", "temperature": 19.0, "ts": "2026-12-04T10:00:02Z"}
{"sensor": "s1", "temperature": 23.5, "ts": "2026-12-04T10:00:04Z"}
{"sensor": "s1", "temperature": 84.0, "ts": "2026-12-04T10:00:06Z"}
{"sensor": "s2", "temperature": 19.5, "ts": "2026-12-04T10:00:09Z"}
{"sensor": "s1", "temperature": 22.0, "ts": "2026-12-04T10:00:13Z"}
"""


def test_readme_sql_query_prints_what_it_shows(tmp_path: Path) -> None:
    """The continuous-SQL section's query gives the rows the README shows."""
    section = README.read_text().split("### Continuous SQL", 1)[1]
    assert READINGS.splitlines()[0] in section
    (tmp_path / "averages.sql").write_text(re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)[0])
    console = re.findall(r"```console\n(.*?)```", section, flags=re.DOTALL)[0]
    [(command, shown)] = re.findall(r"^\$ inmotion (.*)\n((?:[^$].*\n)*)", console, flags=re.MULTILINE)

    def inmotion(*arguments: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "inmotion", *arguments], cwd=tmp_path, input=stdin, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    inmotion("topics", "create", "readings")
    inmotion("publish", "readings", "-", "--type", "reading", "--source", "/sensors", stdin=READINGS)
    assert inmotion(*shlex.split(command)) == shown
