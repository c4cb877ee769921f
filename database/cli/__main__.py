"""run-migrations: apply, inspect or plan the database/migrations files against a database.

Exit status: 0 success; 1 a migration failed, applied files or the schema drifted, or another database error;
2 bad input (flags, file names, file contents); 3 database unreachable; 4 another run held the
lock too long; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import gc
import getpass
import math
import os
import re
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from database.cli.environments import (
    DEFAULT_MIGRATIONS_DIR,
    DEPLOYED_ENVIRONMENTS,
    UsageError,
    resolve_target,
    shown,
)
from database.cli.render import HumanRenderer, JsonCollector, RunLog, json_document
from database.lint import DEFAULT_ERROR_ROWS
from database.migrator.errors import InvalidMigrationError, MigrationError, RunInterruptedError
from database.migrator.events import Connected, Event
from database.migrator.orchestration import name_versions

if TYPE_CHECKING:
    from collections.abc import Callable

    from database.migrator.orchestration import RunnerSettings, Status

PROGRAM = "run-migrations.sh"


class _Parser(argparse.ArgumentParser):
    """Bad flags raise UsageError, so that they are reported like every other error (one JSON
    document under --json) instead of argparse printing and exiting on its own."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} ({PROGRAM} --help lists every flag)")


def _text(value: str) -> str:
    """A value that must not be empty: an unset shell variable ("$X") must not change the meaning."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty value (an unset shell variable?)")
    return value


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 0 or more seconds")
    return seconds


def _positive(value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number, 1 or more")
    return int(value)


def _count(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number, 0 or more")
    return int(value)


# PostgreSQL's syntax for a time setting: a number and an optional unit (milliseconds without one).
_DURATION = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?)\s*(?P<unit>us|ms|s|min|h|d)?\s*$")
_UNIT_MS = {"us": 0.001, "ms": 1, None: 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_TIMEOUT_MS = 2_147_483_647  # PostgreSQL keeps these settings as an int of milliseconds


def _duration(value: str) -> str:
    """Checked here, before any connection, rather than by the server halfway through a run."""
    match = _DURATION.match(value)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a PostgreSQL duration such as 5s, 500ms, 10min, 1h or 0 (no limit)"
        )
    if float(match["number"]) * _UNIT_MS[match["unit"]] > _MAX_TIMEOUT_MS:
        raise argparse.ArgumentTypeError(f"{value!r}: at most {_MAX_TIMEOUT_MS} ms (about 24 days)")
    return value.strip()


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog=PROGRAM,
        description="Apply pending database/migrations/NNN_description.sql files, in order, each in "
        "its own transaction. Same runner locally, in CI and on every deploy.",
    )
    target = parser.add_argument_group(
        "database (one of these, else DATABASE_URL, else libpq's PGHOST/PGDATABASE/... variables)"
    )
    target.add_argument("--environment", metavar="NAME", type=_text,
                        help="local: the project-local PostgreSQL (scripts/local-db.sh); testing or production "
                        "with --status/--dry-run/--lint: the deployed database, read through its migration function "
                        "(needs AWS credentials)")
    target.add_argument("--db-uri", metavar="URI", type=_text,
                        help="postgresql://user:pass@host:5432/db?sslmode=require")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="show applied, pending, drifted and missing")
    mode.add_argument("--dry-run", action="store_true", help="show what would be applied; change nothing")
    mode.add_argument("--new", metavar="DESCRIPTION", type=_text,
                      help="create the next numbered migration file")
    mode.add_argument("--dump-schema", metavar="FILE", nargs="?", const="", type=str,
                      help="write the database's schema snapshot (pg_dump --schema-only, normalized) to FILE, "
                      "- for stdout; default database/schema.sql. An apply to --environment local rewrites it")
    mode.add_argument("--baseline", metavar="VERSION", type=_text,
                      help="adopt a database whose schema exists without this runner's tracking (restored, made by "
                      "hand or by the old setup scripts): record every migration up to VERSION as applied without "
                      "running it, marked baselined")
    mode.add_argument("--rehearse", action="store_true",
                      help="apply the pending migrations to a copy of the --environment local or --db-uri database "
                      "(CREATE DATABASE ... TEMPLATE), report durations, locks, rewrites and indexes built against "
                      "the budgets, and drop the copy. Exit 1 when a budget is exceeded or a migration fails")
    mode.add_argument("--lint", action="store_true",
                      help="lint the migrations (squawk's rules, database/lint/squawk.toml): without a database every "
                      "file; with --environment/--db-uri the pending ones, judged by that database's table sizes. "
                      "Writes nothing. Exit 1 while an unacknowledged error stands")
    undo = parser.add_mutually_exclusive_group()
    undo.add_argument("--rollback", metavar="N", type=_positive,
                      help="undo the newest N applied migrations with their NNN_description.down.sql files, newest "
                      "first (with --dry-run: the plan only). Local and --db-uri databases: deploys are forward-only")
    undo.add_argument("--rollback-to", metavar="VERSION", type=_text,
                      help="undo every migration applied after VERSION (VERSION stays), as --rollback does")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON document")
    parser.add_argument(
        "--migrations-dir", metavar="DIR", type=_text, default=None,
        help="default: database/migrations",
    )
    parser.add_argument(
        "--accept-drift", metavar="VERSION", action="append", type=_text, default=[],
        help="accept that an applied migration's file was edited (repeatable)",
    )
    parser.add_argument("--lock-wait", metavar="SECONDS", type=_seconds,
                        default=300.0, help="how long to wait for another run's lock (default 300)")
    parser.add_argument("--lock-timeout", metavar="DURATION", type=_duration, default="5s",
                        help="PostgreSQL lock_timeout for migration SQL (default 5s)")
    parser.add_argument("--lock-retries", metavar="N", type=_count, default=5,
                        help="a migration failing on --lock-timeout is rolled back and tried again up to N times, "
                        "with growing waits (default 5; 0: fail at once)")
    parser.add_argument("--statement-timeout", metavar="DURATION", type=_duration,
                        default="10min", help="PostgreSQL statement_timeout for migration SQL (default 10min)")
    parser.add_argument("--lint-error-rows", metavar="N", type=_count, default=DEFAULT_ERROR_ROWS,
                        help="a locking or rewriting statement on a table with at least N estimated rows is a lint "
                        f"error, below it a warning (default {DEFAULT_ERROR_ROWS:,}); every apply checks it first")
    parser.add_argument("--max-lock", metavar="SECONDS", type=_seconds, default=5.0,
                        help="--rehearse: an ACCESS EXCLUSIVE lock held longer is over budget (default 5)")
    parser.add_argument("--max-duration", metavar="SECONDS", type=_seconds, default=600.0,
                        help="--rehearse: a migration running longer is over budget (default 600)")
    parser.add_argument("--connect-timeout", metavar="SECONDS", type=_seconds,
                        help="keep retrying the connection this long (default 10 for this machine: loopback "
                        "or a Unix socket; 90 otherwise); 0: one attempt")
    arguments = parser.parse_args(argv)
    undoing = "--rollback" if arguments.rollback is not None else "--rollback-to" if arguments.rollback_to else None
    if arguments.rehearse and arguments.environment in DEPLOYED_ENVIRONMENTS and arguments.db_uri is None:
        raise UsageError(
            f"--rehearse --environment {arguments.environment}: a deployed environment is rehearsed on a clone of its "
            f"cluster: scripts/rehearse.sh {arguments.environment}"
        )
    if arguments.baseline and arguments.environment in DEPLOYED_ENVIRONMENTS and arguments.db_uri is None:
        raise UsageError(
            f"--baseline --environment {arguments.environment}: a deployed database changes only through a deploy; "
            "baseline it with --db-uri from a machine inside its VPC"
        )
    if undoing:
        given = (("--status", arguments.status), ("--new", arguments.new is not None), ("--lint", arguments.lint),
                 ("--dump-schema", arguments.dump_schema is not None))
        others = [flag for flag, value in given if value]
        if others:
            raise UsageError(f"{undoing} cannot be combined with {', '.join(others)} (--dry-run shows its plan)")
        if arguments.environment in DEPLOYED_ENVIRONMENTS and arguments.db_uri is None:
            raise UsageError(
                f"{undoing} --environment {arguments.environment}: deploys are forward-only and never roll back. "
                "Undo a change with a new migration (scripts/run-migrations.sh --new \"undo ...\"), then deploy it"
            )
    if arguments.new is not None:
        ignored = [flag for flag, value in (("--db-uri", arguments.db_uri), ("--environment", arguments.environment),
                                            ("--accept-drift", arguments.accept_drift)) if value]
        if ignored:
            raise UsageError(f"--new only creates a file and touches no database: drop {', '.join(ignored)}")
    return arguments


def _mode_of(argv: list[str]) -> str:
    """The mode the command line asks for, read before parsing so that even a parse error is
    reported in the right JSON document."""
    for flag, mode in (("--rollback", "rollback"), ("--rollback-to", "rollback"),
                       ("--status", "status"), ("--dry-run", "dry-run"), ("--new", "new"),
                       ("--dump-schema", "dump-schema"), ("--lint", "lint"), ("--baseline", "baseline"),
                       ("--rehearse", "rehearse")):
        if any(argument == flag or argument.startswith(f"{flag}=") for argument in argv):
            return mode
    return "apply"


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --json | head` ends quietly
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    mode = _mode_of(argv)
    log = RunLog()
    renderer = HumanRenderer(sys.stdout, sys.stderr, quiet=as_json, log=log)
    collector = JsonCollector(log)
    try:
        arguments = parse_arguments(argv)
        if arguments.new is not None:
            return create_migration(_migrations_dir(arguments), arguments.new, as_json=as_json)
        return run(arguments, mode, renderer, collector)
    except KeyboardInterrupt:
        error: MigrationError = RunInterruptedError(_interrupted_outside_a_migration(mode, log))
    except MigrationError as raised:
        error = raised
    except Exception as unexpected:  # a bug: JSON readers still get one document, people the traceback
        if not as_json:
            raise
        import traceback

        from database.migrator.redaction import scrub

        print(scrub("".join(traceback.format_exception(unexpected))), file=sys.stderr, end="")
        error = MigrationError(scrub(f"internal error: {type(unexpected).__name__}: {unexpected}"))
    if as_json:
        print(json_document(mode, collector, error=error))
    else:
        renderer.error(error)
    return error.exit_code


def _interrupted_outside_a_migration(mode: str, log: RunLog) -> str:
    if mode != "apply":
        return "interrupted; nothing was changed"
    if log.applied:
        return f"interrupted between migrations: {name_versions(log.applied)} stay applied; nothing else was changed"
    return "interrupted before any migration ran; nothing was changed"


def _migrations_dir(arguments: argparse.Namespace) -> Path:
    return DEFAULT_MIGRATIONS_DIR if arguments.migrations_dir is None else Path(arguments.migrations_dir)


def _check_accepted_versions(versions: list[str], directory: Path) -> None:
    """A mistyped --accept-drift would otherwise be ignored silently."""
    if not versions:
        return
    from database.migrator.discovery import discover

    known = {migration.version for migration in discover(directory)}
    unknown = [version for version in versions if version not in known]
    if unknown:
        raise UsageError(f"--accept-drift {unknown[0]}: no migration in {shown(str(directory))} has that version")


def _user() -> str:
    """Who runs the CLI, for the tracking table; containers may run as a uid with no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def run(arguments: argparse.Namespace, mode: str, renderer: HumanRenderer, collector: JsonCollector) -> int:
    if mode == "dump-schema":
        return run_dump_schema(arguments, renderer, collector)
    if mode == "lint" and arguments.environment is None and arguments.db_uri is None:
        return run_lint_files(arguments, collector)
    if arguments.environment in DEPLOYED_ENVIRONMENTS and mode != "apply" and arguments.db_uri is None:
        return run_deployed(arguments, mode, renderer, collector)
    target = resolve_target(arguments.environment, arguments.db_uri)
    migrations_dir = _migrations_dir(arguments)
    _check_accepted_versions(arguments.accept_drift, migrations_dir)

    from database.cli.lint import cli_lint_source
    from database.lint.gate import lint_gate
    from database.migrator import orchestration
    from database.migrator.postgres import ConnectSettings
    from database.migrator.schema_state import drift_check
    from database.postgres_version import POSTGRES_MAJOR_VERSION

    connect_timeout = target.connect_timeout_seconds if arguments.connect_timeout is None else arguments.connect_timeout
    renderer.connect_timeout_seconds = connect_timeout
    settings = orchestration.RunnerSettings(
        migrations_dir=migrations_dir,
        connect=ConnectSettings(
            conninfo=target.conninfo,
            total_timeout_seconds=connect_timeout,
            lock_timeout=arguments.lock_timeout,
            statement_timeout=arguments.statement_timeout,
        ),
        applied_by=f"cli:{_user()}@{socket.gethostname()}",
        lock_wait_seconds=arguments.lock_wait,
        lock_retries=arguments.lock_retries,
        accept_drift=frozenset(arguments.accept_drift),
        pre_apply_check=orchestration.all_checks(
            drift_check(refuse=False), lint_gate(cli_lint_source, arguments.lint_error_rows)
        ),
    )
    renderer.log.deployed_major = POSTGRES_MAJOR_VERSION
    sink = collector.event if arguments.json else renderer.event

    def emit(event: Event) -> None:
        renderer.log.record(event)
        sink(event)

    if mode == "rollback":
        return run_rollback(arguments, settings, renderer, collector, emit)
    if mode == "baseline":
        return run_baseline(arguments, settings, renderer, collector, emit)
    if mode == "rehearse":
        return run_rehearsal(arguments, settings, renderer, collector, emit)
    if mode == "lint":
        from database.migrator.redaction import redact_conninfo

        where = arguments.environment or redact_conninfo(target.conninfo) if target.conninfo else "(libpq environment)"
        return run_lint_pending(arguments, settings, where, collector, emit)
    renderer.start(mode)
    if mode == "apply":
        result = orchestration.apply(settings, emit)
        snapshot, snapshot_warning = None, None
        if arguments.environment == "local":  # as every deploy does: tables the run created are covered
            from database.cli.environments import ensure_local_roles, local_roles_summary

            ensure_local_roles(target.conninfo)
            snapshot, snapshot_warning = _refresh_local_snapshot(
                target.conninfo, migrations_dir, bool(result.applied or result.repeated)
            )
        if snapshot_warning:
            renderer.log.warnings.append(snapshot_warning)
        if arguments.json:
            print(json_document(mode, collector, status=result.status, applied=result.applied,
                                repeated=result.repeated, schema_snapshot=snapshot))
        else:
            renderer.finished(result)
            if snapshot:
                renderer.announce(f"📸 Schema snapshot updated: {shown(snapshot)}")
            if snapshot_warning:
                renderer.announce(f"⚠️  {snapshot_warning}")
            if arguments.environment == "local":
                renderer.announce(local_roles_summary(target.conninfo))
        return 0
    status = orchestration.read_status(settings, emit)
    exit_code = status_exit_code(status, settings.accept_drift)
    if arguments.json:
        print(json_document(mode, collector, status=status, exit_code=exit_code))
    else:
        renderer.status(status)
        if mode == "dry-run":
            renderer.dry_run(status)
    return exit_code


