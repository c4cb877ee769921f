"""--baseline against a real PostgreSQL: a database whose schema exists without our tracking (a
restored dump, the old setup scripts) is adopted: the migrations up to VERSION are recorded as
applied without running, marked baselined; later ones apply as usual."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from database.migrator.events import ignore_events
from database.migrator.orchestration import baseline

from .helpers import run_cli, settings_for, status_of, write_migrations

FILES = {
    "001_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    "002_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n",
    "003_notes.sql": "CREATE TABLE notes (id bigint);\n",
}


def made_by_hand(uri: str) -> None:
    """The schema of 001 and 002, made without the runner (as a restored dump would be)."""
    with psycopg.connect(uri, autocommit=True) as connection:
        connection.execute("CREATE TABLE users (id bigint PRIMARY KEY)")
        connection.execute("CREATE TABLE orders (id bigint PRIMARY KEY)")


def test_baseline_records_without_running_and_later_migrations_apply(database_uri: str, tmp_path: Path) -> None:
    made_by_hand(database_uri)
    directory = write_migrations(tmp_path / "m", FILES)
    arguments = ("--db-uri", database_uri, "--migrations-dir", str(directory))

    adopted = run_cli(*arguments, "--baseline", "002_orders", "--json")
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads(adopted.stdout)["baselined"] == ["001_users", "002_orders"]

    status = status_of(database_uri, directory)
    assert [(a.version, a.baselined, a.execution_ms) for a in status.applied] == [
        ("001_users", True, None), ("002_orders", True, None),
    ]  # fmt: skip
    assert [p.version for p in status.pending] == ["003_notes"] and status.schema_drift == []
    shown = run_cli(*arguments, "--status")
    assert "• 001_users (" in shown.stdout and "baselined: recorded, never run" in shown.stdout
    document = json.loads(run_cli(*arguments, "--status", "--json").stdout)
    assert [item["baselined"] for item in document["applied"]] == [True, True]

    applied = run_cli(*arguments)  # would fail with "already exists" had 001/002 run again
    assert applied.returncode == 0, applied.stderr
    assert "📝 Applying: 003_notes" in applied.stdout and "Applying: 001_users" not in applied.stdout
    again = run_cli(*arguments, "--baseline", "002_orders")
    assert again.returncode == 2 and "already has migrations after it (003_notes)" in again.stderr


def test_baseline_refuses_a_version_that_is_no_migration_file(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    refused = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--baseline", "009_nothing")
    assert refused.returncode == 2 and "--baseline 009_nothing: no migration in" in refused.stderr
    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    deployed = run_cli("--environment", "production", "--baseline", "001_users")
    assert deployed.returncode == 2 and "changes only through a deploy" in deployed.stderr


def test_a_standing_baseline_acts_only_on_a_database_that_records_no_migration(
    database_uri: str, tmp_path: Path
) -> None:
    """What a restored environment's deploys do with baseline_version (only_untracked): the first one
    baselines; once rows exist, from that baseline or the old runner's table, nothing is recorded."""
    made_by_hand(database_uri)
    directory = write_migrations(tmp_path / "m", FILES)
    settings = settings_for(database_uri, directory)
    with psycopg.connect(database_uri, autocommit=True) as connection:  # the old runner's table, still empty
        connection.execute("CREATE TABLE schema_migrations (version varchar(255) PRIMARY KEY)")

    assert baseline(settings, ignore_events, "002_orders", only_untracked=True) == ["001_users", "002_orders"]
    assert baseline(settings, ignore_events, "003_notes", only_untracked=True) == []  # rows now: left alone
    assert [(a.version, a.baselined) for a in status_of(database_uri, directory).applied] == [
        ("001_users", True), ("002_orders", True),
    ]  # fmt: skip
