"""run-migrations: apply, inspect or plan the database/migrations files against a database.

Exit status: 0 success; 1 a migration failed, applied files drifted or another database error;
2 bad input (flags, file names, file contents); 3 database unreachable; 4 another run held the
lock too long.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from database.cli.environments import DEFAULT_MIGRATIONS_DIR, UsageError, resolve_target
from database.cli.render import HumanRenderer, JsonCollector, json_document
from database.migrator.errors import InvalidMigrationError, MigrationError


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run-migrations.sh",
        description="Apply pending database/migrations/NNN_description.sql files, in order, each in "
        "its own transaction. Same runner locally, in CI and on every deploy.",
    )
    target = parser.add_argument_group("database (default: DATABASE_URL, else libpq PG* variables)")
    target.add_argument("--environment", metavar="NAME", help="local: the project-local PostgreSQL")
    target.add_argument("--db-uri", metavar="URI", help="postgresql://user:pass@host:5432/db?sslmode=require")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="show applied, pending, drifted and missing")
    mode.add_argument("--dry-run", action="store_true", help="show what would be applied; change nothing")
    mode.add_argument("--new", metavar="DESCRIPTION", help="create the next numbered migration file")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON document")
    parser.add_argument(
        "--migrations-dir", metavar="DIR", type=Path, default=DEFAULT_MIGRATIONS_DIR,
        help="default: database/migrations",
    )
    parser.add_argument(
        "--accept-drift", metavar="VERSION", action="append", default=[],
        help="accept that an applied migration's file was edited (repeatable)",
    )
    parser.add_argument("--lock-wait", metavar="SECONDS", type=float, default=300.0,
                        help="how long to wait for another run's lock (default 300)")
    parser.add_argument("--lock-timeout", metavar="DURATION", default="5s",
                        help="PostgreSQL lock_timeout for migration SQL (default 5s)")
    parser.add_argument("--statement-timeout", metavar="DURATION", default="10min",
                        help="PostgreSQL statement_timeout for migration SQL (default 10min)")
    parser.add_argument("--connect-timeout", metavar="SECONDS", type=float,
                        help="keep retrying the connection this long (default 10 local, 90 otherwise)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --json | head` ends quietly
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    renderer = HumanRenderer(sys.stdout, sys.stderr, quiet=arguments.json, deployed_major=_deployed_major(arguments))
    collector = JsonCollector()
    mode = "status" if arguments.status else "dry-run" if arguments.dry_run else "new" if arguments.new else "apply"
    try:
        if arguments.new:
            return create_migration(arguments.migrations_dir, arguments.new, as_json=arguments.json)
        return run(arguments, mode, renderer, collector)
    except MigrationError as error:
        if arguments.json:
            print(json_document(mode, collector, error=error))
        else:
            renderer.error(error)
        return error.exit_code


def _check_accepted_versions(versions: list[str], directory: Path) -> None:
    """A mistyped --accept-drift would otherwise be ignored silently."""
    if not versions:
        return
    from database.migrator.discovery import discover

    known = {migration.version for migration in discover(directory)}
    unknown = [version for version in versions if version not in known]
    if unknown:
        raise UsageError(f"--accept-drift {unknown[0]}: no migration in {directory} has that version")


def _user() -> str:
    """Who runs the CLI, for the tracking table; containers may run as a uid with no name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _deployed_major(arguments: argparse.Namespace) -> int | None:
    """For local runs, the PostgreSQL major the deployed environments run, to compare with."""
    if arguments.environment != "local":
        return None
    from stacks.settings import POSTGRES_MAJOR_VERSION

    return POSTGRES_MAJOR_VERSION


def run(arguments: argparse.Namespace, mode: str, renderer: HumanRenderer, collector: JsonCollector) -> int:
    from database.migrator import orchestration
    from database.migrator.postgres import ConnectSettings

    target = resolve_target(arguments.environment, arguments.db_uri)
    _check_accepted_versions(arguments.accept_drift, arguments.migrations_dir)
    settings = orchestration.RunnerSettings(
        migrations_dir=arguments.migrations_dir,
        connect=ConnectSettings(
            conninfo=target.conninfo,
            total_timeout_seconds=arguments.connect_timeout or target.connect_timeout_seconds,
            lock_timeout=arguments.lock_timeout,
            statement_timeout=arguments.statement_timeout,
        ),
        applied_by=f"cli:{_user()}@{socket.gethostname()}",
        lock_wait_seconds=arguments.lock_wait,
        accept_drift=frozenset(arguments.accept_drift),
    )
    emit = collector.event if arguments.json else renderer.event
    renderer.start(mode)
    if mode == "apply":
        result = orchestration.apply(settings, emit)
        if arguments.json:
            print(json_document(mode, collector, status=result.status, applied=result.applied))
        else:
            renderer.finished(result)
        return 0
    status = orchestration.read_status(settings, emit)
    if arguments.json:
        print(json_document(mode, collector, status=status))
    else:
        renderer.status(status)
        if mode == "dry-run":
            renderer.dry_run(status)
    return 1 if status.drifted and not set(status.drifted) <= settings.accept_drift else 0


def create_migration(directory: Path, description: str, *, as_json: bool) -> int:
    from database.migrator.discovery import next_migration_path

    stamp = datetime.now(UTC)
    path = next_migration_path(directory, description, stamp.strftime("%Y%m%d%H%M%S"))
    if path.exists():
        raise InvalidMigrationError(f"{path}: already exists")
    path.write_text(
        f"-- {path.stem}: {description}\n"
        f"-- Created {stamp:%Y-%m-%d}. Runs in one transaction together with its tracking row.\n"
        "-- Keep it safe to re-run: IF NOT EXISTS for DDL, ON CONFLICT DO NOTHING for data.\n\n",
        encoding="utf-8",
    )
    if as_json:
        import json

        print(json.dumps({"mode": "new", "ok": True, "path": str(path), "version": path.stem}))
    else:
        print(f"📝 Created {path}")
    return 0


if __name__ == "__main__":
    status = main()
    # Skip interpreter teardown (~35 ms with psycopg loaded, a seventh of a no-op deploy run):
    # the connection is closed, nothing is registered with atexit, and output is flushed here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