def run_rehearsal(
    arguments: argparse.Namespace,
    settings: RunnerSettings,
    renderer: HumanRenderer,
    collector: JsonCollector,
    emit: Callable[[Event], None],
) -> int:
    """--rehearse: the pending migrations on a copy, measured against the budgets."""
    from database.cli.rehearse import exit_code, print_report
    from database.rehearsal.local import rehearse
    from database.rehearsal.measure import Budgets

    budgets = Budgets(max_lock_seconds=arguments.max_lock, max_duration_seconds=arguments.max_duration)
    renderer.start("apply")
    rehearsal = rehearse(settings, budgets, arguments.lint_error_rows, emit)
    code = exit_code(rehearsal)
    if arguments.json:
        document = rehearsal.document(budgets)
        del document["failure"]  # the document's own "error" says it
        print(json_document("rehearse", collector, exit_code=code, error=rehearsal.failure, rehearsal=document))
    else:
        print_report(rehearsal, budgets, sys.stdout)
    return code


def run_baseline(
    arguments: argparse.Namespace,
    settings: RunnerSettings,
    renderer: HumanRenderer,
    collector: JsonCollector,
    emit: Callable[[Event], None],
) -> int:
    """--baseline VERSION: the migrations up to VERSION recorded as applied, without running."""
    from database.migrator.orchestration import baseline

    renderer.start("apply")
    adopted = baseline(settings, emit, arguments.baseline)
    if arguments.json:
        print(json_document("baseline", collector, baselined=adopted))
    elif adopted:
        renderer.announce(f"📌 Baselined {name_versions(adopted)}: recorded as applied, not run. "
                          "Later migrations apply as usual")
    else:
        renderer.announce(f"📌 Nothing to baseline: every migration up to {arguments.baseline} is already recorded")
    return 0


