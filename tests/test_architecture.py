"""The layering that ../DESIGN.md describes, checked on the source: each package imports only
packages below it, and nothing outside a backend's package imports the backend (the registry
names them by string and imports them when a URL asks for one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
LAYERS = {
    "inmotion.errors": 0,
    "inmotion.clock": 0,
    "inmotion.events": 1,
    "inmotion.log": 2,
    "inmotion.patterns": 3,
    "inmotion.runtime": 4,
    "inmotion.routing": 5,
    "inmotion.sourcing": 5,
    "inmotion.workflows": 6,
    "inmotion.streams": 7,
    "inmotion.gateway": 8,
    "inmotion.cli": 9,
    "inmotion.testing": 10,
}
BACKENDS = ("inmotion.log.memory", "inmotion.log.sqlite", "inmotion.log.kafka")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SOURCE / "inmotion").rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "inmotion" or name.startswith("inmotion.")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _layer(name: str) -> tuple[str, int] | None:
    for package, level in LAYERS.items():
        if _within(name, package):
            return package, level
    return None


MODULES = _modules()


def test_every_package_has_a_layer() -> None:
    unplaced = [
        name for name in MODULES if name.count(".") >= 1 and _layer(name) is None and name != "inmotion.__main__"
    ]
    assert unplaced == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_outside_a_backend_imports_it(module: str) -> None:
    for backend in BACKENDS:
        if _within(module, backend):
            continue
        leaks = sorted(name for name in _imports(MODULES[module]) if _within(name, backend))
        assert leaks == [], f"{module} imports the {backend} backend"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_packages_import_only_downward(module: str) -> None:
    placed = _layer(module)
    if placed is None or any(_within(module, backend) for backend in BACKENDS):
        return  # the facade (inmotion, inmotion.__main__) and backends, which plug into any layer's contract
    package, level = placed
    upward = sorted(
        name
        for name in _imports(MODULES[module])
        if (other := _layer(name)) is not None and other[0] != package and other[1] >= level
    )
    assert upward == [], f"{module} ({package}) imports {upward}"


def test_the_check_sees_a_backend_import(tmp_path: Path) -> None:
    leaking = tmp_path / "leak.py"
    leaking.write_text("from inmotion.log.sqlite.file import immediate\nimport inmotion.runtime\n")
    assert {"inmotion.log.sqlite.file", "inmotion.log.sqlite.file.immediate", "inmotion.runtime"} <= _imports(leaking)
