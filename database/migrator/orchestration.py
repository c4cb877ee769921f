"""Status, dry-run and apply: the runner's three modes, built from discovery, parsing and the
PostgreSQL module. Used unchanged by the CLI and by the deploy-time Lambda."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .discovery import MigrationFile, repeatable_files, scan
from .errors import DriftError, InvalidMigrationError, MigrationError, OutOfTimeError, RunInterruptedError
from .events import Applied, Applying, EventSink, Notice, Planned, Repeated, Repeating, Reverted, Reverting
from .lockwait import Backoff
from .parsing import ParsedMigration, file_digest, has_statements, parse_migration, read_migration

if TYPE_CHECKING:
    import psycopg

    from .lockwait import LockRetries
    from .postgres import AppliedRow, ConnectSettings, TimeBudget


@dataclass(frozen=True)
class RunnerSettings:
    """How a run behaves; the caller (CLI, Lambda) fills it in explicitly."""

    migrations_dir: Path
    connect: ConnectSettings
    applied_by: str
    lock_wait_seconds: float = 300.0
    # A migration failing on lock_timeout (SQLSTATE 55P03) is rolled back and tried again this many
    # times (a no-transaction file: the statement), waiting as `lock_backoff` says; 0: fail at once.
    lock_retries: int = 5
    lock_backoff: Backoff = field(default_factory=Backoff)
    accept_drift: frozenset[str] = frozenset()
    # Optional time budget (a Lambda invocation's): a time.monotonic() value by which apply must
    # have returned. Statements end `deadline_margin_seconds` before it, a migration starts only
    # with at least that much statement time left, and the lock wait fits in it.
    deadline: float | None = None
    deadline_margin_seconds: float = 10.0
    # Judges the pending migrations against the database they are about to change (the lint
    # gate) before anything is written, the tracking table included; raises a MigrationError to
    # refuse the run. Called only when something is pending: a no-op run pays nothing for it.
    pre_apply_check: PreApplyCheck | None = None


PreApplyCheck = Callable[["psycopg.Connection[tuple[object, ...]]", list["LocalMigration"], EventSink], None]


def all_checks(*checks: PreApplyCheck) -> PreApplyCheck:
    """One pre-apply check running each of `checks` in order; the first to refuse stops the run."""

    def check(
        connection: psycopg.Connection[tuple[object, ...]], pending: list[LocalMigration], emit: EventSink
    ) -> None:
        for each in checks:
            each(connection, pending, emit)

    return check


@dataclass(frozen=True)
class LocalMigration:
    """A migration file read from disk. Parsing (splitting into statements) happens on demand:
    a no-op deploy over a thousand applied files only needs their digests."""

    file: MigrationFile
    raw: bytes
    text: str
    digest: str

    @property
    def version(self) -> str:
        return self.file.version

    @cached_property
    def parsed(self) -> ParsedMigration:
        """Parsed on first use, once: status, drift checks and apply share the result."""
        return parse_migration(self.file.path, self.text)


# applied_by of a migration recorded by --baseline: adopted as applied, never run.
BASELINE_PREFIX = "baseline:"


@dataclass(frozen=True)
class AppliedMigration:
    version: str
    applied_at: datetime | None
    execution_ms: int | None
    applied_by: str | None

    @property
    def baselined(self) -> bool:
        return bool(self.applied_by and self.applied_by.startswith(BASELINE_PREFIX))


@dataclass(frozen=True)
class PendingMigration:
    version: str
    path: Path
    statements: int
    in_transaction: bool
    out_of_order: bool


@dataclass
class Status:
    """Where a database stands against the migration files."""

    applied: list[AppliedMigration] = field(default_factory=list)
    pending: list[PendingMigration] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)  # applied, file's SQL changed since
    missing: list[str] = field(default_factory=list)  # applied, no file any more
    unverified: list[str] = field(default_factory=list)  # applied by the old runner: no checksum yet
    tracking_table_exists: bool = True
    problems: list[str] = field(default_factory=list)  # unusable files (status only; apply refuses them)
    invalid_indexes: list[str] = field(default_factory=list)  # left by failed concurrent builds
    schema_drift: list[str] = field(default_factory=list)  # schema changes made outside migrations
    schema_recorded_at: datetime | None = None  # when an apply last recorded the schema (None: never)
    repeatable_pending: list[str] = field(default_factory=list)  # R__*.sql new or changed since applied


@dataclass(frozen=True)
class RollbackStep:
    """One migration a rollback undoes, with its undo file read and checked."""

    version: str
    down: Path
    parsed: ParsedMigration  # no statements: a deliberate no-op undo

    @property
    def in_transaction(self) -> bool:
        return self.parsed.in_transaction


@dataclass
class RollbackResult:
    plan: list[RollbackStep]  # newest first
    reverted: list[Reverted] = field(default_factory=list)


@dataclass
class ApplyResult:
    status: Status  # before applying
    applied: list[Applied] = field(default_factory=list)
    repeated: list[Repeated] = field(default_factory=list)


def load_migrations(directory: Path) -> list[LocalMigration]:
    """Discover and read every migration once, rejecting bad names, duplicate numbers, non-UTF-8
    and statement-less files before any database work, every problem in one error."""
    migrations, problems = scan_migrations(directory)
    if problems:
        raise InvalidMigrationError("\n".join(problems))
    return migrations


def load_repeatables(directory: Path) -> list[LocalMigration]:
    """The R__*.sql files, read and parsed (each is checked by its checksum on every run); a file
    that cannot be one (not UTF-8, no statements, -- migrate:no-transaction) is refused naming it."""
    repeatables = []
    for path in repeatable_files(directory):
        raw, text = read_migration(path)
        if not has_statements(path, text):
            raise InvalidMigrationError(f"{path}: contains no SQL statements (empty or only comments)")
        migration = LocalMigration(MigrationFile(-1, path.stem, path), raw, text, file_digest(raw))
        if not migration.parsed.in_transaction:
            raise InvalidMigrationError(
                f"{path}: a repeatable migration runs in one transaction with its record; remove the "
                "-- migrate:no-transaction marker (build concurrent indexes in a numbered migration)"
            )
        repeatables.append(migration)
    return repeatables


def _repeatable_pending(repeatables: list[LocalMigration], applied: dict[str, str]) -> list[LocalMigration]:
    """New repeatables, and those whose SQL changed since they were applied (comments do not count)."""
    return [r for r in repeatables if applied.get(r.version) != r.parsed.checksum]


def scan_migrations(directory: Path) -> tuple[list[LocalMigration], list[str]]:
    """The usable migrations, and a line per unusable file (bad name, duplicate number,
    non-UTF-8, no statements); a missing directory is still an error."""
    files, problems = scan(directory)
    migrations = []
    for file in files:
        try:
            raw, text = read_migration(file.path)
            if not has_statements(file.path, text):
                raise InvalidMigrationError(f"{file.path}: contains no SQL statements (empty or only comments)")
        except InvalidMigrationError as error:
            problems.append(str(error))
            continue
        migrations.append(LocalMigration(file, raw, text, file_digest(raw)))
    return migrations, problems


def compute_status(
    local: list[LocalMigration],
    rows: dict[str, AppliedRow],
    *,
    tracking_table_exists: bool = True,
    problems: list[str] | None = None,
) -> Status:
    """Compare files with tracking rows. Every pending file is parsed here, so a broken pending
    file stops the run before anything is applied; with `problems` (a list to extend, for
    status) a file that cannot be parsed is reported there instead."""
    status = Status(tracking_table_exists=tracking_table_exists)
    if problems is not None:
        status.problems = problems
    local_versions = {migration.version for migration in local}
    highest_applied = max((m.file.number for m in local if m.version in rows), default=-1)
    for migration in local:
        row = rows.get(migration.version)
        needs_parsing = row is None or (row.file_digest != migration.digest and row.checksum is not None)
        if problems is not None and needs_parsing:
            try:
                migration.parsed  # noqa: B018 (parsing now turns a broken file into a problem line)
            except InvalidMigrationError as error:
                problems.append(str(error))
                if row is not None:  # an applied file edited into something unparsable: drift
                    status.applied.append(
                        AppliedMigration(row.version, row.applied_at, row.execution_ms, row.applied_by)
                    )
                    status.drifted.append(migration.version)
                continue
        if row is None:
            parsed = migration.parsed
            status.pending.append(
                PendingMigration(
                    migration.version,
                    migration.file.path,
                    len(parsed.statements),
                    parsed.in_transaction,
                    migration.file.number < highest_applied,
                )
            )
            continue
        status.applied.append(AppliedMigration(row.version, row.applied_at, row.execution_ms, row.applied_by))
        if row.file_digest == migration.digest:
            continue
        if row.checksum is None:
            status.unverified.append(migration.version)
        elif migration.parsed.checksum != row.checksum:
            status.drifted.append(migration.version)
    status.missing = sorted(version for version in rows if version not in local_versions)
    return status


def read_status(settings: RunnerSettings, emit: EventSink) -> Status:
    """Status without changing anything: no tracking table is created, no lock is taken."""
    from . import postgres, schema_state

    local, problems = scan_migrations(settings.migrations_dir)
    with database_session(settings, emit) as connection:
        exists = postgres.tracking_table_exists(connection)
        rows = postgres.applied_rows(connection) if exists else {}
        invalid = postgres.invalid_indexes(connection)
        drift = schema_state.read_drift(connection) if exists else None
        try:
            repeatables = [r.version for r in _repeatable_pending(
                load_repeatables(settings.migrations_dir), postgres.repeatable_checksums(connection)
            )]
        except InvalidMigrationError as error:
            problems.append(str(error))
            repeatables = []
    status = compute_status(local, rows, tracking_table_exists=exists, problems=problems)
    status.repeatable_pending = repeatables
    status.invalid_indexes = invalid
    if drift is not None:
        status.schema_drift, status.schema_recorded_at = drift.changes, drift.recorded_at
    return status


def apply(settings: RunnerSettings, emit: EventSink) -> ApplyResult:
    """Apply every pending migration in order, each in its own transaction with its tracking
    row, under the runner lock. Stops at the first failure; earlier ones stay applied. The schema
    is recorded for drift checks after every run that applied something, a failed one included."""
    from . import lockwait, postgres, schema_state

    local = load_migrations(settings.migrations_dir)
    repeatables = load_repeatables(settings.migrations_dir)
    by_version = {migration.version: migration for migration in local}
    with database_session(settings, emit) as connection, postgres.runner_lock(connection, _lock_wait(settings), emit):
        exists = postgres.tracking_table_exists(connection)
        rows = postgres.applied_rows(connection) if exists else {}
        status = compute_status(local, rows)  # parses every pending file: a bad one stops us here
        repeat = _repeatable_pending(repeatables, postgres.repeatable_checksums(connection)) if repeatables else []
        status.repeatable_pending = [r.version for r in repeat]
        if status.pending and settings.pre_apply_check is not None:
            settings.pre_apply_check(connection, [by_version[p.version] for p in status.pending], emit)
        postgres.ensure_tracking_table(connection, emit)
        result = ApplyResult(status)
        emit(Planned(status))
        _check_drift(status, settings.accept_drift)
        _refresh_checksums(connection, status, by_version, rows, emit)
        budget = None
        if settings.deadline is not None:
            budget = postgres.time_budget(connection, settings.deadline, settings.deadline_margin_seconds)
        if status.pending or repeat:
            postgres.defer_commit_flush(connection)
            try:
                with lockwait.lock_retries(
                    connection, settings.connect.conninfo, settings.lock_retries, settings.lock_backoff, budget, emit
                ) as locks:
                    _apply_pending(connection, status, by_version, settings, budget, locks, result, emit)
                    _apply_repeatables(connection, repeat, settings, budget, locks, result, emit)
            except BaseException:
                with suppress(Exception):  # the failure is the news; the WAL writer flushes within a second
                    postgres.flush_commits(connection, _last_applied(result))
                    if result.applied or result.repeated:
                        schema_state.record(connection, settings.applied_by)
                raise
            postgres.flush_commits(connection, _last_applied(result))
            schema_state.record(connection, settings.applied_by)
    return result


def rollback(
    settings: RunnerSettings, emit: EventSink, *, count: int | None = None, to: str | None = None,
    dry_run: bool = False,
) -> RollbackResult:
    """Undo the newest `count` applied migrations, or every one applied after version `to` (which
    stays), newest first, each undo in its own transaction with the deletion of its tracking row,
    under the runner lock. Every undo file is read and checked before anything runs; with
    `dry_run`, only that. Afterwards the schema is recorded, so that drift checks stay quiet."""
    from . import lockwait, postgres, schema_state

    local = load_migrations(settings.migrations_dir)
    by_version = {migration.version: migration for migration in local}
    with database_session(settings, emit) as connection, postgres.runner_lock(connection, _lock_wait(settings), emit):
        rows = postgres.applied_rows(connection) if postgres.tracking_table_exists(connection) else {}
        newest_first = sorted(rows, key=lambda version: (_number_of(version), version), reverse=True)
        if count is not None:
            if count > len(newest_first):
                are = "s are" if len(newest_first) != 1 else " is"
                raise InvalidMigrationError(
                    f"--rollback {count}: only {len(newest_first)} migration{are} applied; nothing was undone"
                )
            targets = newest_first[:count]
        else:
            if to not in rows and to not in by_version:
                raise InvalidMigrationError(f"--rollback-to {to}: no migration has that version; nothing was undone")
            targets = [version for version in newest_first if _number_of(version) > _number_of(str(to))]
        result = RollbackResult([_undo_step(version, by_version.get(version), settings.migrations_dir)
                                 for version in targets])
        if dry_run or not result.plan:
            return result
        postgres.defer_commit_flush(connection)
        try:
            with lockwait.lock_retries(
                connection, settings.connect.conninfo, settings.lock_retries, settings.lock_backoff, None, emit
            ) as locks:
                for step in result.plan:
                    emit(Reverting(step.version, step.in_transaction))
                    try:
                        elapsed = postgres.revert_migration(
                            connection, version=step.version, path=str(step.down), down=step.parsed, locks=locks,
                            emit=emit,
                        )
                    except KeyboardInterrupt:
                        raise RunInterruptedError(f"interrupted: the undo of {step.version} was rolled back "
                                                  "(a no-transaction undo keeps the statements it finished)") from None
                    event = Reverted(step.version, elapsed)
                    result.reverted.append(event)
                    emit(event)
        finally:
            with suppress(Exception):  # a failure is the news
                postgres.flush_commits(connection, None)
                if result.reverted:
                    schema_state.record(connection, settings.applied_by)
    return result


def baseline(settings: RunnerSettings, emit: EventSink, version: str, *, only_untracked: bool = False) -> list[str]:
    """Adopt a database whose schema exists without our tracking (restored from a dump, made by
    hand or by the old setup scripts): record every migration up to `version` that has no row as
    applied without running it, marked baselined; returns those versions. Refused when `version`
    is no migration file, or when the database already has tracking rows past it. The schema as
    adopted becomes the reference for drift checks.

    With `only_untracked` (a deploy's standing baseline setting), a database that records any
    migration (the old runner's table included) is left alone, checked under the runner lock: the
    answer is then empty (otherwise it holds `version` at least)."""
    from . import postgres, schema_state

    local = load_migrations(settings.migrations_dir)
    by_version = {migration.version: migration for migration in local}
    if version not in by_version:
        raise InvalidMigrationError(
            f"--baseline {version}: no migration in {settings.migrations_dir} has that version; nothing was recorded"
        )
    number = by_version[version].file.number
    with database_session(settings, emit) as connection, postgres.runner_lock(connection, _lock_wait(settings), emit):
        rows = postgres.applied_rows(connection) if postgres.tracking_table_exists(connection) else {}
        if only_untracked and rows:
            return []
        later = sorted((v for v in rows if _number_of(v) > number), key=_number_of)
        if later:
            raise InvalidMigrationError(
                f"--baseline {version}: the database already has migrations after it ({name_versions(later)}); "
                "a baseline adopts a database whose recorded history ends before it. Nothing was recorded"
            )
        postgres.ensure_tracking_table(connection, emit)
        adopted = [m for m in local if m.file.number <= number and m.version not in rows]
        with connection.transaction():
            for migration in adopted:
                postgres.record_baseline(
                    connection, migration.version, migration.parsed.checksum, migration.digest,
                    f"{BASELINE_PREFIX}{settings.applied_by}",
                )
        schema_state.record(connection, settings.applied_by)
    return [migration.version for migration in adopted]


def _undo_step(version: str, migration: LocalMigration | None, directory: Path) -> RollbackStep:
    """The checked undo of an applied migration, or why it cannot be undone."""
    if migration is None:
        raise InvalidMigrationError(
            f"{version} cannot be undone: its file is not in {directory} (nor its undo); nothing was undone"
        )
    down = migration.file.down
    if down is None:
        raise InvalidMigrationError(
            f"{version} cannot be undone: no {version}.down.sql beside {migration.file.path}; write one (only "
            "comments: a deliberate no-op undo) or roll back fewer migrations. Nothing was undone"
        )
    raw, text = read_migration(down)
    if not has_statements(down, text):
        return RollbackStep(version, down, ParsedMigration((), True, file_digest(raw)))
    return RollbackStep(version, down, parse_migration(down, text))


def _number_of(version: str) -> int:
    prefix = version.split("_", 1)[0]
    return int(prefix) if prefix.isdigit() else -1


def _apply_pending(
    connection: psycopg.Connection[tuple[object, ...]],
    status: Status,
    by_version: dict[str, LocalMigration],
    settings: RunnerSettings,
    budget: TimeBudget | None,
    locks: LockRetries,
    result: ApplyResult,
    emit: EventSink,
) -> None:
    """Apply the pending migrations in order, recording each in `result` as it commits."""
    from . import postgres

    for pending in status.pending:
        migration = by_version[pending.version]
        if budget is not None:
            _check_time_left(budget, pending.version, len(result.applied), len(status.pending))
        if pending.out_of_order:
            emit(Notice(f"{pending.version} is older than an applied migration: applying it out of order"))
        emit(Applying(pending.version, pending.in_transaction))
        try:
            elapsed = postgres.apply_migration(
                connection,
                version=pending.version,
                path=str(pending.path),
                migration=migration.parsed,
                digest=migration.digest,
                applied_by=settings.applied_by,
                locks=locks,
                emit=emit,
                budget=budget,
            )
        except KeyboardInterrupt:
            raise RunInterruptedError(_interrupted_during(pending, result)) from None
        event = Applied(pending.version, elapsed)
        result.applied.append(event)
        emit(event)


def _apply_repeatables(
    connection: psycopg.Connection[tuple[object, ...]],
    repeat: list[LocalMigration],
    settings: RunnerSettings,
    budget: TimeBudget | None,
    locks: LockRetries,
    result: ApplyResult,
    emit: EventSink,
) -> None:
    """After the numbered migrations: the new or changed repeatables, in name order, each in its
    own transaction with its record."""
    from . import postgres

    for repeatable in repeat:
        if budget is not None:
            _check_time_left(budget, repeatable.version, len(result.applied), len(result.status.pending))
        emit(Repeating(repeatable.version))
        elapsed = postgres.apply_repeatable(
            connection, name=repeatable.version, path=str(repeatable.file.path), migration=repeatable.parsed,
            applied_by=settings.applied_by, locks=locks, emit=emit, budget=budget,
        )
        event = Repeated(repeatable.version, elapsed)
        result.repeated.append(event)
        emit(event)


def _last_applied(result: ApplyResult) -> str | None:
    return result.applied[-1].version if result.applied else None


def _lock_wait(settings: RunnerSettings) -> float:
    """The configured lock wait, shortened to fit the time budget (never 0: that waits forever)."""
    if settings.deadline is None:
        return settings.lock_wait_seconds
    left = settings.deadline - time.monotonic() - 2 * settings.deadline_margin_seconds
    return max(0.001, min(settings.lock_wait_seconds, left))


def _check_time_left(budget: TimeBudget, version: str, applied: int, total: int) -> None:
    """Stop between migrations, cleanly, when less than the margin of statement time is left."""
    left = budget.seconds_left()
    if left < budget.margin_seconds:
        raise OutOfTimeError(
            f"stopped before {version} with {max(0.0, left + budget.margin_seconds):.0f}s of this run left "
            f"(a migration starts only with {2 * budget.margin_seconds:g}s left); {applied} of {total} applied; "
            "deploy again to continue",
            applied=applied,
            total=total,
        )


def _interrupted_during(pending: PendingMigration, result: ApplyResult) -> str:
    """One line: what the interrupted migration left, and what this run applied before it."""
    if pending.in_transaction:
        text = f"interrupted: {pending.version} was rolled back; no later migration ran"
    else:
        text = (
            f"interrupted: {pending.version} (no transaction) is not recorded; statements it finished stay, "
            "and the next run starts it again"
        )
    if result.applied:
        text += f" ({name_versions([applied.version for applied in result.applied])} applied before it stay applied)"
    return text


def name_versions(versions: list[str], shown: int = 3) -> str:
    """Versions for a one-line message: all of a few, the first and last of many (with the count)."""
    if len(versions) <= shown + 1:
        return ", ".join(versions)
    return f"{len(versions)} migrations, {', '.join(versions[:shown])} ... {versions[-1]}"


def _check_drift(status: Status, accepted: frozenset[str]) -> None:
    refused = [version for version in status.drifted if version not in accepted]
    if refused:
        names = ", ".join(refused)
        raise DriftError(
            f"applied migration(s) changed since they ran: {names}. Applied migrations must not be "
            "edited: put the change in a new migration and restore the file (git checkout), or, if "
            f"the edit is intended, accept it with --accept-drift {refused[0]}. Nothing was applied."
        )


def _refresh_checksums(
    connection: psycopg.Connection[tuple[object, ...]],
    status: Status,
    by_version: dict[str, LocalMigration],
    rows: dict[str, AppliedRow],
    emit: EventSink,
) -> None:
    """Record checksums the tracking table lacks or that an accepted/cosmetic edit changed, so
    the next run takes the fast path and later edits are caught."""
    from . import postgres

    for version in status.unverified:
        emit(Notice(f"{version}: recorded its checksum (applied before checksums were kept)"))
    for version in status.drifted:
        emit(Notice(f"{version}: accepted the edited file as applied (--accept-drift)"))
    for applied in status.applied:
        migration = by_version.get(applied.version)
        if migration is None or rows[applied.version].file_digest == migration.digest:
            continue
        postgres.record_checksum(connection, applied.version, migration.parsed.checksum, migration.digest)


@contextmanager
def database_session(settings: RunnerSettings, emit: EventSink) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection for one run. Database errors outside a migration's own SQL (no right to
    create the tracking table, the connection dropping while waiting...) become MigrationErrors
    with the server's message, scrubbed of the password."""
    import psycopg

    from . import postgres
    from .redaction import password_of, scrub, visible_parts

    connection = postgres.connect(settings.connect, emit)
    try:
        yield connection
    except psycopg.Error as error:
        conninfo = settings.connect.conninfo
        message = scrub(str(error).strip(), password_of(conninfo), shown=visible_parts(conninfo))
        raise MigrationError(f"database error (SQLSTATE {error.sqlstate or 'none'}): {message}") from None
    finally:
        connection.close()