def run_rollback(
    arguments: argparse.Namespace,
    settings: RunnerSettings,
    renderer: HumanRenderer,
    collector: JsonCollector,
    emit: Callable[[Event], None],
) -> int:
    """--rollback N / --rollback-to VERSION, or their plan with --dry-run."""
    from database.migrator.orchestration import rollback

    renderer.start("apply")
    result = rollback(settings, emit, count=arguments.rollback, to=arguments.rollback_to, dry_run=arguments.dry_run)
    snapshot, warning = None, None
    if arguments.environment == "local" and result.reverted:
        snapshot, warning = _refresh_local_snapshot(settings.connect.conninfo, settings.migrations_dir, True)
    if warning:
        renderer.log.warnings.append(warning)
    if arguments.json:
        print(json_document("rollback", collector, rollback=result, dry_run=arguments.dry_run,
                            schema_snapshot=snapshot))
        return 0
    if arguments.dry_run:
        renderer.rollback_plan(result)
    else:
        renderer.rolled_back(result)
    if snapshot:
        renderer.announce(f"📸 Schema snapshot updated: {shown(snapshot)}")
    if warning:
        renderer.announce(f"⚠️  {warning}")
    return 0


def run_lint_files(arguments: argparse.Namespace, collector: JsonCollector) -> int:
    """--lint with no database: every migration file, file-only severity."""
    from database.cli import lint

    directory = _migrations_dir(arguments)
    findings = lint.lint_files(directory)
    code = lint.exit_code(findings)
    if arguments.json:
        print(json_document("lint", collector, exit_code=code, findings=[f.to_dict() for f in findings]))
    else:
        lint.print_findings(findings, sys.stdout, scope=f"every file in {shown(str(directory))} (no database: "
                            "name one with --environment or --db-uri for severity by its table sizes)")
    return code


