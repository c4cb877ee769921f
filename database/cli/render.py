"""How the CLI shows a run: the migrations guide's log lines for people, JSON for machines."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from database.cli.environments import shown
from database.migrator.errors import MigrationError, MigrationFailedError
from database.migrator.events import (
    Applied,
    Applying,
    Connected,
    Connecting,
    ConnectRetry,
    Event,
    LockRetry,
    Notice,
    Planned,
    Repeated,
    Repeating,
    Reverted,
    Reverting,
    SchemaDrift,
    ServerMessage,
    TrackingTableReady,
    WaitingForLock,
)

if TYPE_CHECKING:
    from database.migrator.orchestration import ApplyResult, RollbackResult, Status

_APPLIED_SHOWN_WHEN_APPLYING = 10
_SCHEMA_DRIFT_TITLE = "❌ Schema changed outside migrations since the last apply (drift):"
_SCHEMA_DRIFT_BEFORE_APPLY = (
    "⚠️  Schema changed outside migrations since the last apply (drift); the migrations run over it and "
    "this apply records the result:"
)
# The old runner's two lines, on every run: the table is created if missing, checked otherwise.
_TRACKING_LINES = {
    "created": ("📋 Creating migration table...", "✅ Migration table ready"),
    "upgraded": ("📋 Creating migration table...", "✅ Migration table ready (adopted the previous runner's table)"),
    "ready": ("📋 Creating migration table...", "✅ Migration table ready"),
}


@dataclass
class RunLog:
    """What both renderers need to remember about a run: the server version, the version
    warning (computed once), what was applied (for an interruption's message)."""

    deployed_major: int | None = None  # POSTGRES_MAJOR_VERSION, the engine the stacks deploy
    server_version: str | None = None
    warnings: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)

    def record(self, event: Event) -> None:
        match event:
            case Connected(version):
                self.server_version = version
                major = int(version.split(".")[0])
                if self.deployed_major is not None and major != self.deployed_major:
                    self.warnings.append(
                        f"PostgreSQL {major} here differs from the deployed PostgreSQL {self.deployed_major} "
                        "(POSTGRES_VERSION in database/postgres_version.py): features of either may not exist in "
                        "the other"
                    )
            case Applied(version, _):
                self.applied.append(version)
            case _:
                pass


