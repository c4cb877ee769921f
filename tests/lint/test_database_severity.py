"""Severity from the database the migrations will run on, and the gate before every apply, against
a real PostgreSQL: the same file is an error on a big table and a warning on an empty database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from database.cli.lint import cli_lint_source
from database.lint.gate import LintRefusedError, lint_gate
from database.migrator.events import Event, Notice

from ..runner.helpers import GUIDE_MIGRATIONS, apply_dir, public_tables, run_cli, write_migrations

ORDERS = {"001_orders.sql": "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, x bigint);\n"}
INDEX = {"002_orders_x.sql": "-- look orders up by x\nCREATE INDEX IF NOT EXISTS orders_x ON orders (x);\n"}


def execute(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def fill_orders(uri: str, rows: int, *, analyze: bool = True) -> None:
    if not analyze:  # and autovacuum may not either: its autoanalyze would make the table analyzed
        execute(uri, "ALTER TABLE orders SET (autovacuum_enabled = false)")
    execute(uri, f"INSERT INTO orders SELECT g, g FROM generate_series(1, {rows}) AS g")
    if analyze:
        execute(uri, "ANALYZE orders")


def lint_json(uri: str, directory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("--lint", "--json", "--db-uri", uri, "--migrations-dir", str(directory), *extra)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def tracking_rows(uri: str) -> list[tuple[object, ...]]:
    with psycopg.connect(uri) as connection:
        if connection.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return []
        return connection.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()


def test_the_same_file_is_an_error_on_a_big_table_and_a_warning_on_an_empty_one(
    database_uri: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", ORDERS)
    apply_dir(database_uri, directory)
    write_migrations(directory, INDEX)
    code, document = lint_json(database_uri, directory)
    assert code == 0 and document["ok"] is True
    [empty] = document["findings"]
    assert empty["severity"] == "warning" and empty["table"] == "public.orders" and empty["estimated_rows"] == 0

    fill_orders(database_uri, 3_000)
    code, document = lint_json(database_uri, directory, "--lint-error-rows", "2000")
    assert code == 1 and document["ok"] is False
    [big] = document["findings"]
    assert big["file"].endswith("002_orders_x.sql") and big["line"] == 2
    assert big["rule"] == "require-concurrent-index-creation" and big["severity"] == "error"
    assert big["acknowledged"] is False
    assert big["estimated_rows"] == 3_000 and big["total_bytes"] > 0
    assert "CREATE INDEX on public.orders (3,000 rows, " in big["message"] and "CONCURRENTLY" in big["message"]

    code, document = lint_json(database_uri, directory)  # the default threshold: 100,000 rows
    assert code == 0 and document["findings"][0]["severity"] == "warning"
    assert tracking_rows(database_uri) == [("001_orders",)]  # lint wrote nothing


def test_the_default_threshold_and_a_table_never_analyzed(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", ORDERS)
    apply_dir(database_uri, directory)
    fill_orders(database_uri, 100_500, analyze=False)
    write_migrations(directory, INDEX)
    code, document = lint_json(database_uri, directory)
    assert code == 1
    [finding] = document["findings"]
    assert finding["severity"] == "error" and finding["estimated_rows"] == 100_000
    assert "at least 100 k rows (never analyzed)" in finding["message"]


def test_a_required_column_on_a_table_with_rows_is_an_error_at_any_size(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", ORDERS)
    apply_dir(database_uri, directory)
    write_migrations(directory, {"002_region.sql": "ALTER TABLE orders ADD COLUMN region text NOT NULL;\n"})
    code, document = lint_json(database_uri, directory)
    assert code == 0 and document["findings"][0]["severity"] == "warning"
    fill_orders(database_uri, 1)
    code, document = lint_json(database_uri, directory)
    assert code == 1
    assert document["findings"][0]["rule"] == "adding-required-field"
    assert "cannot succeed" in document["findings"][0]["message"]


def test_a_table_a_pending_migration_creates_is_a_warning(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {**ORDERS, **INDEX})
    code, document = lint_json(database_uri, directory, "--lint-error-rows", "0")
    assert code == 0
    assert "on orders (not in the database yet)" in document["findings"][0]["message"]
    assert tracking_rows(database_uri) == [] and public_tables(database_uri) == []  # not even the tracking table


def test_the_gate_refuses_an_apply_with_nothing_changed_and_acknowledgement_lets_it_run(
    database_uri: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", ORDERS)
    apply_dir(database_uri, directory)
    fill_orders(database_uri, 3_000)
    write_migrations(directory, {**INDEX, "003_later.sql": "CREATE TABLE IF NOT EXISTS later (id bigint);\n"})
    gate = lint_gate(cli_lint_source, 2_000)
    with pytest.raises(LintRefusedError) as refused:
        apply_dir(database_uri, directory, pre_apply_check=gate)
    message = str(refused.value)
    assert "002_orders_x.sql:2 require-concurrent-index-creation: CREATE INDEX on public.orders (3,000 rows" in message
    assert "nothing was applied" in message and "-- squawk-ignore require-concurrent-index-creation" in message
    assert tracking_rows(database_uri) == [("001_orders",)] and "later" not in public_tables(database_uri)

    (directory / "002_orders_x.sql").write_text(
        "-- squawk-ignore require-concurrent-index-creation\nCREATE INDEX IF NOT EXISTS orders_x ON orders (x);\n"
    )
    events: list[Event] = []
    result = apply_dir(database_uri, directory, events, pre_apply_check=gate)
    assert [applied.version for applied in result.applied] == ["002_orders_x", "003_later"]
    notices = [event.message for event in events if isinstance(event, Notice)]
    assert any(n.startswith("lint error (acknowledged): ") and "public.orders (3,000 rows" in n for n in notices)


def test_the_cli_apply_gate_says_what_to_do_and_json_carries_the_findings(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", ORDERS)
    apply_dir(database_uri, directory)
    fill_orders(database_uri, 3_000)
    write_migrations(directory, INDEX)
    arguments = ("--db-uri", database_uri, "--migrations-dir", str(directory), "--lint-error-rows", "2000")
    human = run_cli(*arguments)
    assert human.returncode == 1
    assert "❌ lint: 1 unacknowledged error in the pending migrations; nothing was applied" in human.stderr
    machine = run_cli(*arguments, "--json")
    document = json.loads(machine.stdout)
    assert machine.returncode == 1 and document["ok"] is False
    assert document["error"]["type"] == "LintRefusedError"
    assert document["error"]["findings"][0]["table"] == "public.orders"
    passes = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))  # 3,000 < 100,000 rows
    assert passes.returncode == 0, passes.stderr
    assert "lint warning: " in passes.stdout and "(a warning below 100,000 rows)" in passes.stdout


def test_the_shipped_migrations_pass_the_gate_on_an_empty_database(database_uri: str) -> None:
    result = apply_dir(database_uri, GUIDE_MIGRATIONS, pre_apply_check=lint_gate(cli_lint_source, 100_000))
    assert len(result.applied) == len(list(GUIDE_MIGRATIONS.glob("*.sql")))


def test_lint_without_a_database_reads_every_file(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {**ORDERS, "002_bad.sql": "SELECT FROM WHERE;\n"})
    result = run_cli("--lint", "--migrations-dir", str(directory))
    assert result.returncode == 1
    assert "002_bad.sql:1 syntax-error error" in result.stdout and "❌ Lint of every file" in result.stdout
