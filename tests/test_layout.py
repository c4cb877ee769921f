"""The tree shows the architecture: scripts/ holds only the shell commands a person runs, and the
runner (database/) never imports the infrastructure (stacks/), which packages it: the arrow goes
from stacks to database only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_scripts_holds_only_shell_entry_points() -> None:
    others = [path.relative_to(ROOT) for path in (ROOT / "scripts").rglob("*")
              if path.is_file() and path.suffix != ".sh" and "__pycache__" not in path.parts]
    assert others == []


def test_the_runner_never_imports_the_stacks() -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path) if name.split(".")[0] == "stacks")
        for path in [*(ROOT / "database").rglob("*.py"), *(ROOT / "lambda").rglob("*.py")]
    }
    assert {path: names for path, names in offending.items() if names} == {}
