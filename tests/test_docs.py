"""The README is a front door and docs/ holds the rest: every link and anchor resolves, every flag
of run-migrations.sh and of the other scripts is documented, nothing cites files outside the
repository. No database, no AWS: a few seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND_REFERENCE = ROOT / "docs" / "command-reference.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
README_MAX_LINES = 300

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target), the target optionally in <...> and followed by a "title".
_INLINE_LINK = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target, a reference definition on a line of its own.
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
# An option line of argparse's help: two spaces, then the option strings ("-c, --context KEY=VALUE").
_OPTION_LINE = re.compile(r"^ {2,4}(-{1,2}[A-Za-z][^\n]*?)(?: {2,}|$)", re.MULTILINE)
_LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def without_code_blocks(text: str) -> str:
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered (links keep their text, code spans and
    emphasis lose their markers), lower case, punctuation other than `-` and `_` dropped, each
    space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<![\w])_+|_+(?![\w])", "", text)  # _emphasis_, not snake_case
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in `page`; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for heading in _HEADING.findall(without_code_blocks(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, count = base, 1
        while name in found:
            name, count = f"{base}-{count}", count + 1
        found.add(name)
    return found


def links(page: Path) -> list[str]:
    """Every link target of `page`, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", without_code_blocks(page.read_text(encoding="utf-8")))
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [target.strip("<>") for target in targets]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # https://..., mailto:
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor in {destination.name}")
    return broken


def long_flags(help_text: str) -> set[str]:
    """The long options an argparse help lists on its option lines (not the ones its prose mentions)."""
    return {flag for line in _OPTION_LINE.findall(help_text) for flag in _LONG_FLAG.findall(line)} - {"--help"}


def documented(flag: str, text: str) -> bool:
    """`flag` appears in code in `text`: `--flag`, `--flag VALUE` or `[--flag ...]`, not as the start
    of a longer flag (`--rollback` is not documented by `--rollback-to`)."""
    return re.search(rf"`[^`\n]*{re.escape(flag)}(?![\w-])[^`\n]*`", text) is not None


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    unlinked = sorted(page.name for page in PAGES[1:] if page.resolve() not in linked)
    assert not unlinked, f"README.md links no docs/{', docs/'.join(unlinked)}"


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
    flags = long_flags(shown)
    assert len(flags) > 10, shown
    reference = COMMAND_REFERENCE.read_text(encoding="utf-8")
    missing = sorted(flag for flag in flags if not documented(flag, reference))
    assert not missing, f"docs/command-reference.md does not document {', '.join(missing)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda script: script.name)
def test_every_flag_of_each_script_is_in_the_command_reference(script: Path, tmp_path: Path) -> None:
    environment = {**os.environ, "LOCAL_PG_DIR": str(tmp_path / "postgres"), "CDK_OUTDIR": str(tmp_path / "cdk.out")}
    shown = subprocess.run(
        [str(script), "--help"], cwd=ROOT, capture_output=True, text=True, check=True, env=environment, timeout=120
    ).stdout
    reference = COMMAND_REFERENCE.read_text(encoding="utf-8")
    assert f"scripts/{script.name}" in reference, f"docs/command-reference.md does not name scripts/{script.name}"
    missing = sorted(flag for flag in long_flags(shown) if not documented(flag, reference))
    assert not missing, f"docs/command-reference.md does not document {script.name} {', '.join(missing)}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """Each check on a page made to break it."""
    (tmp_path / "other.md").write_text("# Other\n\n## `schema_migrations` table\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# What each function's role can do\n\n## `scripts/local-db.sh`\n\n## Step\n\n## Step\n\n"
        "## Command-line overrides (`-c`)\n\n"
        "[ok](other.md#schema_migrations-table) [ok](#step-1) [ok](#command-line-overrides--c)\n"
        "[gone](missing.md) [no anchor](other.md#nothing-here) ![image](<no image.png>)\n"
        "`[not a link](nowhere.md)`\n\n```\n[not a link](nowhere-either.md)\n```\n\n[ref]: elsewhere.md\n"
    )
    assert anchors(page) == {
        "what-each-functions-role-can-do", "scriptslocal-dbsh", "step", "step-1", "command-line-overrides--c",
    }
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nothing-here: no heading with that anchor in other.md",
        "no image.png: no such file",
        "elsewhere.md: no such file",
    ]
    help_text = (
        "options:\n  -h, --help  show\n  -c, --context KEY=VALUE\n                  see --not-a-flag\n  --rollback N\n"
    )
    assert long_flags(help_text) == {"--context", "--rollback"}
    assert not documented("--rollback", "`--rollback-to VERSION`")
    assert documented("--rollback", "| `--rollback N` |") and documented("--keep", "`benchmark.sh [--keep]`")
