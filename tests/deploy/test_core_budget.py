"""The runner core's time budget and status documents, used by the deploy-time functions
(additive: without a deadline the core behaves as before)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from database.migrator.errors import MigrationFailedError, OutOfTimeError
from database.migrator.orchestration import apply, read_status
from database.migrator.report import ReportError, status_from_dict, status_to_dict
from tests.runner.helpers import apply_dir, settings_for, status_of, write_migrations


def test_a_run_out_of_time_before_the_first_migration_applies_nothing(tmp_path: Path, database_uri: str) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);\n",
                                                  "002_b.sql": "CREATE TABLE b (id int);\n"})  # fmt: skip
    settings = settings_for(database_uri, directory)
    late = replace(settings, deadline=time.monotonic() + 3, deadline_margin_seconds=2)

    with pytest.raises(OutOfTimeError) as failure:
        apply(late, lambda _event: None)

    assert str(failure.value).endswith("0 of 2 applied; deploy again to continue")
    assert (failure.value.applied, failure.value.total) == (0, 2)
    assert [item.version for item in status_of(database_uri, directory).pending] == ["001_a", "002_b"]
    assert [event.version for event in apply_dir(database_uri, directory).applied] == ["001_a", "002_b"]  # lock freed


def test_a_statement_ends_before_the_deadline(tmp_path: Path, database_uri: str) -> None:
    directory = write_migrations(tmp_path / "m", {"001_slow.sql": "SELECT pg_sleep(30);\n"})
    settings = settings_for(database_uri, directory)
    budget = replace(settings, deadline=time.monotonic() + 4, deadline_margin_seconds=1)

    started = time.monotonic()
    with pytest.raises(MigrationFailedError, match="SQLSTATE 57014") as failure:
        apply(budget, lambda _event: None)

    assert time.monotonic() - started < 4
    assert "the time this run had left" in str(failure.value)


def test_without_a_deadline_a_slow_statement_is_not_capped(tmp_path: Path, database_uri: str) -> None:
    directory = write_migrations(tmp_path / "m", {"001_slow.sql": "SELECT pg_sleep(1.5);\n"})

    result = apply_dir(database_uri, directory, statement_timeout="10s")

    assert [event.version for event in result.applied] == ["001_slow"]


def test_status_round_trips_through_a_document(tmp_path: Path, database_uri: str) -> None:
    directory = write_migrations(tmp_path / "database" / "migrations", {
        "001_a.sql": "CREATE TABLE a (id int);\n",
        "002_b.sql": "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
    })  # fmt: skip
    apply_dir(database_uri, directory)
    write_migrations(directory, {"003_c.sql": "CREATE TABLE c (id int);\n"})
    status = read_status(settings_for(database_uri, directory), lambda _event: None)

    document = status_to_dict(status, tmp_path)

    assert document["pending"][0]["path"] == "database/migrations/003_c.sql"
    assert document["tracking_table_exists"] is True
    again = status_from_dict(document)
    assert again.applied == status.applied
    assert [(p.version, p.statements, p.in_transaction) for p in again.pending] == [("003_c", 1, True)]
    assert again.pending[0].path == Path("database/migrations/003_c.sql")


def test_a_bad_status_document_names_the_field() -> None:
    with pytest.raises(ReportError, match="missing field 'pending'"):
        status_from_dict({"applied": [], "drifted": [], "missing": [], "unverified": []})
    with pytest.raises(ReportError, match="bad value"):
        status_from_dict({"applied": [{"version": "001_a", "applied_at": "yesterday", "execution_ms": 1,
                                       "applied_by": None}], "pending": [], "drifted": [], "missing": [],
                          "unverified": []})  # fmt: skip
