"""Rollback against a real PostgreSQL: companion NNN_description.down.sql files undo the newest
applied migrations, each in its own transaction together with the deletion of its tracking row,
under the runner lock; refused before anything is touched when an undo is missing."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from database.migrator.discovery import scan
from database.migrator.errors import InvalidMigrationError, MigrationFailedError
from database.migrator.orchestration import RunnerSettings, rollback

from .helpers import apply_dir, public_tables, run_cli, settings_for, status_of, write_migrations

FILES = {
    "001_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    "001_users.down.sql": "DROP TABLE users;\n",
    "002_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n",
    "002_orders.down.sql": "-- undo 002\nDROP TABLE orders;\n",
    "003_notes.sql": "CREATE TABLE notes (id bigint);\n",
    "003_notes.down.sql": "DROP TABLE notes;\n",
}


def applied(uri: str) -> list[str]:
    with psycopg.connect(uri) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]


def undo(uri: str, directory: Path, **options: object) -> list[str]:
    settings: RunnerSettings = settings_for(uri, directory)
    return [step.version for step in rollback(settings, lambda _event: None, **options).reverted]  # type: ignore[arg-type]


def test_down_files_pair_with_their_migration_and_are_never_applied_forward(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    migrations, problems = scan(directory)
    assert problems == []
    assert [(m.version, m.down.name if m.down else None) for m in migrations] == [
        ("001_users", "001_users.down.sql"), ("002_orders", "002_orders.down.sql"), ("003_notes", "003_notes.down.sql"),
    ]  # fmt: skip
    write_migrations(directory, {"004_orphan.down.sql": "SELECT 1;\n"})
    problems = scan(directory)[1]
    assert any("004_orphan.down.sql: an undo file without its migration 004_orphan.sql" in p for p in problems)


def test_rollback_undoes_the_newest_n_newest_first(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    apply_dir(database_uri, directory)
    assert undo(database_uri, directory, count=2) == ["003_notes", "002_orders"]
    assert applied(database_uri) == ["001_users"]
    assert "orders" not in public_tables(database_uri) and "users" in public_tables(database_uri)
    assert status_of(database_uri, directory).schema_drift == []  # a rollback records the schema it leaves
    apply_dir(database_uri, directory)  # and the undone migrations apply again
    assert applied(database_uri) == ["001_users", "002_orders", "003_notes"]


def test_rollback_to_keeps_that_version(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    apply_dir(database_uri, directory)
    assert undo(database_uri, directory, to="001_users") == ["003_notes", "002_orders"]
    assert applied(database_uri) == ["001_users"]
    assert undo(database_uri, directory, to="001_users") == []  # nothing after it any more


def test_a_missing_undo_refuses_before_anything_is_touched(database_uri: str, tmp_path: Path) -> None:
    files = {name: sql for name, sql in FILES.items() if name != "002_orders.down.sql"}
    directory = write_migrations(tmp_path / "m", files)
    apply_dir(database_uri, directory)
    with pytest.raises(InvalidMigrationError, match=r"002_orders cannot be undone: no 002_orders.down.sql"):
        undo(database_uri, directory, count=2)
    assert applied(database_uri) == ["001_users", "002_orders", "003_notes"]
    assert "notes" in public_tables(database_uri)


def test_a_comment_only_undo_is_a_deliberate_no_op(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {**FILES, "003_notes.down.sql": "-- nothing to undo: keep notes\n"})
    apply_dir(database_uri, directory)
    assert undo(database_uri, directory, count=1) == ["003_notes"]
    assert applied(database_uri) == ["001_users", "002_orders"] and "notes" in public_tables(database_uri)


def test_a_failing_undo_stops_with_its_row_kept(database_uri: str, tmp_path: Path) -> None:
    failing = {"002_orders.down.sql": "DROP TABLE orders;\nDROP TABLE nope;\n"}
    directory = write_migrations(tmp_path / "m", {**FILES, **failing})
    apply_dir(database_uri, directory)
    expected = r"002_orders.down.sql:2: the undo of 002_orders failed: SQLSTATE 42P01"
    with pytest.raises(MigrationFailedError, match=expected) as failed:
        undo(database_uri, directory, count=3)
    assert "002_orders stays applied and nothing older was undone" in str(failed.value)
    assert applied(database_uri) == ["001_users", "002_orders"]  # 003 undone; 002's undo rolled back whole
    assert "orders" in public_tables(database_uri)


def test_a_no_transaction_undo_runs_statement_by_statement(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        **FILES,
        "004_index.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_id ON users (id);\n",
        "004_index.down.sql": "-- migrate:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_id;\n",
    })  # fmt: skip
    apply_dir(database_uri, directory)
    assert undo(database_uri, directory, count=1) == ["004_index"]
    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT to_regclass('users_id')").fetchone() == (None,)


def test_the_cli_plans_with_dry_run_and_reports_in_json(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    apply_dir(database_uri, directory)
    arguments = ("--db-uri", database_uri, "--migrations-dir", str(directory))
    plan = run_cli(*arguments, "--rollback", "2", "--dry-run", "--json")
    document = json.loads(plan.stdout)
    assert plan.returncode == 0 and document["mode"] == "rollback" and document["dry_run"] is True
    assert [step["version"] for step in document["rollback"]] == ["003_notes", "002_orders"]
    assert document["rollback"][1]["down"].endswith("002_orders.down.sql")
    assert applied(database_uri) == ["001_users", "002_orders", "003_notes"]  # the plan changed nothing
    human = run_cli(*arguments, "--rollback-to", "001_users")
    assert human.returncode == 0, human.stderr
    assert "⏪ Rolling back: 003_notes" in human.stdout and "✅ Rolled back: 002_orders" in human.stdout
    assert applied(database_uri) == ["001_users"]


def test_bad_rollback_requests_are_refused_with_what_to_do(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    apply_dir(database_uri, directory)
    arguments = ("--db-uri", database_uri, "--migrations-dir", str(directory))
    too_many = run_cli(*arguments, "--rollback", "5")
    assert too_many.returncode == 2 and "--rollback 5: only 3 migrations are applied" in too_many.stderr
    unknown = run_cli(*arguments, "--rollback-to", "009_nothing")
    assert unknown.returncode == 2 and "--rollback-to 009_nothing: no migration" in unknown.stderr
    deployed = run_cli("--environment", "production", "--rollback", "1")
    assert deployed.returncode == 2
    assert "deploys are forward-only" in deployed.stderr and "--new" in deployed.stderr
    assert applied(database_uri) == ["001_users", "002_orders", "003_notes"]