def run_lint_pending(
    arguments: argparse.Namespace,
    settings: RunnerSettings,
    target: str,
    collector: JsonCollector,
    emit: Callable[[Event], None],
) -> int:
    """--lint against a database: the files pending there, judged by its table sizes."""
    from database.cli import lint
    from database.lint.gate import lint_pending

    findings, pending = lint_pending(settings, lint.cli_lint_source, arguments.lint_error_rows, emit)
    code = lint.exit_code(findings)
    if arguments.json:
        print(json_document("lint", collector, exit_code=code, findings=[f.to_dict() for f in findings]))
    else:
        lint.print_findings(findings, sys.stdout, scope=f"{pending} pending migration{'s' if pending != 1 else ''} "
                            f"on {target} (errors from {arguments.lint_error_rows:,} estimated rows)")
    return code


def _refresh_local_snapshot(conninfo: str, migrations_dir: Path, applied: bool) -> tuple[str | None, str | None]:
    """After an apply to the local database: rewrite the schema snapshot when migrations were applied
    (or it does not exist yet). Returns (the path written, or None; a warning, or None): the apply
    itself succeeded, so a snapshot that cannot be made is a warning, not a failure."""
    from database.cli.snapshot import SnapshotError, dump_schema, snapshot_path, write_snapshot
    from database.postgres_version import POSTGRES_MAJOR_VERSION

    path = snapshot_path(migrations_dir)
    if not applied and path.exists():
        return None, None  # a no-op apply changed nothing: no pg_dump run
    try:
        snapshot = dump_schema(conninfo)
    except SnapshotError as error:
        return None, f"schema snapshot {shown(str(path))} not updated: {error}"
    if snapshot.server_major != POSTGRES_MAJOR_VERSION:
        return None, (
            f"schema snapshot {shown(str(path))} not updated: the local server runs PostgreSQL "
            f"{snapshot.server_major}, the snapshot is made at the deployed {POSTGRES_MAJOR_VERSION}"
        )
    write_snapshot(snapshot, path)
    return str(path), None


