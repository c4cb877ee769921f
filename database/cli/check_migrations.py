"""Checks a branch's migrations against the branch it merges into, with git, and its committed
schema snapshot against the schema its migrations produce.

Applied migrations are immutable: a file the target branch already has may not be edited, renamed
or deleted by the branch, since testing and production have run (or will run) the target's
version. A new file may not reuse a number the target branch already uses (two branches that
each added `004_...`). The migrations the merge adds are linted (database/lint: squawk's rules,
file-only severity; deploys judge them again with the live table sizes). Prints one line per
problem and finding, naming the file, and lists the migrations the merge adds (in GitHub Actions
also as job-summary tables and annotations on the lines).

With --schema-snapshot it also applies the working tree's migrations to a throwaway PostgreSQL
(the pinned 17.9, scripts/local-db.sh) and fails when database/schema.sql differs from the schema
they produce, showing the difference. --write-schema-snapshot writes that schema instead.

Usage: scripts/check-migrations.sh --base origin/main [--head HEAD] [--migrations-dir database/migrations]
                                   [--schema-snapshot]
       scripts/check-migrations.sh --write-schema-snapshot [--migrations-dir database/migrations]
Exit status: 0 clean; 1 problems found; 2 bad arguments, git failure or no throwaway server.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from database.cli.throwaway_db import ServerStartError, throwaway_server
from database.migrator.discovery import REPEATABLE

if TYPE_CHECKING:
    from database.cli.snapshot import Snapshot
    from database.lint.findings import Finding

_NAME = re.compile(r"^(?P<number>[0-9]+)_[^/]*\.sql$")


class GitError(Exception):
    pass


@dataclass
class CheckResult:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    added: list[str] = field(default_factory=list)  # paths of new migrations, in run order
    warnings: list[tuple[str, str]] = field(default_factory=list)  # allowed, but worth a look
    snapshot_difference: list[str] = field(default_factory=list)  # unified diff: committed -> produced
    findings: list[Finding] = field(default_factory=list)  # lint of the added migrations


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
    """A .sql file directly in the migrations directory (the runner ignores subdirectories); an
    undo file (NNN_description.down.sql) is not one: it never runs forward, and may be edited; nor
    is a repeatable one (R__description.sql), which is meant to be edited."""
    name = path.rpartition("/")[2]
    return (
        path.rpartition("/")[0] == directory and name.lower().endswith(".sql") and not name.endswith(".down.sql")
        and not REPEATABLE.match(name)
    )


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


def lint_added(repo: Path, directory: str, result: CheckResult) -> None:
    """Lint the migrations the merge adds (no database: file-only severity); an unacknowledged
    error, or a file the runner would refuse, is a problem."""
    from database.lint.engine import lint_migrations
    from database.lint.severity import judge
    from database.migrator.errors import MigrationError
    from database.migrator.orchestration import load_migrations

    if not result.added:
        return
    try:
        migrations = load_migrations(repo / directory)
        added = [m for m in migrations if m.file.path.relative_to(repo).as_posix() in result.added]
        result.findings = judge(lint_migrations(added, lambda path: path.relative_to(repo).as_posix()), None, 0)
    except MigrationError as error:
        result.problems.append((directory, str(error).replace(f"{repo}/", "").splitlines()[0]))
        return
    for finding in result.findings:
        if finding.blocking:
            result.problems.append((f"{finding.file}:{finding.line}", f"{finding.rule}: {finding.message}"))


# Lines of the snapshot difference printed (and put in the job summary); the rest are counted.
_DIFF_LINES_SHOWN = 200


def produced_schema(repo: Path, directory: str) -> Snapshot:
    """The normalized schema dump of the migrations in ``repo``/``directory``, applied to a
    throwaway server of the pinned version. A migration that fails there raises its MigrationError."""
    from database.cli.snapshot import dump_schema
    from database.migrator.events import ignore_events
    from database.migrator.orchestration import RunnerSettings, apply
    from database.migrator.postgres import ConnectSettings

    with tempfile.TemporaryDirectory(prefix="check-migrations-") as state, throwaway_server(
        Path(state) / "postgres"
    ) as server:
        settings = RunnerSettings(
            migrations_dir=repo / directory,
            connect=ConnectSettings(conninfo=server.uri, total_timeout_seconds=30),
            applied_by="check-migrations",
        )
        apply(settings, ignore_events)
        return dump_schema(server.uri)


def snapshot_file(directory: str) -> str:
    """The snapshot's path relative to the repository: database/schema.sql beside database/migrations."""
    from database.cli.snapshot import snapshot_path

    return snapshot_path(Path(directory)).as_posix()


