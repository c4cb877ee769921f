"""Checks a branch's migrations against the branch it merges into, with git only (no database).

Applied migrations are immutable: a file the target branch already has may not be edited, renamed
or deleted by the branch, since testing and production have run (or will run) the target's
version. A new file may not reuse a number the target branch already uses (two branches that
each added `004_...`). Prints one line per problem, naming the file, and lists the migrations the
merge adds (in GitHub Actions also as a job-summary table and error annotations).

Usage: scripts/check-migrations.sh --base origin/main [--head HEAD] [--migrations-dir database/migrations]
Exit status: 0 clean; 1 problems found; 2 bad arguments or git failure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^(?P<number>[0-9]+)_[^/]*\.sql$")


class GitError(Exception):
    pass


@dataclass
class CheckResult:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    added: list[str] = field(default_factory=list)  # paths of new migrations, in run order
    warnings: list[tuple[str, str]] = field(default_factory=list)  # allowed, but worth a look


def git(repo: Path, *arguments: str) -> str:
    completed = subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True)
    if completed.returncode != 0:
        raise GitError(f"git {' '.join(arguments)}: {completed.stderr.strip() or 'failed'}")
    return completed.stdout


def _migrations_at(repo: Path, revision: str, directory: str) -> dict[str, str]:
    """path -> blob id of every .sql file directly in ``directory`` at ``revision``."""
    listing = git(repo, "ls-tree", "-z", revision, "--", f"{directory}/")
    files = {}
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        if meta.split()[1] == "blob" and _is_migration(path, directory):
            files[path] = meta.split()[2]
    return files


def _is_migration(path: str, directory: str) -> bool:
    """A .sql file directly in the migrations directory (the runner ignores subdirectories)."""
    return path.rpartition("/")[0] == directory and path.lower().endswith(".sql")


def _number(path: str) -> int | None:
    match = _NAME.match(path.rsplit("/", 1)[-1])
    return int(match["number"]) if match else None


def check(repo: Path, base: str, head: str = "HEAD", directory: str = "database/migrations") -> CheckResult:
    """Compares ``head`` with ``base`` (the target branch) since their merge base."""
    directory = directory.rstrip("/")
    merge_base = git(repo, "merge-base", base, head).strip()
    on_target = _migrations_at(repo, base, directory)
    changes = git(
        repo, "diff", "--name-status", "-z", "--find-renames", "--no-ext-diff", merge_base, head, "--", f"{directory}/"
    ).split("\0")
    result = CheckResult()
    added: list[str] = []
    index = 0
    while index < len(changes) and changes[index]:
        status = changes[index]
        if status[0] in "RC":
            old, new = changes[index + 1], changes[index + 2]
            index += 3
        else:
            old = new = changes[index + 1]
            index += 2
        if not (_is_migration(old, directory) or _is_migration(new, directory)):
            continue
        if status[0] == "R" and old in on_target:
            result.problems.append(
                (old, f"renamed to {new}, but {base} already has it (applied migrations keep their name)")
            )
        elif status[0] == "M" and old in on_target:
            result.problems.append(
                (old, f"edited, but {base} already has it (applied migrations are immutable: add a new migration)")
            )
        elif status[0] == "D" and old in on_target:
            result.problems.append((old, f"deleted, but {base} already has it (applied migrations stay)"))
        elif status[0] == "T" and old in on_target:
            result.problems.append((old, f"changed type, but {base} already has it"))
        renamed_applied = status[0] == "R" and old in on_target  # reported above, not a new file
        if status[0] in "ARC" and _is_migration(new, directory) and not renamed_applied:
            added.append(new)
    target_numbers: dict[int, str] = {}
    for path in on_target:
        number = _number(path)
        if number is not None:
            target_numbers[number] = path
    newest_on_target = max(target_numbers, default=None)
    seen: dict[int, str] = {}
    for path in sorted(added, key=lambda p: (_number(p) or -1, p)):
        number = _number(path)
        if number is None:
            result.problems.append((path, "malformed name: expected NNN_description.sql"))
            continue
        if number in target_numbers and target_numbers[number] != path:
            result.problems.append(
                (path, f"number {number} is already used on {base} by {target_numbers[number]}: renumber this file")
            )
        elif number in seen:
            result.problems.append((path, f"number {number} is also used by {seen[number]}"))
        elif newest_on_target is not None and number < newest_on_target:
            result.warnings.append(
                (
                    path,
                    f"number {number} is lower than {target_numbers[newest_on_target]} on {base}: it will "
                    "run out of order on databases that have the newer one (the runner allows it, with a notice)",
                )
            )
        seen.setdefault(number, path)
        result.added.append(path)
    return result


def summary_markdown(result: CheckResult, base: str) -> str:
    lines = [f"## Migrations against {base}", ""]
    if result.problems:
        lines += ["| file | problem |", "|---|---|"]
        lines += [f"| `{path}` | {message.replace('|', '/')} |" for path, message in result.problems]
        lines.append("")
    if result.warnings:
        lines += ["| file | warning |", "|---|---|"]
        lines += [f"| `{path}` | {message.replace('|', '/')} |" for path, message in result.warnings]
        lines.append("")
    lines += ["| migration this merge adds (runs on testing after the merge) |", "|---|"]
    lines += [f"| `{path}` |" for path in result.added] or ["| none |"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/check-migrations.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the target branch, e.g. origin/main")
    parser.add_argument("--head", default="HEAD", help="the revision to check (default HEAD)")
    parser.add_argument("--migrations-dir", default="database/migrations", help="relative to the repository root")
    args = parser.parse_args(argv)
    repo = Path.cwd()
    try:
        result = check(repo, args.base, args.head, args.migrations_dir)
    except GitError as error:
        print(f"check-migrations: {error}", file=sys.stderr)
        return 2
    in_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    for path, message in result.problems:
        print(f"check-migrations: {path}: {message}", file=sys.stderr)
        if in_actions:
            print(f"::error file={path}::{message}")
    for path, message in result.warnings:
        print(f"check-migrations: warning: {path}: {message}", file=sys.stderr)
        if in_actions:
            print(f"::warning file={path}::{message}")
    print(
        f"check-migrations: {len(result.added)} new migration(s) against {args.base}: "
        + (", ".join(result.added) or "none")
    )
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(result, args.base))
    if result.problems:
        print(f"check-migrations: FAILED: {len(result.problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