def run_dump_schema(arguments: argparse.Namespace, renderer: HumanRenderer, collector: JsonCollector) -> int:
    """--dump-schema [FILE]: the target's normalized schema-only dump, to FILE, stdout (-) or the
    snapshot beside the migrations."""
    if arguments.environment in DEPLOYED_ENVIRONMENTS and arguments.db_uri is None:
        raise UsageError(
            f"--dump-schema --environment {arguments.environment}: the deployed database sits in isolated subnets "
            "and its migration function carries no pg_dump; name it with --db-uri from a machine inside its VPC. "
            "The snapshot of the migrations themselves comes from --environment local"
        )
    from database.cli.snapshot import dump_schema, snapshot_path, write_snapshot
    from database.postgres_version import POSTGRES_MAJOR_VERSION

    destination = arguments.dump_schema or str(snapshot_path(_migrations_dir(arguments)))
    if destination == "-" and arguments.json:
        raise UsageError("--dump-schema - writes the SQL to stdout: drop --json, or name a FILE")

    target = resolve_target(arguments.environment, arguments.db_uri)
    snapshot = dump_schema(target.conninfo)
    collector.log.deployed_major = POSTGRES_MAJOR_VERSION
    if snapshot.server_version:
        collector.log.record(Connected(snapshot.server_version))  # warns when it is not the deployed major
    warnings = collector.log.warnings
    if destination == "-":
        sys.stdout.write(snapshot.text)
        for warning in warnings:
            print(f"⚠️  {warning}", file=sys.stderr)
        return 0
    write_snapshot(snapshot, Path(destination))
    if arguments.json:
        print(json_document("dump-schema", collector, schema_snapshot=destination))
        return 0
    renderer.announce(f"📸 Schema snapshot written: {shown(destination)}")
    for warning in warnings:
        renderer.announce(f"⚠️  {warning}")
    return 0


