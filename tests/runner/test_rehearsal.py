"""--rehearse against a real PostgreSQL: the pending migrations run on a template copy of a
database with a table of known size; the report names a rewrite and its ACCESS EXCLUSIVE lock for
a SET DATA TYPE and none for a CONCURRENTLY index, budgets fail and pass as set, and the source
is left unchanged (schema and tracking), the copy dropped."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from database.cli.snapshot import dump_schema

from .helpers import RUN_MIGRATIONS, apply_dir, run_cli, write_migrations
from .test_concurrency import wait_for_query

BASE = {"001_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, x integer);\n"}
PENDING = {
    "002_orders_x.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS orders_x ON orders (x);\n",
    "003_wider_x.sql": "ALTER TABLE orders ALTER COLUMN x TYPE bigint;\n",
}


@pytest.fixture
def source(postgresql: psycopg.Connection[Any], database_uri: str, tmp_path: Path) -> tuple[str, Path]:
    """A database with 001 applied and 200,000 orders, nobody else connected (a copy needs that)."""
    directory = write_migrations(tmp_path / "m", BASE)
    apply_dir(database_uri, directory)
    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute("INSERT INTO orders SELECT g, g FROM generate_series(1, 200000) AS g")
    postgresql.close()  # the fixture's own session would keep CREATE DATABASE ... TEMPLATE from copying
    write_migrations(directory, PENDING)
    return database_uri, directory


def state(uri: str) -> tuple[str, list[tuple[Any, ...]], int]:
    with psycopg.connect(uri) as connection:
        rows = connection.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1").fetchall()
        count = connection.execute("SELECT count(*) FROM orders").fetchone()
    return dump_schema(uri).text, rows, int(count[0]) if count else -1


def copies(uri: str) -> list[str]:
    with psycopg.connect(uri) as connection:
        return [r[0] for r in connection.execute("SELECT datname FROM pg_database WHERE datname LIKE '%rehearsal%'")]


def rehearse(uri: str, directory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("--db-uri", uri, "--migrations-dir", str(directory), "--rehearse", "--json", *extra, timeout=120)
    return result.returncode, json.loads(result.stdout)


def test_the_report_names_rewrites_locks_and_indexes_and_the_source_is_unchanged(source: tuple[str, Path]) -> None:
    uri, directory = source
    before = state(uri)

    code, document = rehearse(uri, directory, "--max-lock", "0")

    assert code == 1 and document["ok"] is False and document["within_budgets"] is False
    index, wider = document["migrations"]
    assert index["version"] == "002_orders_x" and index["rewritten"] == []
    assert [built["name"] for built in index["indexes_built"]] == ["public.orders_x"]
    assert index["indexes_built"][0]["bytes"] > 1_000_000
    assert "AccessExclusiveLock" not in {lock["mode"] for lock in index["locks"]} and index["over_budget"] == []
    assert wider["version"] == "003_wider_x" and wider["rewritten"] == ["public.orders"]
    exclusive = [lock for lock in wider["locks"] if lock["mode"] == "AccessExclusiveLock"]
    assert exclusive and exclusive[0]["table"] == "public.orders" and exclusive[0]["held_ms"] > 0
    assert wider["over_budget"] and "ACCESS EXCLUSIVE lock on public.orders held" in wider["over_budget"][0]
    assert wider["duration_ms"] > 0
    assert any(f["rule"] == "changing-column-type" and f["table"] == "public.orders" for f in document["findings"])

    assert state(uri) == before and copies(uri) == []


def test_budgets_pass_as_set(source: tuple[str, Path]) -> None:
    uri, directory = source
    code, document = rehearse(uri, directory, "--max-lock", "60", "--max-duration", "60")
    assert code == 0 and document["within_budgets"] is True
    assert all(m["over_budget"] == [] for m in document["migrations"])
    code, document = rehearse(uri, directory, "--max-duration", "0")
    assert code == 1 and all(m["over_budget"] for m in document["migrations"])


def test_a_failing_migration_fails_the_rehearsal_with_its_line(source: tuple[str, Path]) -> None:
    uri, directory = source
    write_migrations(directory, {"004_broken.sql": "SELECT 1;\nSELECT * FROM nope;\n"})
    code, document = rehearse(uri, directory, "--max-lock", "60")
    assert code == 1 and document["error"]["line"] == 2 and document["error"]["sqlstate"] == "42P01"
    assert [m["version"] for m in document["migrations"]] == ["002_orders_x", "003_wider_x", "004_broken"]
    assert copies(uri) == []


def test_a_source_in_use_is_refused_with_what_to_do(source: tuple[str, Path]) -> None:
    uri, directory = source
    with psycopg.connect(uri):
        result = run_cli("--db-uri", uri, "--migrations-dir", str(directory), "--rehearse")
    assert result.returncode == 3 and "other sessions are connected to it" in result.stderr


def test_ctrl_c_drops_the_copy_and_exits_130(source: tuple[str, Path]) -> None:
    uri, directory = source
    write_migrations(directory, {"004_slow.sql": "SELECT pg_sleep(30);\n"})
    rehearsal = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", uri, "--migrations-dir", str(directory), "--rehearse", "--max-lock", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_query(uri.rsplit("/", 1)[0] + "/postgres", "pg_sleep")
    rehearsal.send_signal(signal.SIGINT)
    stdout, _ = rehearsal.communicate(timeout=30)
    assert rehearsal.returncode == 130
    assert "interrupted: 004_slow was rolled back" in stdout
    assert copies(uri) == []
