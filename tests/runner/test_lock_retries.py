"""Lock-safe execution against a real PostgreSQL: a second session holds a lock a migration needs.

The blocker is released from the runner's own event stream (at its first lock-timeout retry), so
"released inside the retry window" does not depend on timing.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from database.cli.render import HumanRenderer, JsonCollector, json_document
from database.migrator.errors import MigrationFailedError
from database.migrator.events import Event, LockRetry, Notice
from database.migrator.lockwait import Backoff
from database.migrator.orchestration import RunnerSettings, apply

from .helpers import apply_dir, run_cli, settings_for, write_migrations

FAST = Backoff(first_seconds=0.05, max_seconds=0.2, window_seconds=60.0)
TABLES = {"001_tables.sql": "CREATE TABLE orders (id int);\nCREATE TABLE audit (note text);\n"}
ADD_TOTAL = {"002_total.sql": "ALTER TABLE orders ADD COLUMN total numeric;\n"}
# The blocker's own statement: it must never show up in what the runner reports.
BLOCKER_QUERY = "SELECT count(*), 'report-query-text-3141' FROM orders"


@contextmanager
def blocking_session(uri: str, sql: str = BLOCKER_QUERY) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A session of another application that runs `sql` and keeps its transaction open."""
    with psycopg.connect(uri, application_name="nightly-report") as session:
        session.execute(sql)
        yield session


def releasing(session: psycopg.Connection[tuple[object, ...]], events: list[Event]) -> Callable[[Event], None]:
    """An event sink that records events and ends the blocker's transaction at the first retry."""

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, LockRetry) and session.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            session.rollback()

    return sink