def run_deployed(arguments: argparse.Namespace, mode: str, renderer: HumanRenderer, collector: JsonCollector) -> int:
    """Status, dry-run or lint of a deployed environment, read inside its VPC by the deployed
    migration function and shown exactly like a local one."""
    if arguments.accept_drift or arguments.migrations_dir is not None:
        raise UsageError(
            f"--environment {arguments.environment} reads the migrations the deployed function carries: "
            "--accept-drift and --migrations-dir do not apply"
        )
    from database.cli.deployed import read_deployed_status
    from database.migrator.events import Notice

    if mode != "lint":
        renderer.start(mode)
    asked = "lint findings" if mode == "lint" else "status"
    renderer.announce(f"🔍 Asking the deployed {arguments.environment} environment (stack PgSchemaDeploy-"
                      f"{arguments.environment}, its migration function) for its {asked}...")
    deployed = read_deployed_status(arguments.environment, mode)
    from database.postgres_version import POSTGRES_MAJOR_VERSION

    renderer.log.deployed_major = POSTGRES_MAJOR_VERSION  # an engine upgrade in one environment shows
    sink = collector.event if arguments.json else renderer.event
    replayed: list[Event] = [Notice(notice) for notice in deployed.notices]
    if deployed.server_version:
        replayed.insert(0, Connected(deployed.server_version))
    for event in replayed:
        renderer.log.record(event)
        sink(event)
    if mode == "lint":
        from database.cli import lint
        from database.lint.findings import Finding

        findings = [Finding(**finding) for finding in deployed.findings]
        code = lint.exit_code(findings)
        if arguments.json:
            print(json_document(mode, collector, exit_code=code, findings=deployed.findings,
                                environment=arguments.environment, function=deployed.function_name))
        else:
            renderer.announce(f"   answered by {deployed.function_name} ({deployed.region})")
            lint.print_findings(findings, sys.stdout, scope=f"the migrations pending on {arguments.environment} "
                                "(judged by its table sizes and its lint_error_rows)")
        return code
    if deployed.status is None:
        raise MigrationError(f"{deployed.function_name} answered no status: is it deployed from this version?")
    exit_code = status_exit_code(deployed.status, frozenset())
    if arguments.json:
        print(json_document(mode, collector, status=deployed.status, exit_code=exit_code,
                            environment=arguments.environment, function=deployed.function_name))
    else:
        renderer.announce(f"   answered by {deployed.function_name} ({deployed.region})")
        renderer.status(deployed.status)
        if mode == "dry-run":
            renderer.dry_run(deployed.status)
    return exit_code


