"""scripts/run-migrations.sh as users run it: the guide's flags, log lines, JSON and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from database.migrator.orchestration import name_versions

from .helpers import GUIDE_MIGRATIONS, public_tables, run_cli, write_migrations


def test_apply_prints_the_guides_log_lines(database_uri: str) -> None:
    result = run_cli("--db-uri", database_uri)

    assert result.returncode == 0, result.stderr
    # The version warning appears only where the test server's major differs from the deployed one.
    lines = [line for line in result.stdout.splitlines() if not line.startswith("⚠️  PostgreSQL ")]
    expected_prefixes = [
        "🔄 Running database migrations...",
        "🔍 Testing database connection...",
        "✅ Database connection successful",
        "📋 Creating migration table...",
        "✅ Migration table ready",
        "📊 Migration Status",
        "==================",
        "⏳ Pending Migrations:",
        "  • 001_initial_schema",
        "  • 002_add_user_profile",
        "  • 003_add_savings_groups",
        "📝 Applying: 001_initial_schema",
        "✅ Applied: 001_initial_schema",
        "📝 Applying: 002_add_user_profile",
        "✅ Applied: 002_add_user_profile",
        "📝 Applying: 003_add_savings_groups",
        "✅ Applied: 003_add_savings_groups",
        "🎉 All migrations applied successfully!",
    ]
    assert len(lines) == len(expected_prefixes), result.stdout
    for line, prefix in zip(lines, expected_prefixes, strict=True):
        assert line.startswith(prefix), (line, prefix)

    again = run_cli("--db-uri", database_uri)
    assert again.returncode == 0
    assert "✅ Applied Migrations:" in again.stdout and "Applying" not in again.stdout
    assert again.stdout.rstrip().endswith("🎉 Database is up to date: nothing to apply")


def test_status_lists_applied_with_time_and_pending(database_uri: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    shutil.copytree(GUIDE_MIGRATIONS, directory)
    (directory / "003_add_savings_groups.sql").rename(tmp_path / "held_back.sql")
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0
    (tmp_path / "held_back.sql").rename(directory / "003_add_savings_groups.sql")

    result = run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory))

    assert result.returncode == 0, result.stderr
    applied_block = result.stdout.split("✅ Applied Migrations:")[1].split("⏳ Pending Migrations:")[0]
    assert "001_initial_schema (20" in applied_block and "ms, by cli:" in applied_block
    assert result.stdout.split("⏳ Pending Migrations:")[1].strip() == "• 003_add_savings_groups"


def test_dry_run_changes_nothing_and_lists_the_plan(database_uri: str) -> None:
    result = run_cli("--dry-run", "--db-uri", database_uri)

    assert result.returncode == 0, result.stderr
    assert "🔍 Dry run: 3 migration(s) would be applied, in this order:" in result.stdout
    assert "  • 003_add_savings_groups: 3 statement(s), one transaction" in result.stdout
    assert "🔍 Dry run: nothing was changed" in result.stdout
    assert public_tables(database_uri) == []


def test_json_output_for_apply_status_and_dry_run(database_uri: str) -> None:
    plan = json.loads(run_cli("--dry-run", "--json", "--db-uri", database_uri).stdout)
    assert plan["mode"] == "dry-run" and plan["ok"] is True
    assert [p["version"] for p in plan["pending"]] == [
        "001_initial_schema", "002_add_user_profile", "003_add_savings_groups"
    ]

    applied = run_cli("--json", "--db-uri", database_uri)
    document = json.loads(applied.stdout)
    assert applied.returncode == 0 and document["ok"] is True
    assert [a["version"] for a in document["applied_now"]] == [p["version"] for p in plan["pending"]]

    status = json.loads(run_cli("--status", "--json", "--db-uri", database_uri).stdout)
    assert status["server_version"].split(".")[0].isdigit() and status["notices"] == []
    assert status["pending"] == [] and status["drifted"] == [] and status["missing"] == []
    assert all(a["applied_at"] and a["applied_by"].startswith("cli:") for a in status["applied"])


def test_failed_migration_exit_status_and_message(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_ok.sql": "CREATE TABLE ok (id int);\n",
        "002_typo.sql": "CREATE TABLE typo (id int);\nCREAT INDEX typo_id ON typo (id);\n",
    })
    result = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))

    assert result.returncode == 1
    assert f"❌ {directory / '002_typo.sql'}:2: 002_typo failed: SQLSTATE 42601: syntax error" in result.stderr
    assert public_tables(database_uri) == ["ok", "schema_migrations", "schema_migrations_fingerprint"]

    as_json = json.loads(run_cli("--json", "--db-uri", database_uri, "--migrations-dir", str(directory)).stdout)
    assert as_json["ok"] is False
    assert as_json["error"] | {"message": None} == {
        "type": "MigrationFailedError", "message": None, "exit_code": 1, "version": "002_typo",
        "path": str(directory / "002_typo.sql"), "line": 2, "sqlstate": "42601",
    }


def test_drift_fails_apply_and_status_until_accepted(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0
    (directory / "001_a.sql").write_text("CREATE TABLE a (id int, extra int);\n")

    status = run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory))
    assert status.returncode == 1 and "❌ Changed after being applied (drift):\n  • 001_a" in status.stdout
    refused = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))
    assert refused.returncode == 1 and "--accept-drift 001_a" in refused.stderr
    mistyped = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--accept-drift", "001_b")
    assert mistyped.returncode == 2 and "--accept-drift 001_b: no migration in" in mistyped.stderr
    accepted = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--accept-drift", "001_a")
    assert accepted.returncode == 0, accepted.stderr
    assert run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--environment", "staging"], "--environment 'staging' is not known"),
        (["--environment", "testing"], "--environment testing: migrations reach the deployed database"),
        (["--environment", "local", "--db-uri", "postgresql://x@h/d"], "use either --db-uri or --environment"),
        (["--status", "--dry-run"], "not allowed with argument"),
        (["--lock-wait", "soon"], "argument --lock-wait: 'soon' is not a number of seconds"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(arguments: list[str], message: str) -> None:
    result = run_cli(*arguments, env={"LOCAL_PG_DIR": "/nonexistent"})
    assert result.returncode == 2
    assert message in result.stderr


def test_local_environment_not_created_yet_says_how_to_start_it(tmp_path: Path) -> None:
    result = run_cli("--environment", "local", env={"LOCAL_PG_DIR": str(tmp_path)})
    assert result.returncode == 2 and "scripts/local-db.sh start" in result.stderr


def test_bad_migration_file_exits_2_naming_the_file(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"})
    result = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))
    assert result.returncode == 2
    assert "duplicate migration number 1" in result.stderr and "1_b.sql" in result.stderr


def test_password_never_appears_in_any_output(database_uri: str) -> None:
    password = "Sup3r-Secret-Pw"
    parts = urlsplit(database_uri)
    with_password = database_uri.replace(f"{parts.username}@", f"{parts.username}:{password}@")
    unreachable = f"postgresql://app:{password}@127.0.0.1:1/db?sslmode=disable"

    outputs = []
    for arguments in (
        ["--db-uri", with_password],
        ["--status", "--db-uri", with_password],
        ["--dry-run", "--json", "--db-uri", with_password],
        ["--db-uri", unreachable, "--connect-timeout", "1"],
        ["--json", "--db-uri", unreachable, "--connect-timeout", "1"],
    ):
        result = run_cli(*arguments)
        outputs.append((result.returncode, result.stdout + result.stderr))
    assert [code for code, _ in outputs] == [0, 0, 0, 3, 3]
    assert all(password not in text for _, text in outputs)
    assert ":***@127.0.0.1" in outputs[0][1] and "could not connect" in outputs[3][1]


def test_database_url_and_libpq_environment_are_honoured(database_uri: str) -> None:
    from_url = run_cli("--status", "--json", env={"DATABASE_URL": database_uri})
    assert from_url.returncode == 0, from_url.stderr

    parts = urlsplit(database_uri)
    libpq = {"PGHOST": parts.hostname or "", "PGPORT": str(parts.port), "PGUSER": parts.username or "",
             "PGDATABASE": parts.path.lstrip("/")}
    from_env = run_cli("--json", env=libpq)
    assert from_env.returncode == 0, from_env.stderr
    assert len(json.loads(from_env.stdout)["applied_now"]) == 3


def test_new_creates_the_next_numbered_file(tmp_path: Path, database_uri: str) -> None:
    directory = tmp_path / "m"
    shutil.copytree(GUIDE_MIGRATIONS, directory)

    result = run_cli("--new", "Add savings goals!", "--migrations-dir", str(directory))

    created = directory / "004_add_savings_goals.sql"
    assert result.returncode == 0 and f"📝 Created {created}" in result.stdout
    assert created.read_text().startswith("-- 004_add_savings_goals: Add savings goals!")
    unfinished = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))
    assert unfinished.returncode == 2 and "004_add_savings_goals.sql: contains no SQL statements" in unfinished.stderr
    assert public_tables(database_uri) == []


def test_new_with_a_long_description_cuts_the_name_at_a_word_and_keeps_the_whole_text(tmp_path: Path) -> None:
    description = "Backfill the savings goals of every account opened before the migration\nto the new ledger " * 4
    assert len(description) > 300

    result = run_cli("--new", description, "--migrations-dir", str(tmp_path))
    as_json = run_cli("--new", "x" * 300, "--json", "--migrations-dir", str(tmp_path))

    created = tmp_path / "001_backfill_the_savings_goals_of_every_account_opened_before.sql"
    assert result.returncode == 0, result.stderr
    assert f"📝 Created {created}" in result.stdout and "at most 60 characters" in result.stdout
    first_line, second_line = created.read_text().splitlines()[:2]
    assert first_line == f"-- {created.stem}: {' '.join(description.split())}"
    assert second_line.startswith("-- Created ")  # the line break in the description stays in the comment
    document = json.loads(as_json.stdout)
    assert document["name_shortened"] is True and document["version"] == "002_" + "x" * 60


def test_relative_migrations_dir_is_resolved_from_the_callers_directory(tmp_path: Path, database_uri: str) -> None:
    write_migrations(tmp_path / "here", {"001_a.sql": "CREATE TABLE from_relative_dir (id int);"})
    import subprocess

    from .helpers import RUN_MIGRATIONS

    result = subprocess.run(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", "here"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "from_relative_dir" in public_tables(database_uri)


def test_json_carries_notices(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;", "003_c.sql": "SELECT 3;"})
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0
    write_migrations(directory, {"002_b.sql": "SELECT 2;"})

    document = json.loads(run_cli("--json", "--db-uri", database_uri, "--migrations-dir", str(directory)).stdout)

    assert document["ok"] is True and [a["version"] for a in document["applied_now"]] == ["002_b"]
    assert document["notices"] == ["002_b is older than an applied migration: applying it out of order"]


def test_apply_shows_only_the_latest_applied_while_status_lists_all(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {f"{n:03d}_step.sql": f"SELECT {n};" for n in range(1, 13)})
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0

    again = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).stdout
    status = run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory)).stdout

    assert "  … 2 earlier (--status lists them all)" in again
    assert "001_step" not in again and "003_step" in again and "012_step" in again
    assert all(f"  • {n:03d}_step (" in status for n in range(1, 13)) and "earlier" not in status


def test_database_errors_outside_migrations_are_reported_cleanly(database_uri: str, tmp_path: Path) -> None:
    """A role that may connect but not create the tracking table (PostgreSQL 15+ default for
    schema public) gets the server's message and exit 1, not a traceback."""
    with psycopg.connect(database_uri, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS reader")
        admin.execute("CREATE ROLE reader LOGIN")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    reader_uri = database_uri.replace(f"{urlsplit(database_uri).username}@", "reader@")
    try:
        result = run_cli("--db-uri", reader_uri)
        assert result.returncode == 1
        assert result.stderr.startswith("❌ database error (SQLSTATE 42501): permission denied for schema public")
        assert "Traceback" not in result.stderr
    finally:
        with psycopg.connect(database_uri, autocommit=True) as admin:
            admin.execute("DROP OWNED BY reader")
            admin.execute("DROP ROLE reader")


def test_a_long_list_of_applied_versions_is_named_briefly() -> None:
    assert name_versions(["001_a", "002_b"]) == "001_a, 002_b"
    assert name_versions([f"{n:03}_m" for n in range(1, 5)]) == "001_m, 002_m, 003_m, 004_m"
    assert name_versions([f"{n:03}_m" for n in range(1, 256)]) == "255 migrations, 001_m, 002_m, 003_m ... 255_m"
