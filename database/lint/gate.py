"""The lint gate: before an apply writes anything, lint the pending files against the database they
are about to change, and refuse the run while an unacknowledged error stands. Same rule locally,
through --db-uri and in every deploy; the data decides (a small table: a warning)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from database.migrator.errors import MigrationError
from database.migrator.events import EventSink, Notice

from .findings import ALWAYS_ERRORS, FileLint, Finding
from .severity import judge, looked_up_names, table_facts

if TYPE_CHECKING:
    import psycopg

    from database.migrator.orchestration import LocalMigration, PreApplyCheck, RunnerSettings

# The pending migrations' findings, files only (severity is decided against the database).
LintSource = Callable[[list["LocalMigration"]], list[FileLint]]


class LintRefusedError(MigrationError):
    """Unacknowledged lint errors on the pending migrations: nothing was applied."""

    def __init__(self, findings: list[Finding]) -> None:
        blocking = [finding for finding in findings if finding.blocking]
        lines = [
            f"lint: {len(blocking)} unacknowledged error{'s' if len(blocking) != 1 else ''} in the pending "
            "migrations; nothing was applied"
        ]
        for finding in blocking:
            lines.append(f"  {finding.file}:{finding.line} {finding.rule}: {finding.message}")
        lines.append(
            "  If the operation is intended (a maintenance window, a table that stays small), acknowledge it with "
            f"`{blocking[0].acknowledge_hint()}` on the line before the statement"
        )
        super().__init__("\n".join(lines))
        self.findings = findings


def lint_gate(source: LintSource, error_rows: int) -> PreApplyCheck:
    """A pre-apply check: judge the pending files' findings with the target's table sizes; report
    what matters, refuse on unacknowledged errors."""

    def check(
        connection: psycopg.Connection[tuple[object, ...]], pending: list[LocalMigration], emit: EventSink
    ) -> None:
        files = source(pending)
        judged = judge(files, table_facts(connection, looked_up_names(files), error_rows), error_rows)
        # A syntax error is left to the server, which names it with file:line and SQLSTATE when the
        # migration runs, as it always has; synth and --lint report it before that.
        findings = [finding for finding in judged if finding.rule not in ALWAYS_ERRORS]
        if any(finding.blocking for finding in findings):
            raise LintRefusedError(findings)
        for finding in findings:  # what the live tables make worth saying; the rest: --lint
            if finding.table is not None or finding.severity == "error":
                state = " (acknowledged)" if finding.acknowledged else ""
                emit(Notice(f"lint {finding.severity}{state}: {finding.file}:{finding.line} {finding.rule}: "
                            f"{finding.message}"))

    return check


def lint_pending(
    settings: RunnerSettings, source: LintSource, error_rows: int, emit: EventSink
) -> tuple[list[Finding], int]:
    """--lint against a database: the files pending there, judged with its table sizes; returns
    (findings, files linted). Reads only: no lock, no tracking table created."""
    from database.migrator import postgres
    from database.migrator.orchestration import compute_status, database_session, load_migrations

    local = load_migrations(settings.migrations_dir)
    by_version = {migration.version: migration for migration in local}
    with database_session(settings, emit) as connection:
        exists = postgres.tracking_table_exists(connection)
        status = compute_status(local, postgres.applied_rows(connection) if exists else {})
        files = source([by_version[item.version] for item in status.pending])
        facts = table_facts(connection, looked_up_names(files), error_rows)
    return judge(files, facts, error_rows), len(status.pending)


def shipped_report(path: Path) -> LintSource:
    """The findings squawk made at synth time, shipped in the deploy function's asset (squawk itself
    is too big for it): each pending file's, checked against the file's digest."""

    def source(pending: list[LocalMigration]) -> list[FileLint]:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            by_version = {item["version"]: FileLint.from_dict(item) for item in report["files"]}
        except (OSError, ValueError, KeyError, TypeError) as error:
            unreadable = f"{path.name}: the asset's lint report is unreadable ({error}); deploy again"
            raise MigrationError(unreadable) from None
        files = []
        for migration in pending:
            lint = by_version.get(migration.version)
            if lint is None or lint.digest != migration.digest:
                raise MigrationError(
                    f"{path.name} has no findings for {migration.version} as this asset carries it: the asset was "
                    "not built by scripts/synth.sh; deploy again"
                )
            files.append(lint)
        return files

    return source


def report_document(files: list[FileLint]) -> str:
    """lint-report.json: what shipped_report reads."""
    return json.dumps({"files": [lint.to_dict() for lint in files]}, indent=1, sort_keys=True) + "\n"