class HumanRenderer:
    """Prints events as they happen, in the wording users know from the old run-migrations.sh."""

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool, log: RunLog | None = None) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        self.list_all_applied = True  # apply runs show only the latest: a deploy log needs no history
        self.log = log or RunLog()
        # The CLI's connection budget: its wait lines say how much is left and how to stop at once.
        self.connect_timeout_seconds: float | None = None
        self.connecting_since = time.monotonic()

    def _print(self, line: str) -> None:
        """One write per line: print() writes the newline separately, which unbuffered
        (PYTHONUNBUFFERED) output turns into a second system call per line."""
        if not self.quiet:
            self.out.write(line + "\n")
            self.out.flush()

    def start(self, mode: str) -> None:
        self.list_all_applied = mode != "apply"
        self._print("🔄 Running database migrations..." if mode == "apply" else "🔄 Reading migration status...")

    def announce(self, line: str) -> None:
        """A line of the CLI's own (where an answer comes from), not tied to a runner event."""
        self._print(line)

    def event(self, event: Event) -> None:
        match event:  # the events of every migration first: each case is a type check
            case Applying(version, in_transaction):
                suffix = "" if in_transaction else " (no transaction)"
                self._print(f"📝 Applying: {version}{suffix}")
            case Applied(version, milliseconds):
                self._print(f"✅ Applied: {version} ({milliseconds} ms)")
            case Repeating(name):
                self._print(f"🔁 Applying repeatable: {name}")
            case Repeated(name, milliseconds):
                self._print(f"✅ Applied: {name} ({milliseconds} ms)")
            case Reverting(version, in_transaction):
                suffix = "" if in_transaction else " (no transaction)"
                self._print(f"⏪ Rolling back: {version}{suffix}")
            case Reverted(version, milliseconds):
                self._print(f"✅ Rolled back: {version} ({milliseconds} ms)")
            case Connecting(target):
                self.connecting_since = time.monotonic()
                self._print(f"🔍 Testing database connection... ({target})")
            case ConnectRetry(attempt, delay, reason):
                line = f"⏳ Database not reachable yet (attempt {attempt}: {reason}); retrying in {delay}s"
                if self.connect_timeout_seconds is not None:
                    left = max(0.0, self.connect_timeout_seconds - (time.monotonic() - self.connecting_since))
                    line += f", for up to {left:.0f}s more (--connect-timeout 0 stops at once)"
                self._print(line)
            case Connected(version):
                self._print(f"✅ Database connection successful (PostgreSQL {version})")
                for warning in self.log.warnings:
                    self._print(f"⚠️  {warning}")
            case LockRetry(version, statement_line, attempt, attempts, delay, wait):
                where = f" (statement at line {statement_line})" if statement_line is not None else ""
                seen = wait.describe() if wait is not None else "who blocked it was not seen"
                self._print(
                    f"⏳ {version}{where}: lock timeout (attempt {attempt} of {attempts}), {seen}; "
                    f"rolled back, retrying in {delay:g}s"
                )
            case WaitingForLock(holder):
                self._print(f"⏳ Another migration run is in progress ({holder}); waiting for it to finish")
            case TrackingTableReady(action):
                for line in _TRACKING_LINES[action]:
                    self._print(line)
            case Planned(status):
                self.status(status)
            case Notice(message):
                self._print(f"⚠️  {shown(message)}")
            case ServerMessage(_, severity, message):
                self._print(f"   💬 {severity}: {message}")
            case SchemaDrift(changes):
                self._print("\n".join([_SCHEMA_DRIFT_BEFORE_APPLY, *(f"  • {change}" for change in changes)]))

    def status(self, status: Status) -> None:
        """Written in one go (a line per migration, a thousand pending ones included)."""
        lines = ["📊 Migration Status", "=================="]
        if not status.tracking_table_exists:
            lines.append("(no migration table yet: every migration is pending)")
        if status.applied:
            lines.append("✅ Applied Migrations:")
            listed = status.applied
            if not self.list_all_applied and len(listed) > _APPLIED_SHOWN_WHEN_APPLYING:
                listed = listed[-_APPLIED_SHOWN_WHEN_APPLYING:]
                lines.append(f"  … {len(status.applied) - len(listed)} earlier (--status lists them all)")
            for applied in listed:
                details = []
                if applied.applied_at is not None:
                    details.append(f"{applied.applied_at:%Y-%m-%d %H:%M:%S %Z}".strip())
                if applied.execution_ms is not None:
                    details.append(f"{applied.execution_ms} ms")
                if applied.baselined:
                    details.append("baselined: recorded, never run")
                if applied.applied_by:
                    details.append(f"by {applied.applied_by}")
                suffix = f" ({', '.join(details)})" if details else ""
                lines.append(f"  • {applied.version}{suffix}")
        if status.repeatable_pending:
            lines.append("🔁 Repeatable migrations to apply (new or changed):")
            lines += [f"  • {name}" for name in status.repeatable_pending]
        if status.pending:
            lines.append("⏳ Pending Migrations:")
            for pending in status.pending:
                notes = [] if pending.in_transaction else ["no transaction"]
                if pending.out_of_order:
                    notes.append("out of order")
                suffix = f" ({', '.join(notes)})" if notes else ""
                lines.append(f"  • {pending.version}{suffix}")
        elif not status.problems:  # an unusable file is still to come: it is listed below
            lines.append("✅ No pending migrations")
        for title, versions in (
            ("❌ Changed after being applied (drift):", status.drifted),
            ("❓ Applied but no file any more:", status.missing),
            ("ℹ️  Applied before checksums were kept (recorded on the next apply):", status.unverified),
            ("❌ Invalid indexes (a failed CREATE INDEX CONCURRENTLY, or one being built right now); the next "
             "apply of the migration that builds one drops and rebuilds it:", status.invalid_indexes),
            ("❌ Unusable migration files (apply refuses to run until they are fixed):",
             [shown(problem) for problem in status.problems]),
            (_SCHEMA_DRIFT_TITLE, status.schema_drift),
        ):
            if versions:
                lines.append(title)
                for version in versions:
                    lines.append(f"  • {version}")
        self._print("\n".join(lines))

    def dry_run(self, status: Status) -> None:
        if status.pending:
            self._print(f"🔍 Dry run: {len(status.pending)} migration(s) would be applied, in this order:")
            for pending in status.pending:
                mode = "one transaction" if pending.in_transaction else "no transaction"
                self._print(f"  • {pending.version}: {pending.statements} statement(s), {mode}")
        if status.repeatable_pending:
            self._print(f"🔍 Dry run: then {len(status.repeatable_pending)} repeatable migration(s), in name order: "
                        f"{', '.join(status.repeatable_pending)}")
        if status.problems:
            self._print("🔍 Dry run: an apply would refuse to start until the unusable files above are fixed")
        self._print("🔍 Dry run: nothing was changed")

    def finished(self, result: ApplyResult) -> None:
        if result.applied or result.repeated:
            self._print("🎉 All migrations applied successfully!")
        else:
            self._print("🎉 Database is up to date: nothing to apply")

    def rollback_plan(self, result: RollbackResult) -> None:
        """--rollback --dry-run: what would be undone, newest first; nothing ran."""
        if not result.plan:
            self._print("🎉 Nothing to roll back")
            return
        self._print("⏪ Would roll back, newest first (nothing was changed):")
        for step in result.plan:
            what = f"{len(step.parsed.statements)} statement(s)" if step.parsed.statements else "no-op undo"
            mode = "" if step.in_transaction else ", no transaction"
            self._print(f"  • {step.version} with {shown(str(step.down))} ({what}{mode})")

    def rolled_back(self, result: RollbackResult) -> None:
        if result.reverted:
            self._print(f"🎉 Rolled back {len(result.reverted)} migration{'s' if len(result.reverted) != 1 else ''}")
        else:
            self._print("🎉 Nothing to roll back")

    def error(self, error: MigrationError) -> None:
        print(f"❌ {shown(str(error))}", file=self.err, flush=True)