def status_exit_code(status: Status, accepted: frozenset[str]) -> int:
    """2 when a file is unusable (apply would refuse it), 1 for unaccepted drift of a file, schema
    drift or an invalid index, else 0."""
    if status.problems:
        return InvalidMigrationError.exit_code
    if (status.drifted and not set(status.drifted) <= accepted) or status.invalid_indexes or status.schema_drift:
        return 1
    return 0


def create_migration(directory: Path, description: str, *, as_json: bool) -> int:
    from database.migrator.discovery import SLUG_MAX_CHARS, is_shortened, next_migration_path

    stamp = datetime.now(UTC)
    path = next_migration_path(directory, description, stamp.strftime("%Y%m%d%H%M%S"))
    if path.exists():
        raise InvalidMigrationError(f"{shown(str(path))}: already exists")
    one_line = " ".join(description.split())  # a line break would end the comment and start SQL
    shortened = is_shortened(description)
    path.write_text(
        f"-- {path.stem}: {one_line}\n"
        f"-- Created {stamp:%Y-%m-%d}. Runs in one transaction together with its tracking row.\n"
        "-- Keep it safe to re-run: IF NOT EXISTS for DDL, ON CONFLICT DO NOTHING for data.\n\n",
        encoding="utf-8",
    )
    if as_json:
        import json

        print(json.dumps({"mode": "new", "ok": True, "path": shown(str(path)), "version": path.stem,
                          "name_shortened": shortened}))
    else:
        print(f"📝 Created {shown(str(path))}")
        if shortened:
            print(f"   The name keeps the description's first words (at most {SLUG_MAX_CHARS} characters); "
                  "the whole description is its first line")
        print("   Write its SQL, then see what would run: scripts/run-migrations.sh --dry-run --environment local")
    return 0


if __name__ == "__main__":
    # No cyclic garbage collection in this short-lived process: its passes over the objects
    # psycopg's import creates cost ~20 ms of every run, while a whole apply of 1000 migrations
    # leaves only a few hundred objects in cycles (peak memory unchanged).
    gc.disable()
    status = main()
    # Skip interpreter teardown (~35 ms with psycopg loaded, a seventh of a no-op deploy run):
    # the connection is closed, nothing is registered with atexit, and output is flushed here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
