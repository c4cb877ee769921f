"""The runner core against a real PostgreSQL: apply, failure, drift, adoption, transactions."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from database.migrator.errors import DriftError, InvalidMigrationError, MigrationError, MigrationFailedError
from database.migrator.events import Applied, Event, Notice, Planned, TrackingTableReady

from .helpers import GUIDE_MIGRATIONS, apply_dir, status_of, write_migrations


def query(uri: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(uri, autocommit=True) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def relation_exists(uri: str, name: str) -> bool:
    return query(uri, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0] is True


def tracked(uri: str) -> list[str]:
    return [str(row[0]) for row in query(uri, "SELECT version FROM schema_migrations ORDER BY version")]


def test_guide_schema_applies_and_its_trigger_notifies(database_uri: str, tmp_path: Path) -> None:
    events: list[Event] = []
    result = apply_dir(database_uri, GUIDE_MIGRATIONS, events)

    assert [a.version for a in result.applied] == [
        "001_initial_schema",
        "002_add_user_profile",
        "003_add_savings_groups",
    ]
    assert TrackingTableReady("created") in events
    rows = query(database_uri, "SELECT version, checksum, applied_by, execution_ms FROM schema_migrations")
    assert all(len(str(checksum)) == 64 and by == "pytest" and ms is not None for _, checksum, by, ms in rows)
    columns = {r[0] for r in query(database_uri, "SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'users'")}
    assert {"id", "username", "email", "first_name", "last_name", "phone", "created_at"} <= columns

    with psycopg.connect(database_uri, autocommit=True) as listener, psycopg.connect(database_uri) as writer:
        listener.execute("LISTEN group_update")
        user_id = writer.execute(
            "INSERT INTO users (username, email) VALUES ('ann', 'ann@example.com') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        group_id = writer.execute(
            "INSERT INTO savings_groups (name, created_by) VALUES ('trip', %s) RETURNING id", (user_id,)
        ).fetchone()[0]  # type: ignore[index]
        writer.execute("UPDATE savings_groups SET current_amount = 12.50 WHERE id = %s", (group_id,))
        writer.commit()
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert notices and notices[0].channel == "group_update"
    assert str(group_id) in notices[0].payload and "12.50" in notices[0].payload


def test_second_run_applies_nothing_and_keeps_history(database_uri: str) -> None:
    apply_dir(database_uri, GUIDE_MIGRATIONS)
    before = query(database_uri, "SELECT version, applied_at FROM schema_migrations ORDER BY 1")
    events: list[Event] = []

    result = apply_dir(database_uri, GUIDE_MIGRATIONS, events)

    assert result.applied == []
    assert TrackingTableReady("ready") in events
    assert query(database_uri, "SELECT version, applied_at FROM schema_migrations ORDER BY 1") == before
    status = status_of(database_uri, GUIDE_MIGRATIONS)
    assert [a.version for a in status.applied] == [v for v, _ in before] and status.pending == []


def test_failing_migration_leaves_no_trace_and_stops_the_run(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_first.sql": "CREATE TABLE first_table (id int);\n",
        "002_broken.sql": (
            "-- creates a table, then fails four lines further down\n"
            "CREATE TABLE second_table (id int);\n"
            "INSERT INTO second_table\n"
            "VALUES (1),\n"
            "       (no_such_column);\n"
        ),
        "003_third.sql": "CREATE TABLE third_table (id int);\n",
    })

    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory)

    error = failure.value
    assert (error.version, error.line, error.sqlstate) == ("002_broken", 5, "42703")
    assert str(directory / "002_broken.sql") + ":5:" in str(error)
    assert 'column "no_such_column" does not exist' in str(error)
    assert "rolled back completely" in str(error)
    assert relation_exists(database_uri, "first_table")
    assert not relation_exists(database_uri, "second_table")
    assert not relation_exists(database_uri, "third_table")
    assert tracked(database_uri) == ["001_first"]

    (directory / "002_broken.sql").write_text("CREATE TABLE second_table (id int);\n")
    result = apply_dir(database_uri, directory)
    assert [a.version for a in result.applied] == ["002_broken", "003_third"]


def test_runtime_error_without_position_names_the_statement_line(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_divide.sql": "CREATE TABLE t (n int);\n\n\nDO $$\nBEGIN\n  PERFORM 1 / 0;\nEND\n$$;\n",
    })
    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory)
    assert failure.value.sqlstate == "22012"
    assert failure.value.line is not None and failure.value.line >= 4
    assert "division by zero" in str(failure.value)
    assert not relation_exists(database_uri, "t")


def test_migration_inserting_its_own_tracking_row_keeps_working(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_settings.sql": (
            "CREATE TABLE IF NOT EXISTS settings (key text PRIMARY KEY, value text);\n"
            "INSERT INTO settings (key, value) VALUES ('feature_flag', 'true') ON CONFLICT (key) DO NOTHING;\n"
            "INSERT INTO settings (key, value) VALUES ('discount', '100%') ON CONFLICT (key) DO NOTHING;\n"
            "INSERT INTO schema_migrations (version) VALUES ('001_settings') ON CONFLICT DO NOTHING;\n"
        ),
    })
    apply_dir(database_uri, directory)
    rows = query(database_uri, "SELECT version, checksum FROM schema_migrations")
    assert len(rows) == 1 and rows[0][0] == "001_settings" and rows[0][1] is not None
    assert query(database_uri, "SELECT value FROM settings WHERE key = 'discount'") == [("100%",)]


def test_adopts_the_old_runners_tracking_table(database_uri: str, tmp_path: Path) -> None:
    # What the old run-migrations.sh left behind: version + applied_at, and 001 applied by hand.
    query(database_uri, "CREATE TABLE schema_migrations (version VARCHAR(255) PRIMARY KEY, "
                        "applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
    query(database_uri, "CREATE TABLE legacy_users (id int)")
    query(database_uri, "INSERT INTO schema_migrations (version) VALUES ('001_legacy_users')")
    directory = write_migrations(tmp_path / "m", {
        "001_legacy_users.sql": "CREATE TABLE legacy_users (id int);\n",  # would fail if re-run
        "002_add_name.sql": "ALTER TABLE legacy_users ADD COLUMN IF NOT EXISTS name text;\n",
    })
    assert status_of(database_uri, directory).unverified == ["001_legacy_users"]
    events: list[Event] = []

    result = apply_dir(database_uri, directory, events)

    assert [a.version for a in result.applied] == ["002_add_name"]
    assert TrackingTableReady("upgraded") in events
    assert any(isinstance(e, Notice) and "001_legacy_users" in e.message for e in events)
    rows = {row[0]: row[1] for row in query(database_uri, "SELECT version, checksum FROM schema_migrations")}
    assert all(rows[v] is not None for v in ("001_legacy_users", "002_add_name"))
    after = status_of(database_uri, directory)
    assert after.unverified == [] and after.drifted == [] and after.pending == []


def test_adopts_an_old_table_without_a_key_and_refuses_duplicates(database_uri: str, tmp_path: Path) -> None:
    query(database_uri, "CREATE TABLE schema_migrations (version text)")
    query(database_uri, "INSERT INTO schema_migrations VALUES ('001_a'), ('001_a')")
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;\n", "002_b.sql": "SELECT 2;\n"})
    with pytest.raises(MigrationError, match="duplicate"):
        apply_dir(database_uri, directory)
    assert tracked(database_uri) == ["001_a", "001_a"]

    query(database_uri, "DELETE FROM schema_migrations WHERE ctid = (SELECT min(ctid) FROM schema_migrations)")
    apply_dir(database_uri, directory)
    assert tracked(database_uri) == ["001_a", "002_b"]


def test_drift_fails_the_run_until_accepted(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    apply_dir(database_uri, directory)
    write_migrations(directory, {
        "001_a.sql": "CREATE TABLE a (id bigint);\n",
        "002_b.sql": "CREATE TABLE b (id int);\n",
    })

    assert status_of(database_uri, directory).drifted == ["001_a"]
    with pytest.raises(DriftError, match="001_a") as failure:
        apply_dir(database_uri, directory)
    assert "--accept-drift 001_a" in str(failure.value)
    assert not relation_exists(database_uri, "b")

    result = apply_dir(database_uri, directory, accept_drift=frozenset({"001_a"}))
    assert [a.version for a in result.applied] == ["002_b"]
    assert status_of(database_uri, directory).drifted == []
    apply_dir(database_uri, directory)  # accepted once, clean from now on


def test_comment_whitespace_and_line_ending_edits_are_not_drift(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n"})
    apply_dir(database_uri, directory)
    (directory / "001_a.sql").write_bytes(b"-- explain why\r\nCREATE TABLE a (\r\n    id int\r\n);\r\n")

    assert status_of(database_uri, directory).drifted == []
    apply_dir(database_uri, directory)
    digest = query(database_uri, "SELECT file_digest FROM schema_migrations")[0][0]
    from database.migrator.parsing import file_digest

    assert digest == file_digest((directory / "001_a.sql").read_bytes())


def test_applied_migrations_without_files_are_reported_not_fatal(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;\n", "002_b.sql": "SELECT 2;\n"})
    apply_dir(database_uri, directory)
    (directory / "002_b.sql").unlink()
    write_migrations(directory, {"003_c.sql": "SELECT 3;\n"})

    assert status_of(database_uri, directory).missing == ["002_b"]
    result = apply_dir(database_uri, directory)
    assert [a.version for a in result.applied] == ["003_c"]


def test_status_reads_without_creating_anything(database_uri: str) -> None:
    catalog = "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
    before = query(database_uri, catalog)

    status = status_of(database_uri, GUIDE_MIGRATIONS)

    assert query(database_uri, catalog) == before == []
    assert not status.tracking_table_exists
    assert [p.version for p in status.pending] == [p.stem for p in sorted(GUIDE_MIGRATIONS.glob("*.sql"))]
    assert all(p.in_transaction and p.statements >= 1 for p in status.pending)


def test_no_transaction_marker_runs_concurrent_index(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_table.sql": "CREATE TABLE items (id int, name text);\n",
        "002_index.sql": (
            "-- migrate:no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);\n"
        ),
    })
    apply_dir(database_uri, directory)
    valid = query(database_uri, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name'::regclass")
    assert valid == [(True,)]
    assert tracked(database_uri) == ["001_table", "002_index"]


def test_concurrent_index_without_marker_is_refused_before_anything_runs(
    database_uri: str, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_table.sql": "CREATE TABLE items (id int);\n",
        "002_index.sql": "CREATE INDEX CONCURRENTLY items_id ON items (id);\n",
    })
    with pytest.raises(InvalidMigrationError, match=r"002_index\.sql:1:.*migrate:no-transaction"):
        apply_dir(database_uri, directory)
    assert not relation_exists(database_uri, "items")
    assert not relation_exists(database_uri, "schema_migrations")


def test_failed_no_transaction_migration_is_not_recorded_and_reruns(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_table.sql": "CREATE TABLE items (id int);\n",
        "002_indexes.sql": (
            "-- migrate:no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id);\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_bad ON items (no_such_column);\n"
        ),
    })
    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory)
    assert failure.value.line == 3 and "statements 1-1 of 2 stay applied" in str(failure.value)
    assert tracked(database_uri) == ["001_table"]

    (directory / "002_indexes.sql").write_text(
        "-- migrate:no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id2 ON items (id);\n"
    )
    apply_dir(database_uri, directory, accept_drift=frozenset())
    assert tracked(database_uri) == ["001_table", "002_indexes"]


def test_statement_timeout_stops_a_runaway_migration(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_slow.sql": "CREATE TABLE s (id int);\nSELECT pg_sleep(5);\n"})
    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory, statement_timeout="300ms")
    assert failure.value.sqlstate == "57014" and failure.value.line == 2
    assert not relation_exists(database_uri, "s")


def test_lock_timeout_keeps_ddl_from_queueing_behind_a_busy_table(database_uri: str, tmp_path: Path) -> None:
    query(database_uri, "CREATE TABLE busy (id int)")
    directory = write_migrations(tmp_path / "m", {"001_alter.sql": "ALTER TABLE busy ADD COLUMN note text;\n"})
    with psycopg.connect(database_uri) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        with pytest.raises(MigrationFailedError) as failure:
            apply_dir(database_uri, directory, lock_timeout="200ms")
    assert failure.value.sqlstate == "55P03"
    apply_dir(database_uri, directory, lock_timeout="200ms")  # lock released: applies


def test_invalid_timeout_setting_is_a_clear_error(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="invalid lock/statement timeout"):
        apply_dir(database_uri, directory, lock_timeout="soon")


def test_older_pending_migration_is_applied_out_of_order_with_a_notice(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;", "003_c.sql": "SELECT 3;"})
    apply_dir(database_uri, directory)
    write_migrations(directory, {"002_b.sql": "SELECT 2;"})
    events: list[Event] = []

    result = apply_dir(database_uri, directory, events)

    assert [a.version for a in result.applied] == ["002_b"]
    planned = next(e for e in events if isinstance(e, Planned))
    assert planned.status.pending[0].out_of_order
    assert any(isinstance(e, Notice) and "out of order" in e.message for e in events)
    assert [e.version for e in events if isinstance(e, Applied)] == ["002_b"]


def test_bad_file_is_rejected_before_the_database_is_touched(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    (directory / "002_b.sql").write_bytes(b"SELECT '\xff';\n")
    with pytest.raises(InvalidMigrationError, match=r"002_b\.sql:1: not valid UTF-8"):
        apply_dir(database_uri, directory)
    assert not relation_exists(database_uri, "schema_migrations")
    shutil.rmtree(directory)


def test_a_failure_mid_file_names_its_line_when_the_file_runs_in_one_round_trip(
    database_uri: str, tmp_path: Path
) -> None:
    """The file's statements travel as one query string: the error still names its own line,
    with or without a position, after multi-byte text and comments ending a statement."""
    directory = write_migrations(tmp_path / "m", {
        "001_t.sql": "CREATE TABLE t (id int PRIMARY KEY, note text);\n"
                     "INSERT INTO t VALUES (1, 'café ☕ über') -- a comment ending the statement\n;\n"
                     "\n"
                     "INSERT INTO t VALUES (2, 'ok');\n"
                     "INSERT INTO t VALUES (1, 'dup');\n"
                     "CREATE TABLE never (id int);\n",
        "002_typo.sql": "SELECT 'ünïcödé ☕';\nSELECT 1;\nSELECT\n  no_such_column\nFROM t;\n",
    })
    with pytest.raises(MigrationFailedError) as duplicate:
        apply_dir(database_uri, directory)
    assert (duplicate.value.line, duplicate.value.sqlstate) == (6, "23505")
    assert not relation_exists(database_uri, "t")

    (directory / "001_t.sql").write_text("CREATE TABLE t (id int PRIMARY KEY, note text);\n")
    with pytest.raises(MigrationFailedError) as typo:
        apply_dir(database_uri, directory)
    assert (typo.value.version, typo.value.line, typo.value.sqlstate) == ("002_typo", 4, "42703")
    assert tracked(database_uri) == ["001_t"]


def test_a_deferred_constraint_failing_at_commit_rolls_the_migration_back(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_deferred.sql": "CREATE TABLE parent (id int PRIMARY KEY);\n"
                            "CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);\n"
                            "INSERT INTO child VALUES (42);\n",
    })
    with pytest.raises(MigrationFailedError) as failure:
        apply_dir(database_uri, directory)
    assert failure.value.sqlstate == "23503" and failure.value.line is None
    assert "rolled back completely" in str(failure.value)
    assert not relation_exists(database_uri, "parent")
    assert status_of(database_uri, directory).pending[0].version == "001_deferred"


def test_tracking_row_values_with_quotes_and_backslashes_are_stored_as_given(database_uri: str, tmp_path: Path) -> None:
    import dataclasses

    from database.migrator.orchestration import apply

    from .helpers import settings_for

    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    who = "cli:o'brien\\DOMAIN@host"
    with psycopg.connect(database_uri, autocommit=True) as connection:  # backslashes escape in plain '...'
        name = connection.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        connection.execute(f'ALTER DATABASE "{name}" SET standard_conforming_strings = off')
    apply(dataclasses.replace(settings_for(database_uri, directory), applied_by=who), lambda _event: None)
    with psycopg.connect(database_uri) as connection:
        row = connection.execute("SELECT applied_by, execution_ms >= 0 FROM schema_migrations").fetchone()
    assert row == (who, True)