class JsonCollector:
    """Keeps what the JSON document reports besides the result: server version, warnings,
    the runner's notices and the server's messages."""

    def __init__(self, log: RunLog | None = None) -> None:
        self.log = log or RunLog()
        self.notices: list[str] = []
        self.server_messages: list[dict[str, str]] = []
        self.schema_drift: list[str] = []  # found before an apply ran its migrations
        self.lock_retries: list[dict[str, Any]] = []

    @property
    def server_version(self) -> str | None:
        return self.log.server_version

    def event(self, event: Event) -> None:
        match event:
            case Notice(message):
                self.notices.append(shown(message))
            case ServerMessage(version, severity, message):
                self.server_messages.append({"version": version, "severity": severity, "message": message})
            case SchemaDrift(changes):
                self.schema_drift = list(changes)
            case LockRetry(version, line, attempt, attempts, delay, wait):
                self.lock_retries.append({
                    "version": version, "line": line, "attempt": attempt, "attempts": attempts,
                    "delay_seconds": delay,
                    "waiting_for": None if wait is None else {"mode": wait.mode, "target": wait.target},
                    "blockers": [] if wait is None else [asdict(blocker) for blocker in wait.blockers],
                })
            case _:
                pass


def json_document(
    mode: str,
    collector: JsonCollector,
    *,
    status: Status | None = None,
    applied: list[Applied] | None = None,
    repeated: list[Repeated] | None = None,
    error: MigrationError | None = None,
    exit_code: int = 0,
    environment: str | None = None,
    function: str | None = None,
    schema_snapshot: str | None = None,
    findings: list[dict[str, Any]] | None = None,
    rollback: RollbackResult | None = None,
    dry_run: bool = False,
    baselined: list[str] | None = None,
    rehearsal: dict[str, Any] | None = None,
) -> str:
    """One JSON object describing the run; `ok` is false exactly when the exit status is not 0.
    A deployed environment's status also names the environment and the function that read it."""
    document: dict[str, Any] = {
        "mode": mode,
        "ok": error is None and exit_code == 0,
        "server_version": collector.server_version,
        "warnings": collector.log.warnings,
        "notices": collector.notices,
        "server_messages": collector.server_messages,
        "lock_retries": collector.lock_retries,
    }
    if environment is not None:
        document.update(environment=environment, function=function)
    if status is not None:
        document.update(
            applied=[
                {
                    "version": item.version,
                    "applied_at": item.applied_at.isoformat() if item.applied_at else None,
                    "execution_ms": item.execution_ms,
                    "applied_by": item.applied_by,
                    "baselined": item.baselined,
                }
                for item in status.applied
            ],
            pending=[
                {
                    "version": item.version,
                    "path": shown(str(item.path)),
                    "statements": item.statements,
                    "in_transaction": item.in_transaction,
                    "out_of_order": item.out_of_order,
                }
                for item in status.pending
            ],
            drifted=status.drifted,
            missing=status.missing,
            unverified=status.unverified,
            invalid_indexes=status.invalid_indexes,
            problems=[shown(problem) for problem in status.problems],
            schema_drift=status.schema_drift or collector.schema_drift,
            repeatable_pending=status.repeatable_pending,
            schema_recorded_at=status.schema_recorded_at.isoformat() if status.schema_recorded_at else None,
        )
    if schema_snapshot is not None or mode in ("apply", "dump-schema"):
        document["schema_snapshot"] = shown(schema_snapshot) if schema_snapshot else None
    if findings is not None:
        document["findings"] = findings
    if rehearsal is not None:
        document.update(rehearsal)
    if baselined is not None:
        document["baselined"] = baselined
    if rollback is not None:
        document["dry_run"] = dry_run
        document["rollback"] = [
            {"version": step.version, "down": shown(str(step.down)), "in_transaction": step.in_transaction,
             "statements": len(step.parsed.statements)}
            for step in rollback.plan
        ]
        document["rolled_back"] = [{"version": r.version, "execution_ms": r.milliseconds} for r in rollback.reverted]
    if applied is not None:
        document["applied_now"] = [{"version": a.version, "execution_ms": a.milliseconds} for a in applied]
    if repeated is not None:
        document["repeated_now"] = [{"name": r.name, "execution_ms": r.milliseconds} for r in repeated]
    if error is not None:
        details: dict[str, Any] = {
            "type": type(error).__name__, "message": shown(str(error)), "exit_code": error.exit_code,
        }
        if isinstance(error, MigrationFailedError):
            details.update(version=error.version, path=shown(error.path), line=error.line, sqlstate=error.sqlstate)
        from database.lint.gate import LintRefusedError

        if isinstance(error, LintRefusedError):
            details["findings"] = [finding.to_dict() for finding in error.findings]
        document["error"] = details
    return json.dumps(document, indent=2)
