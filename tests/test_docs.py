"""The README is a front door and docs/ holds the rest: every link and anchor resolves, every flag
of run-migrations.sh is documented, nothing cites files outside the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+?)\s*#*$", re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, count = base, 1
        while name in found:
            name, count = f"{base}-{count}", count + 1
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text(encoding="utf-8")))


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # https://..., mailto:
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor in {destination.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_cites_files_outside_the_repository(page: Path) -> None:
    assert "../shared" not in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", [p for p in PAGES if p.parent.name == "docs"], ids=lambda page: page.name)
def test_each_page_starts_with_what_it_answers(page: Path) -> None:
    title, blank, lead = page.read_text(encoding="utf-8").split("\n")[:3]
    assert title.startswith("# ") and blank == "" and lead and not lead.startswith(("#", "|", "-", "`"))


def test_every_flag_of_run_migrations_is_in_the_command_reference() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "database.cli", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flags = set(re.findall(r"^  (--[a-z][a-z-]+)", shown, re.MULTILINE)) - {"--help"}  # option lines, not help text
    assert len(flags) > 10
    reference = (ROOT / "docs" / "command-reference.md").read_text(encoding="utf-8")
    missing = sorted(flag for flag in flags if f"`{flag}" not in reference)
    assert not missing, f"docs/command-reference.md does not document {', '.join(missing)}"


def test_the_anchor_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# What each function's role can do\n\n## `scripts/local-db.sh`\n\n## Step\n\n## Step\n")
    assert anchors(page) == {"what-each-functions-role-can-do", "scriptslocal-dbsh", "step", "step-1"}