def check_snapshot(repo: Path, directory: str, result: CheckResult) -> None:
    """Compare the committed snapshot with the schema the migrations produce; record a problem
    (a failing migration, or the difference) in ``result``."""
    from database.migrator.errors import MigrationError

    snapshot = snapshot_file(directory)
    try:
        produced = produced_schema(repo, directory).text
    except MigrationError as error:
        problem = str(error).replace(f"{repo}/", "").splitlines()[0]
        result.problems.append((snapshot, f"the migrations do not apply to an empty PostgreSQL: {problem}"))
        return
    committed_path = repo / snapshot
    committed = committed_path.read_text(encoding="utf-8") if committed_path.is_file() else ""
    if committed == produced:
        return
    result.snapshot_difference = list(
        difflib.unified_diff(
            committed.splitlines(), produced.splitlines(), f"{snapshot} (committed)",
            f"{snapshot} (what the migrations produce)", lineterm="",
        )
    )
    what = "differs from" if committed_path.is_file() else "is missing; it should hold"
    result.problems.append(
        (
            snapshot,
            f"{what} the schema the migrations produce on an empty PostgreSQL: write it with "
            "scripts/check-migrations.sh --write-schema-snapshot (or an apply to --environment local) and commit it",
        )
    )


def _shown_difference(difference: list[str]) -> list[str]:
    if len(difference) <= _DIFF_LINES_SHOWN:
        return difference
    return [*difference[:_DIFF_LINES_SHOWN], f"... {len(difference) - _DIFF_LINES_SHOWN} more lines"]


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
    if result.findings:
        lines += ["", "Lint of the migrations this merge adds (each deploy judges them again by the live table sizes):"]
        lines += [""]
        lines += ["| where | rule | severity | message |", "|---|---|---|---|"]
        for finding in result.findings:
            severity = finding.severity + (" (acknowledged)" if finding.acknowledged else "")
            message = finding.message.replace("|", "/")
            lines.append(f"| `{finding.file}:{finding.line}` | {finding.rule} | {severity} | {message} |")
    if result.snapshot_difference:
        lines += ["", "The schema snapshot differs from what the migrations produce:", "", "```diff"]
        lines += [*_shown_difference(result.snapshot_difference), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/check-migrations.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the target branch, e.g. origin/main")
    parser.add_argument("--head", default="HEAD", help="the revision to check (default HEAD)")
    parser.add_argument("--migrations-dir", default="database/migrations", help="relative to the repository root")
    parser.add_argument("--schema-snapshot", action="store_true",
                        help="also check the committed schema snapshot (needs a throwaway PostgreSQL)")
    parser.add_argument("--write-schema-snapshot", action="store_true",
                        help="only write the schema snapshot the migrations produce on a throwaway PostgreSQL")
    args = parser.parse_args(argv)
    repo = Path.cwd()
    directory = args.migrations_dir.rstrip("/")
    if args.write_schema_snapshot:
        return write_produced_snapshot(repo, directory)
    if args.base is None:
        parser.error("--base is required (the branch the change merges into, e.g. origin/main)")
    try:
        result = check(repo, args.base, args.head, directory)
        lint_added(repo, directory, result)
        if args.schema_snapshot:
            check_snapshot(repo, directory, result)
    except (GitError, ServerStartError) as error:
        print(f"check-migrations: {error}", file=sys.stderr)
        return 2
    in_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    for path, message in result.problems:
        print(f"check-migrations: {path}: {message}", file=sys.stderr)
        if in_actions:
            file, _, line = path.partition(":")
            print(f"::error file={file}{f',line={line}' if line else ''}::{message}")
    for line in _shown_difference(result.snapshot_difference):
        print(line, file=sys.stderr)
    for path, message in result.warnings:
        print(f"check-migrations: warning: {path}: {message}", file=sys.stderr)
        if in_actions:
            print(f"::warning file={path}::{message}")
    for finding in result.findings:
        if finding.blocking:
            continue  # a problem, printed above
        state = " (acknowledged)" if finding.acknowledged else ""
        print(f"check-migrations: lint {finding.severity}{state}: {finding.file}:{finding.line} {finding.rule}: "
              f"{finding.message}", file=sys.stderr)
        if in_actions and not finding.acknowledged:
            print(f"::warning file={finding.file},line={finding.line},title={finding.rule}::{finding.message}")
    print(
        f"check-migrations: {len(result.added)} new migration(s) against {args.base}: "
        + (", ".join(result.added) or "none")
    )
    if args.schema_snapshot and not result.snapshot_difference:
        print(f"check-migrations: {snapshot_file(directory)} matches what the migrations produce")
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(summary_markdown(result, args.base))
    if result.problems:
        print(f"check-migrations: FAILED: {len(result.problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


def write_produced_snapshot(repo: Path, directory: str) -> int:
    """--write-schema-snapshot: the schema of a clean build, whatever the local database went through."""
    from database.cli.snapshot import write_snapshot
    from database.migrator.errors import MigrationError

    snapshot = snapshot_file(directory)
    try:
        produced = produced_schema(repo, directory)
    except (MigrationError, ServerStartError) as error:
        print(f"check-migrations: {str(error).replace(f'{repo}/', '')}", file=sys.stderr)
        return 1 if isinstance(error, MigrationError) else 2
    write_snapshot(produced, repo / snapshot)
    print(f"check-migrations: wrote {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
