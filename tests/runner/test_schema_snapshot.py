"""The schema snapshot (database/schema.sql) and schema drift through the CLI, against real PostgreSQL
17.9 and the pinned pg_dump: stable bytes, the local apply's rewrite, --dump-schema and --status."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from database.cli.snapshot import dump_schema, normalize
from database.migrator.schema_state import FINGERPRINT_TABLE

from .helpers import GUIDE_MIGRATIONS, PROJECT_ROOT, apply_dir, run_cli, write_migrations

COMMITTED_SNAPSHOT = PROJECT_ROOT / "database" / "schema.sql"


def execute(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


@pytest.fixture
def twin_uri(postgresql: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A second empty database on the same server, with other oids than the test's own."""
    info = postgresql.info
    postgresql.autocommit = True
    postgresql.execute("CREATE DATABASE snapshot_twin")
    uri = f"postgresql://{info.user}@{info.host}:{info.port}/snapshot_twin"
    execute(uri, "CREATE TABLE filler (id integer)", "CREATE FUNCTION filler() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "DROP TABLE filler", "DROP FUNCTION filler()")
    yield uri
    postgresql.execute("DROP DATABASE snapshot_twin WITH (FORCE)")


@pytest.fixture
def local_environment(
    postgresql: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> Iterator[tuple[dict[str, str], str]]:
    """`--environment local` pointed at the session's server (itself a scripts/local-db.sh server)
    with a fresh testdriven_dev database: the LOCAL_PG_DIR to pass, and the database's URI."""
    info = postgresql.info
    postgresql.autocommit = True
    postgresql.execute("DROP DATABASE IF EXISTS testdriven_dev WITH (FORCE)")
    postgresql.execute("CREATE DATABASE testdriven_dev")
    state = tmp_path / "local-state"
    state.mkdir()
    (state / "port").write_text(f"{info.port}\n")
    data_directory = postgresql.execute("SHOW data_directory").fetchone()
    assert data_directory is not None
    (state / "datadir").write_text(f"{data_directory[0]}\n")  # so that the local identity check knows it
    yield {"LOCAL_PG_DIR": str(state)}, f"postgresql://{info.user}@{info.host}:{info.port}/testdriven_dev"
    postgresql.execute("DROP DATABASE testdriven_dev WITH (FORCE)")


def test_snapshot_is_byte_identical_across_runs_and_databases_and_matches_the_committed_one(
    database_uri: str, twin_uri: str
) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    apply_dir(twin_uri, GUIDE_MIGRATIONS)

    dumps = [dump_schema(uri) for uri in (database_uri, database_uri, twin_uri, twin_uri)]

    assert {dump.text for dump in dumps} == {COMMITTED_SNAPSHOT.read_text(encoding="utf-8")}
    assert dumps[0].server_version and dumps[0].server_major == 17
    text = dumps[0].text
    assert "CREATE TABLE public.users (" in text and "CREATE TRIGGER group_amount_notify" in text
    assert "schema_migrations" not in text and FINGERPRINT_TABLE not in text
    assert "\\restrict" not in text and "Dumped from" not in text and "Owner: postgres" not in text


def test_normalize_drops_the_per_run_restrict_key_and_version_lines() -> None:
    dump = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n-- Dumped from database version 17.9\n"
        "-- Dumped by pg_dump version 17.9\n\nSET lock_timeout = 0;   \nCREATE TABLE t ();\n\n\\unrestrict AbC123\n\n"
    )

    assert normalize(dump) == "--\n-- PostgreSQL database dump\n--\n\nSET lock_timeout = 0;\nCREATE TABLE t ();\n"


def test_local_apply_rewrites_the_snapshot_only_when_it_applied_something(
    local_environment: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    environment, _uri = local_environment
    migrations = tmp_path / "database" / "migrations"
    shutil.copytree(GUIDE_MIGRATIONS, migrations)
    snapshot = tmp_path / "database" / "schema.sql"

    first = run_cli("--environment", "local", "--migrations-dir", str(migrations), env=environment)
    assert first.returncode == 0, first.stderr
    assert f"📸 Schema snapshot updated: {snapshot}" in first.stdout
    assert snapshot.read_bytes() == COMMITTED_SNAPSHOT.read_bytes()

    snapshot.write_text("-- edited by hand\n")
    noop = run_cli("--environment", "local", "--migrations-dir", str(migrations), env=environment)
    assert noop.returncode == 0 and "📸" not in noop.stdout
    assert snapshot.read_text() == "-- edited by hand\n"  # a no-op apply runs no pg_dump

    write_migrations(migrations, {"004_email_index.sql": "CREATE INDEX idx_users_email ON users (email);"})
    applied = run_cli("--environment", "local", "--migrations-dir", str(migrations), "--json", env=environment)
    assert applied.returncode == 0, applied.stderr
    document = json.loads(applied.stdout)
    assert document["schema_snapshot"] == str(snapshot)
    assert "CREATE INDEX idx_users_email ON public.users USING btree (email);" in snapshot.read_text()


def test_dump_schema_writes_a_file_or_stdout_for_any_target(database_uri: str, tmp_path: Path) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)

    written = run_cli("--db-uri", database_uri, "--dump-schema", str(tmp_path / "out.sql"))
    printed = run_cli("--db-uri", database_uri, "--dump-schema", "-")

    assert written.returncode == 0 and f"📸 Schema snapshot written: {tmp_path / 'out.sql'}" in written.stdout
    assert printed.returncode == 0 and printed.stdout == (tmp_path / "out.sql").read_text()
    assert printed.stdout == COMMITTED_SNAPSHOT.read_text()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--environment", "production", "--dump-schema"], "its migration function carries no pg_dump"),
        (["--db-uri", "postgresql://x@127.0.0.1:1/d", "--dump-schema", "-", "--json"], "drop --json"),
        (["--db-uri", "postgresql://x@127.0.0.1:1/d", "--dump-schema", "--status"], "not allowed with argument"),
    ],
)
def test_dump_schema_refuses_what_it_cannot_do(arguments: list[str], message: str) -> None:
    result = run_cli(*arguments)

    assert result.returncode == 2
    assert message in result.stderr + result.stdout