def rows(uri: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(uri) as connection:
        return connection.execute(sql).fetchall()


def columns(uri: str, table: str) -> list[str]:
    return [str(row[0]) for row in rows(uri, f"SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass "
                                            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]


def with_tables_applied(uri: str, tmp_path: Path, pending: dict[str, str]) -> Path:
    """A migrations directory whose first file (TABLES) is applied and `pending` is not yet."""
    directory = write_migrations(tmp_path / "m", TABLES)
    apply_dir(uri, directory)
    return write_migrations(directory, pending)


def quick(uri: str, directory: Path, **options: Any) -> RunnerSettings:
    """Settings with a short lock_timeout and fast retries; `options` are settings_for's keywords.
    1 s, not less: the lock watcher's first look opens a connection, which a loaded machine may
    take a few hundred milliseconds to do."""
    return settings_for(uri, directory, **{"lock_timeout": "1s", "lock_backoff": FAST, **options})


def retries_of(events: list[Event]) -> list[LockRetry]:
    return [event for event in events if isinstance(event, LockRetry)]


def test_a_lock_released_inside_the_retry_window_is_applied_exactly_once(database_uri: str, tmp_path: Path) -> None:
    directory = with_tables_applied(database_uri, tmp_path, {
        "002_total.sql": "INSERT INTO audit VALUES ('002 ran');\nALTER TABLE orders ADD COLUMN total numeric;\n",
    })
    events: list[Event] = []

    with blocking_session(database_uri) as blocker:
        blocker_pid = blocker.info.backend_pid
        result = apply(quick(database_uri, directory), releasing(blocker, events))

    assert [applied.version for applied in result.applied] == ["002_total"]
    assert rows(database_uri, "SELECT note FROM audit") == [("002 ran",)]
    assert columns(database_uri, "orders") == ["id", "total"]
    assert rows(database_uri, "SELECT count(*) FROM schema_migrations WHERE version = '002_total'") == [(1,)]
    [retry] = retries_of(events)
    assert (retry.version, retry.line, retry.attempt, retry.attempts) == ("002_total", 2, 1, 6)
    assert retry.wait is not None
    assert (retry.wait.mode, retry.wait.target) == ("AccessExclusiveLock", "public.orders")
    [seen] = retry.wait.blockers
    assert (seen.pid, seen.application_name, seen.state) == (blocker_pid, "nightly-report", "idle in transaction")
    assert seen.user == "postgres" and seen.transaction_seconds is not None and seen.transaction_seconds > 0.2


def test_a_lock_never_released_fails_clearly_and_leaves_the_other_session_alone(
    database_uri: str, tmp_path: Path
) -> None:
    directory = with_tables_applied(database_uri, tmp_path, {
        "002_total.sql": "CREATE TABLE invoices (id int);\nINSERT INTO audit VALUES ('002 ran');\n"
                         "ALTER TABLE orders ADD COLUMN total numeric;\n",
    })
    events: list[Event] = []
    renderer_output = io.StringIO()
    renderer = HumanRenderer(renderer_output, renderer_output, quiet=False)
    collector = JsonCollector()

    def sink(event: Event) -> None:
        events.append(event)
        renderer.event(event)
        collector.event(event)

    with blocking_session(database_uri) as blocker:
        blocker_pid = blocker.info.backend_pid
        with pytest.raises(MigrationFailedError) as failed:
            apply(quick(database_uri, directory, lock_retries=2), sink)
        # The other session is untouched: its transaction still open, and it still works.
        assert blocker.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert blocker.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        blocker.commit()

    message = str(failed.value)
    assert failed.value.sqlstate == "55P03" and failed.value.line == 3
    assert "002_total.sql:3: 002_total failed: SQLSTATE 55P03: canceling statement due to lock timeout" in message
    assert (f"Lock timeout waiting for AccessExclusiveLock on public.orders, blocked by pid "
            f"{blocker_pid} (user postgres, application nightly-report, idle in transaction, transaction open "
            ) in message
    assert "Tried 3 times in " in message and "(2 lock retries)" in message
    assert "002_total was rolled back completely" in message
    assert [retry.attempt for retry in retries_of(events)] == [1, 2]
    # Nothing of the migration is left.
    assert rows(database_uri, "SELECT to_regclass('invoices') IS NULL, (SELECT count(*) FROM audit)") == [(True, 0)]
    assert columns(database_uri, "orders") == ["id"]
    assert rows(database_uri, "SELECT version FROM schema_migrations") == [("001_tables",)]
    # What a person and a machine read names the blocker, never its query text.
    shown = renderer_output.getvalue()
    document = json_document("apply", collector, error=failed.value)
    assert f"⏳ 002_total (statement at line 3): lock timeout (attempt 1 of 3), waiting for AccessExclusiveLock on " \
           f"public.orders, blocked by pid {blocker_pid} (user postgres" in shown
    assert json.loads(document)["lock_retries"][0]["blockers"][0]["pid"] == blocker_pid
    for text in (message, shown, document):
        assert "report-query-text" not in text and "count(*)" not in text


def test_a_no_transaction_file_retries_only_the_statement_that_hit_the_lock(database_uri: str, tmp_path: Path) -> None:
    directory = with_tables_applied(database_uri, tmp_path, {
        "002_total.sql": "-- migrate:no-transaction\nINSERT INTO audit VALUES ('before');\n"
                         "ALTER TABLE orders ADD COLUMN total numeric;\nINSERT INTO audit VALUES ('after');\n",
    })
    events: list[Event] = []

    with blocking_session(database_uri) as blocker:
        apply(quick(database_uri, directory), releasing(blocker, events))

    assert rows(database_uri, "SELECT note FROM audit ORDER BY note") == [("after",), ("before",)]
    assert columns(database_uri, "orders") == ["id", "total"]
    assert [(retry.version, retry.line) for retry in retries_of(events)] == [("002_total", 3)]


def test_a_concurrent_build_that_hit_the_lock_timeout_is_built_again_valid(database_uri: str, tmp_path: Path) -> None:
    """The build waits for a writer's transaction after creating its (still INVALID) index: the
    lock timeout leaves that index behind, and the retry must not skip the build (IF NOT EXISTS)."""
    directory = with_tables_applied(database_uri, tmp_path, {
        "002_index.sql": "-- migrate:no-transaction\n"
                         "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_id ON orders (id);\n",
    })
    events: list[Event] = []

    with blocking_session(database_uri, "INSERT INTO orders VALUES (1)") as blocker:
        apply(quick(database_uri, directory), releasing(blocker, events))

    assert rows(database_uri, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_id'::regclass") == [(True,)]
    [retry] = retries_of(events)
    assert retry.wait is not None and retry.wait.target == "another transaction to end"
    assert Notice("002_index: dropping the INVALID index orders_id left by the attempt that hit the lock timeout, "
                  "to build it again") in events



def test_a_wait_for_a_row_names_the_rows_table(database_uri: str, tmp_path: Path) -> None:
    directory = with_tables_applied(database_uri, tmp_path, {"002_fix.sql": "UPDATE orders SET id = 2 WHERE id = 1;\n"})
    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute("INSERT INTO orders VALUES (1)")
    events: list[Event] = []

    with blocking_session(database_uri, "UPDATE orders SET id = 1") as blocker:
        apply(quick(database_uri, directory), releasing(blocker, events))

    [retry] = retries_of(events)
    assert retry.wait is not None and (retry.wait.mode, retry.wait.target) == ("ShareLock", "public.orders")
    assert rows(database_uri, "SELECT id FROM orders") == [(2,)]

def test_retries_never_go_past_the_runs_time_budget(database_uri: str, tmp_path: Path) -> None:
    directory = with_tables_applied(database_uri, tmp_path, ADD_TOTAL)
    events: list[Event] = []
    deadline = time.monotonic() + 4.0
    settings = replace(
        quick(database_uri, directory, lock_timeout="300ms", lock_retries=100),
        deadline=deadline,
        deadline_margin_seconds=0.5,
    )

    with blocking_session(database_uri), pytest.raises(MigrationFailedError) as failed:
        apply(settings, events.append)

    ended = time.monotonic()
    assert ended < deadline - 0.5 + 0.2  # the last attempt ended by the margin (0.2 s: ROLLBACK and the flush)
    assert "this run's time budget leaves no room for another attempt" in str(failed.value)
    assert failed.value.sqlstate == "55P03"
    assert 3 <= len(retries_of(events)) < 100


def test_cli_reports_each_wait_and_the_final_failure(database_uri: str, tmp_path: Path) -> None:
    directory = with_tables_applied(database_uri, tmp_path, ADD_TOTAL)
    flags = ("--db-uri", database_uri, "--migrations-dir", str(directory), "--lock-timeout", "1s")

    with blocking_session(database_uri) as blocker:
        blocker_pid = blocker.info.backend_pid
        retried = run_cli(*flags, "--lock-retries", "1")
        as_json = run_cli(*flags, "--lock-retries", "1", "--json")
        off = run_cli(*flags, "--lock-retries", "0")

    assert retried.returncode == 1
    assert "⏳ 002_total (statement at line 1): lock timeout (attempt 1 of 2), waiting for AccessExclusiveLock on " \
           f"public.orders, blocked by pid {blocker_pid} (user postgres, application nightly-report" in retried.stdout
    assert "SQLSTATE 55P03" in retried.stderr and "Tried 2 times in " in retried.stderr
    document = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and document["error"]["sqlstate"] == "55P03"
    [wait] = document["lock_retries"]
    assert wait["waiting_for"] == {"mode": "AccessExclusiveLock", "target": "public.orders"}
    assert wait["blockers"][0]["pid"] == blocker_pid and wait["blockers"][0]["state"] == "idle in transaction"
    assert off.returncode == 1 and "lock timeout (attempt" not in off.stdout
    assert "Lock retries are off (0)" in off.stderr
    for output in (retried.stdout + retried.stderr, as_json.stdout, off.stderr):
        assert "report-query-text" not in output


@pytest.mark.parametrize("value", ["-1", "two", "1.5", ""])
def test_cli_refuses_a_bad_lock_retries_value(value: str) -> None:
    result = run_cli("--lock-retries", value, "--db-uri", "postgresql://nowhere.invalid/db")

    assert result.returncode == 2 and "--lock-retries" in result.stderr


def test_a_blocker_of_another_role_is_named_without_what_the_role_may_not_see(
    database_uri: str, tmp_path: Path
) -> None:
    """A runner without pg_read_all_stats sees another role's pid, user and application, but not
    its state or transaction start: the line says so instead of guessing."""
    with psycopg.connect(database_uri, autocommit=True) as admin:
        admin.execute("DO $$ BEGIN CREATE ROLE lock_test_migrator LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
        admin.execute("GRANT CREATE ON SCHEMA public TO lock_test_migrator")
    migrator_uri = database_uri.replace("postgresql://postgres@", "postgresql://lock_test_migrator@")
    directory = with_tables_applied(migrator_uri, tmp_path, ADD_TOTAL)
    events: list[Event] = []

    with blocking_session(database_uri) as blocker:  # as postgres
        blocker_pid = blocker.info.backend_pid
        with pytest.raises(MigrationFailedError, match="55P03"):
            apply(quick(migrator_uri, directory, lock_retries=1), events.append)
        blocker.rollback()

    [retry] = retries_of(events)
    assert retry.wait is not None
    [seen] = retry.wait.blockers
    assert (seen.pid, seen.user, seen.application_name) == (blocker_pid, "postgres", "nightly-report")
    assert (seen.state, seen.transaction_seconds) == (None, None)
    assert seen.describe().endswith("application nightly-report, state not visible to this role)")


def test_backoff_grows_exponentially_with_jitter_up_to_its_maximum() -> None:
    backoff = Backoff(first_seconds=0.5, max_seconds=15.0)
    for failed, nominal in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)):
        delays = {backoff.delay(failed) for _ in range(200)}
        assert all(0.5 * nominal <= delay <= 1.5 * nominal for delay in delays)
        assert len(delays) > 100  # jittered, not one value
    assert all(backoff.delay(10) <= 15.0 for _ in range(200))
