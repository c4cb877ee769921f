"""CREATE INDEX CONCURRENTLY under the runner: two runners racing, and an INVALID index left by a
failed concurrent build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from database.migrator.errors import MigrationFailedError
from database.migrator.events import Event, Notice, WaitingForLock

from .helpers import RUN_MIGRATIONS, apply_dir, status_of, write_migrations
from .test_concurrency import wait_for_query

# Each key costs the build at least a millisecond (pg_sleep rounds up): 2,000 rows keep the
# concurrent build busy for a few seconds on a table that loads in milliseconds.
SLOW_BUILD = {
    "001_table.sql": "CREATE TABLE big (id int);\n"
                     "INSERT INTO big SELECT generate_series(1, 2000);\n"
                     "CREATE FUNCTION slow_key(n int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$\n"
                     "BEGIN PERFORM pg_sleep(0.001); RETURN n; END $$;\n",
    "002_index.sql": "-- migrate:no-transaction\n"
                     "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_slow_key ON big (slow_key(id));\n",
}


def index_state(uri: str, name: str) -> tuple[bool, bool] | None:
    """(valid, ready) of index `name`, None if there is none."""
    with psycopg.connect(uri) as connection:
        row = connection.execute(
            "SELECT indisvalid, indisready FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
        ).fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]))


def tracked(uri: str) -> list[str]:
    with psycopg.connect(uri) as connection:
        return [str(row[0]) for row in connection.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_a_waiting_runner_does_not_deadlock_the_holders_concurrent_build(database_uri: str, tmp_path: Path) -> None:
    """The waiting runner used to block in pg_advisory_lock, holding a snapshot the holder's
    CREATE INDEX CONCURRENTLY waits for: PostgreSQL then cancelled one of them (40P01)."""
    directory = write_migrations(tmp_path / "m", SLOW_BUILD)
    holder = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_query(database_uri, "CONCURRENTLY")
    events: list[Event] = []

    waiter = apply_dir(database_uri, directory, events, lock_wait_seconds=60.0)

    stdout, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 0, stderr
    assert "✅ Applied: 002_index" in stdout
    assert any(isinstance(event, WaitingForLock) for event in events)
    assert waiter.applied == []
    assert index_state(database_uri, "big_slow_key") == (True, True)
    assert tracked(database_uri) == ["001_table", "002_index"]


UNIQUE_ON_DUPLICATES = {
    "001_table.sql": "CREATE TABLE accounts (email text);\n"
                     "INSERT INTO accounts VALUES ('a@example.com'), ('a@example.com'), ('b@example.com');\n",
    "002_unique.sql": "-- migrate:no-transaction\n"
                      "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS accounts_email ON accounts (email);\n",
}


def test_an_invalid_index_from_a_failed_build_is_reported_then_rebuilt(database_uri: str, tmp_path: Path) -> None:
    """A failed concurrent build leaves an INVALID index; IF NOT EXISTS would skip it on the next
    run and record the file with a broken index."""
    directory = write_migrations(tmp_path / "m", UNIQUE_ON_DUPLICATES)

    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory)
    assert failure.value.sqlstate == "23505" and failure.value.line == 2
    assert "It left the INVALID index(es) accounts_email; the next run drops and builds them again" in str(
        failure.value
    )
    state = index_state(database_uri, "accounts_email")
    assert state is not None and state[0] is False  # left behind, INVALID
    assert status_of(database_uri, directory).invalid_indexes == ["accounts_email"]

    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute(
            "DELETE FROM accounts WHERE ctid = (SELECT max(ctid) FROM accounts WHERE email = 'a@example.com')"
        )
    events: list[Event] = []
    result = apply_dir(database_uri, directory, events)

    assert [applied.version for applied in result.applied] == ["002_unique"]
    assert Notice(
        "002_unique: dropping the INVALID index accounts_email left by an earlier failed build, to build it again"
    ) in events
    assert index_state(database_uri, "accounts_email") == (True, True)
    assert status_of(database_uri, directory).invalid_indexes == []
    assert tracked(database_uri) == ["001_table", "002_unique"]

