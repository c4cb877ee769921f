"""run-migrations.sh --lint: the findings, for people (file:line rule severity, then what to do)
and for machines (--json). Without a database: every file, file-only severity. With one: the files
pending there, judged by its table sizes. Nothing is written to the database, not even the
tracking table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from database.cli.environments import shown
from database.lint.engine import lint_migrations
from database.lint.findings import ALWAYS_ERRORS
from database.lint.severity import judge

if TYPE_CHECKING:
    from database.lint.findings import FileLint, Finding
    from database.migrator.orchestration import LocalMigration


def cli_lint_source(migrations: list[LocalMigration]) -> list[FileLint]:
    """The gate's source in the CLI: squawk on the pending files, named as people see them."""
    return lint_migrations(migrations, _shown_path)


def _shown_path(path: Path) -> str:
    return shown(str(path))


def lint_files(migrations_dir: Path) -> list[Finding]:
    """Every migration file, no database: only what fails whatever the data is an error."""
    from database.migrator.orchestration import load_migrations

    return judge(lint_migrations(load_migrations(migrations_dir), _shown_path), None, 0)


def exit_code(findings: list[Finding]) -> int:
    """1 while an unacknowledged error stands, else 0."""
    return 1 if any(finding.blocking for finding in findings) else 0


def print_findings(findings: list[Finding], out: TextIO, *, scope: str) -> None:
    for finding in findings:
        state = " (acknowledged)" if finding.acknowledged else ""
        print(f"{finding.file}:{finding.line} {finding.rule} {finding.severity}{state}", file=out)
        print(f"   {finding.message}", file=out)
        if finding.blocking and finding.rule not in ALWAYS_ERRORS:
            hint = finding.acknowledge_hint()
            print(f"   intended? acknowledge it on the line before the statement: {hint}", file=out)
    errors = sum(1 for finding in findings if finding.blocking)
    warnings = sum(1 for finding in findings if finding.severity == "warning" and not finding.acknowledged)
    acknowledged = sum(1 for finding in findings if finding.acknowledged)
    counts = f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}"
    if acknowledged:
        counts += f", {acknowledged} acknowledged"
    icon = "❌" if errors else "✅"
    print(f"{icon} Lint of {scope}: {counts}", file=out)
