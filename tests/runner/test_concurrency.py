"""Runners started at once, a runner killed mid-migration, and a lock held too long."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from database.migrator.errors import LockTimeoutError
from database.migrator.events import Event, WaitingForLock
from database.migrator.postgres import ADVISORY_LOCK_KEY

from .helpers import RUN_MIGRATIONS, apply_dir, run_cli, write_migrations

RUNNERS = 6


def slow_migrations(directory: Path) -> Path:
    """Non-idempotent migrations that log each application: a double run shows up twice or fails."""
    return write_migrations(directory, {
        "001_log.sql": "CREATE TABLE application_log (version text, at timestamptz DEFAULT clock_timestamp());\n"
                       "INSERT INTO application_log (version) VALUES ('001');\n",
        "002_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(1.5);\n"
                        "INSERT INTO application_log (version) VALUES ('002');\n",
        "003_after.sql": "CREATE TABLE after_slow (id int);\nINSERT INTO application_log (version) VALUES ('003');\n",
    })


def test_runners_started_at_once_apply_each_migration_exactly_once(database_uri: str, tmp_path: Path) -> None:
    directory = slow_migrations(tmp_path / "m")
    processes = [
        subprocess.Popen(
            [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(RUNNERS)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [p.returncode for p in processes] == [0] * RUNNERS, [err for _, err in outputs]
    import json

    applied_counts = sorted(len(json.loads(out)["applied_now"]) for out, _ in outputs)
    assert applied_counts == [0] * (RUNNERS - 1) + [3]
    with psycopg.connect(database_uri) as connection:
        log = connection.execute("SELECT version FROM application_log ORDER BY at").fetchall()
        tracked = connection.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert log == [("001",), ("002",), ("003",)]
    assert [row[0] for row in tracked] == ["001_log", "002_slow", "003_after"]


def test_second_runner_waits_for_the_first_then_finds_nothing_pending(database_uri: str, tmp_path: Path) -> None:
    directory = slow_migrations(tmp_path / "m")
    first = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_query(database_uri, "pg_sleep")
    events: list[Event] = []

    result = apply_dir(database_uri, directory, events, lock_wait_seconds=30.0)

    assert first.wait(timeout=60) == 0
    assert result.applied == []
    assert any(isinstance(e, WaitingForLock) and "pid" in e.holder for e in events)


def test_lock_held_too_long_gives_up_without_applying(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    with psycopg.connect(database_uri, autocommit=True, application_name="someone-else") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="someone-else"):
            apply_dir(database_uri, directory, lock_wait_seconds=1.0)
        assert 0.9 <= time.monotonic() - started < 10
        cli = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--lock-wait", "0.5")
    assert cli.returncode == 4 and "still holds the lock after 0.5s" in cli.stderr
    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT to_regclass('a')").fetchone() == (None,)


def test_runner_killed_mid_migration_leaves_a_state_the_next_run_completes(
    database_uri: str, tmp_path: Path
) -> None:
    directory = slow_migrations(tmp_path / "m")
    victim = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_query(database_uri, "pg_sleep")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)

    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT version FROM schema_migrations").fetchall() == [("001_log",)]
        assert connection.execute("SELECT to_regclass('slow')").fetchone() == (None,)

    rerun = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--lock-wait", "30")

    assert rerun.returncode == 0, rerun.stderr
    with psycopg.connect(database_uri) as connection:
        log = connection.execute("SELECT version FROM application_log ORDER BY at").fetchall()
        tracked = connection.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert log == [("001",), ("002",), ("003",)]
    assert [row[0] for row in tracked] == ["001_log", "002_slow", "003_after"]


def wait_for_query(uri: str, fragment: str, timeout: float = 30.0) -> None:
    """Block until a runner's backend is executing a statement containing `fragment`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(uri, autocommit=True) as connection:
        while time.monotonic() < deadline:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'database-migrator' "
                "AND state = 'active' AND query LIKE %s",
                (f"%{fragment}%",),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"no runner started a statement with {fragment!r} within {timeout}s")


def test_waiting_for_the_lock_is_bounded_by_lock_wait_not_statement_timeout(
    database_uri: str, tmp_path: Path
) -> None:
    import threading

    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    with psycopg.connect(database_uri, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        release = threading.Timer(1.5, lambda: holder.execute("SELECT pg_advisory_unlock_all()"))
        release.start()
        events: list[Event] = []
        result = apply_dir(database_uri, directory, events, statement_timeout="300ms", lock_wait_seconds=20.0)
        release.join()
    assert [a.version for a in result.applied] == ["001_a"]
    assert any(isinstance(e, WaitingForLock) for e in events)
