"""Small helpers shared by the runner tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from database.migrator.events import Event
from database.migrator.lockwait import Backoff
from database.migrator.orchestration import (
    ApplyResult,
    PreApplyCheck,
    RunnerSettings,
    Status,
    apply,
    read_status,
)
from database.migrator.postgres import ConnectSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUN_MIGRATIONS = PROJECT_ROOT / "scripts" / "run-migrations.sh"
GUIDE_MIGRATIONS = PROJECT_ROOT / "database" / "migrations"


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


def settings_for(
    uri: str,
    directory: Path,
    *,
    connect_timeout: float = 5.0,
    lock_timeout: str = "5s",
    statement_timeout: str = "10min",
    lock_wait_seconds: float = 300.0,
    accept_drift: frozenset[str] = frozenset(),
    pre_apply_check: PreApplyCheck | None = None,
    lock_retries: int = 5,
    lock_backoff: Backoff | None = None,
) -> RunnerSettings:
    connect = ConnectSettings(
        conninfo=uri,
        total_timeout_seconds=connect_timeout,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
    return RunnerSettings(
        migrations_dir=directory,
        connect=connect,
        applied_by="pytest",
        lock_wait_seconds=lock_wait_seconds,
        accept_drift=accept_drift,
        pre_apply_check=pre_apply_check,
        lock_retries=lock_retries,
        lock_backoff=lock_backoff or Backoff(),
    )


def apply_dir(uri: str, directory: Path, events: list[Event] | None = None, **options: Any) -> ApplyResult:
    """Apply `directory` in-process; `options` are settings_for's keywords."""
    sink = events.append if events is not None else (lambda _event: None)
    return apply(settings_for(uri, directory, **options), sink)


def status_of(uri: str, directory: Path) -> Status:
    return read_status(settings_for(uri, directory), lambda _event: None)


def run_cli(
    *arguments: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run scripts/run-migrations.sh as a user would, outside the test's cwd."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    environment.pop("DATABASE_URL", None)
    environment.update(env or {})
    return subprocess.run(
        [str(RUN_MIGRATIONS), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd="/",
    )


def public_tables(uri: str) -> list[str]:
    """The tables a database's public schema holds, by name."""
    with psycopg.connect(uri) as connection:
        rows = connection.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]