def test_dump_schema_failure_names_the_cause_without_the_password() -> None:
    result = run_cli("--db-uri", "postgresql://app:s3cr3t-pw@127.0.0.1:1/app", "--dump-schema", "-")

    assert result.returncode == 1
    assert "pg_dump failed" in result.stderr and "Connection refused" in result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr


def test_status_exits_1_and_lists_schema_drift_made_by_hand(database_uri: str) -> None:
    assert run_cli("--db-uri", database_uri).returncode == 0
    clean = run_cli("--db-uri", database_uri, "--status", "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["schema_drift"] == []

    execute(database_uri, "ALTER TABLE users ALTER COLUMN phone TYPE text",
            "CREATE INDEX idx_users_phone_tmp ON users (phone)")

    human = run_cli("--db-uri", database_uri, "--status")
    assert human.returncode == 1
    assert "❌ Schema changed outside migrations since the last apply (drift):" in human.stdout
    assert "  • index public.idx_users_phone_tmp added" in human.stdout
    document = json.loads(run_cli("--db-uri", database_uri, "--status", "--json").stdout)
    assert document["ok"] is False
    assert document["schema_drift"] == [
        "column public.users.phone: type text, was character varying(20)",
        "index public.idx_users_phone_tmp added",
    ]
    assert document["schema_recorded_at"]


def test_cli_apply_reports_drift_before_applying_then_records_the_result(database_uri: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(GUIDE_MIGRATIONS, migrations)
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(migrations)).returncode == 0
    execute(database_uri, "CREATE INDEX idx_users_phone_tmp ON users (phone)")
    write_migrations(migrations, {"004_email_index.sql": "CREATE INDEX idx_users_email ON users (email);"})

    applied = run_cli("--db-uri", database_uri, "--migrations-dir", str(migrations))

    assert applied.returncode == 0, applied.stderr
    assert "⚠️  Schema changed outside migrations since the last apply (drift)" in applied.stdout
    assert "  • index public.idx_users_phone_tmp added" in applied.stdout
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(migrations), "--status").returncode == 0
