"""Repeatable migrations (R__description.sql) against a real PostgreSQL: applied after the numbered
ones, in name order, each in its own transaction, again whenever their SQL changes; tracked apart
from the versioned history."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from database.migrator.errors import InvalidMigrationError, MigrationFailedError
from database.migrator.events import Event, Repeated
from database.migrator.manifest import build_manifest

from .helpers import apply_dir, run_cli, status_of, write_migrations

FILES = {
    "001_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n",
    "R__users_view.sql": "-- read by the app\nCREATE OR REPLACE VIEW user_names AS SELECT name FROM users;\n",
    "R__a_function.sql": "CREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$;\n",
}


def repeated(uri: str, directory: Path) -> list[str]:
    events: list[Event] = []
    apply_dir(uri, directory, events)
    return [event.name for event in events if isinstance(event, Repeated)]


def tracked(uri: str) -> list[str]:
    with psycopg.connect(uri) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM schema_repeatables ORDER BY name")]


def test_repeatables_run_after_the_numbered_ones_in_name_order_and_again_only_when_changed(
    database_uri: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    status = status_of(database_uri, directory)
    assert status.repeatable_pending == ["R__a_function", "R__users_view"]
    assert [p.version for p in status.pending] == ["001_users"]  # R__ files are no numbered migrations

    assert repeated(database_uri, directory) == ["R__a_function", "R__users_view"]
    assert tracked(database_uri) == ["R__a_function", "R__users_view"]
    assert repeated(database_uri, directory) == []  # unchanged: nothing runs
    write_migrations(directory, {"R__users_view.sql": "-- reworded comment only\n"
                                 "CREATE OR REPLACE VIEW user_names AS SELECT name FROM users;\n"})
    assert repeated(database_uri, directory) == []  # comments are not a change
    wider = "CREATE OR REPLACE VIEW user_names AS SELECT name, id FROM users;\n"
    write_migrations(directory, {"R__users_view.sql": wider})
    assert status_of(database_uri, directory).repeatable_pending == ["R__users_view"]
    assert repeated(database_uri, directory) == ["R__users_view"]
    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT count(*) FROM information_schema.columns "
                                  "WHERE table_name = 'user_names'").fetchone() == (2,)
    assert status_of(database_uri, directory).schema_drift == []


def test_a_failing_repeatable_is_rolled_back_and_names_its_line(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {**FILES, "R__b_broken.sql": "SELECT 1;\nSELECT * FROM nope;\n"})
    with pytest.raises(MigrationFailedError, match=r"R__b_broken.sql:2: R__b_broken failed: SQLSTATE 42P01"):
        apply_dir(database_uri, directory)
    assert tracked(database_uri) == ["R__a_function"]  # the one before it stays; the broken one left nothing
    assert status_of(database_uri, directory).repeatable_pending == ["R__b_broken", "R__users_view"]


def test_a_repeatable_cannot_opt_out_of_its_transaction(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"R__index.sql": "-- migrate:no-transaction\nSELECT 1;\n"})
    with pytest.raises(InvalidMigrationError, match=r"R__index.sql: a repeatable migration runs in one transaction"):
        apply_dir(database_uri, directory)


def test_status_dry_run_and_json_show_them_and_a_change_changes_the_manifest(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", FILES)
    before = build_manifest(directory)
    arguments = ("--db-uri", database_uri, "--migrations-dir", str(directory))
    dry = run_cli(*arguments, "--dry-run")
    assert "🔁 Repeatable migrations to apply (new or changed):" in dry.stdout and "  • R__users_view" in dry.stdout
    document = json.loads(run_cli(*arguments, "--json").stdout)
    assert document["repeatable_pending"] == ["R__a_function", "R__users_view"]
    assert [item["name"] for item in document["repeated_now"]] == ["R__a_function", "R__users_view"]
    assert json.loads(run_cli(*arguments, "--status", "--json").stdout)["repeatable_pending"] == []
    write_migrations(directory, {"R__users_view.sql": "CREATE OR REPLACE VIEW user_names AS SELECT 1 AS one;\n"})
    after = build_manifest(directory)
    assert after.digest != before.digest and after.count == before.count == 1  # a deploy runs for it
