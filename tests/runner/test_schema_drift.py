"""Schema drift against a real PostgreSQL: the catalog description, the fingerprint an apply
records, and the changes a status names after the schema was altered by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from database.migrator.events import Event, SchemaDrift
from database.migrator.orchestration import apply
from database.migrator.schema_state import SchemaDriftError, compare, describe, drift_check

from .helpers import GUIDE_MIGRATIONS, apply_dir, settings_for, status_of, write_migrations


def execute(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def described(uri: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(uri, autocommit=True) as connection:
        return describe(connection)


def test_description_covers_the_guide_schema_without_the_runner_tables_or_extension_objects(
    database_uri: str,
) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    description = described(database_uri)

    assert description["column public.users.phone"] == {
        "on": "table public.users", "type": "character varying(20)", "nullability": "nullable",
    }
    assert description["column public.users.id"]["default"] == "public.uuid_generate_v4()"
    assert description["column public.users.username"]["nullability"] == "NOT NULL"
    assert description["index public.idx_users_phone"]["definition"] == (
        "CREATE INDEX idx_users_phone ON public.users USING btree (phone)"
    )
    assert description["constraint public.savings_groups.savings_groups_created_by_fkey"]["definition"] == (
        "FOREIGN KEY (created_by) REFERENCES public.users(id)"
    )
    assert "trigger public.savings_groups.group_amount_notify" in description
    assert "function public.notify_group_update()" in description
    assert description["extension \"uuid-ossp\""]["version"]
    assert not any("schema_migrations" in key for key in description)
    assert not any(key.startswith("function public.uuid_") for key in description)  # the extension's own


def test_apply_records_the_schema_and_a_status_finds_no_drift(database_uri: str) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)

    status = status_of(database_uri, GUIDE_MIGRATIONS)
    assert status.schema_drift == []
    assert status.schema_recorded_at is not None


def test_status_names_a_type_change_and_an_index_made_by_hand(database_uri: str) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    execute(
        database_uri,
        "ALTER TABLE users ALTER COLUMN phone TYPE text",
        "CREATE INDEX idx_users_phone_tmp ON users (phone)",
        "ALTER TABLE users ALTER COLUMN first_name SET NOT NULL",
    )

    assert status_of(database_uri, GUIDE_MIGRATIONS).schema_drift == [
        "column public.users.first_name: nullability NOT NULL, was nullable",
        "column public.users.phone: type text, was character varying(20)",
        "index public.idx_users_phone_tmp added",
    ]


def test_a_dropped_table_is_named_once_and_a_changed_function_without_its_body(database_uri: str) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    execute(
        database_uri,
        "DROP TABLE savings_groups",
        "CREATE OR REPLACE FUNCTION notify_group_update() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN NULL; END $$",
    )

    assert status_of(database_uri, GUIDE_MIGRATIONS).schema_drift == [
        "function public.notify_group_update(): definition changed",
        "table public.savings_groups dropped",
    ]


def drifted_with_a_pending_migration(uri: str, tmp_path: Path, by_hand: str) -> Path:
    """The guide's migrations applied, ``by_hand`` run outside them, and a new migration pending."""
    directory = tmp_path / "migrations"
    shutil.copytree(GUIDE_MIGRATIONS, directory)
    apply_dir(uri, directory)
    execute(uri, by_hand)
    return write_migrations(directory, {"004_email_index.sql": "CREATE INDEX idx_users_email ON users (email);"})


def test_the_next_apply_that_applies_something_records_the_new_schema(database_uri: str, tmp_path: Path) -> None:
    by_hand = "CREATE INDEX idx_users_phone_tmp ON users (phone)"
    directory = drifted_with_a_pending_migration(database_uri, tmp_path, by_hand)

    events: list[Event] = []
    apply(settings_for(database_uri, directory, pre_apply_check=drift_check(refuse=False)), events.append)

    assert SchemaDrift(["index public.idx_users_phone_tmp added"]) in events  # reported before applying
    assert status_of(database_uri, directory).schema_drift == []


def test_refusing_drift_stops_the_run_before_anything_is_written(database_uri: str, tmp_path: Path) -> None:
    by_hand = "ALTER TABLE users ALTER COLUMN phone TYPE text"
    directory = drifted_with_a_pending_migration(database_uri, tmp_path, by_hand)

    with pytest.raises(SchemaDriftError, match=r"column public\.users\.phone: type text, was character varying"):
        apply(settings_for(database_uri, directory, pre_apply_check=drift_check(refuse=True)), lambda _event: None)

    status = status_of(database_uri, directory)
    assert [pending.version for pending in status.pending] == ["004_email_index"]
    assert status.schema_drift == ["column public.users.phone: type text, was character varying(20)"]


def test_a_failed_run_records_what_it_applied(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "migrations", {
        "001_table.sql": "CREATE TABLE items (id integer PRIMARY KEY);",
        "002_broken.sql": "ALTER TABLE items ADD COLUMN name text;\nSELECT 1/0;",
    })
    with pytest.raises(Exception, match="division by zero"):
        apply_dir(database_uri, directory)

    assert status_of(database_uri, directory).schema_drift == []


def test_no_fingerprint_before_the_first_apply_and_none_without_a_tracking_table(database_uri: str) -> None:
    status = status_of(database_uri, GUIDE_MIGRATIONS)
    assert status.schema_drift == [] and status.schema_recorded_at is None


def test_description_is_the_same_on_two_databases_built_the_same_way(
    database_uri: str, postgresql: psycopg.Connection[tuple[object, ...]]
) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    info = postgresql.info
    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute("CREATE DATABASE drift_twin")
    twin = f"postgresql://{info.user}@{info.host}:{info.port}/drift_twin"
    try:
        execute(twin, "CREATE TABLE filler (id integer)", "DROP TABLE filler")  # other oids
        apply_dir(twin, GUIDE_MIGRATIONS)
        assert described(twin) == described(database_uri)
    finally:
        with psycopg.connect(database_uri, autocommit=True) as connection:
            connection.execute("DROP DATABASE drift_twin")


def test_compare_names_attribute_changes_and_long_values_briefly() -> None:
    long_body = "x" * 200
    recorded = {"view public.v": {"definition": long_body}, "sequence public.s": {"increment": "1"}}
    live = {"view public.v": {"definition": long_body + "y"}, "sequence public.s": {"increment": "5"}}

    assert compare(recorded, live) == ["sequence public.s: increment 5, was 1", "view public.v: definition changed"]
