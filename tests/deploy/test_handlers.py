"""The deploy function driven by CloudFormation-shaped events, as the Provider framework sends
them, with its runner behind Lambda Invoke, the secret in moto and a real PostgreSQL over TLS."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from schema_migrations.deploy import MigrationDeployError

from database.migrator.postgres import ADVISORY_LOCK_KEY
from database.postgres_version import POSTGRES_VERSION
from tests.delayed_proxy import DelayedProxy
from tests.deploy.conftest import PASSWORD, RUNNER_FUNCTION, Deployment
from tests.deploy.support import cfn_event

FIRST = {
    "001_create_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);\n",
    "002_add_name.sql": "ALTER TABLE users ADD COLUMN name text;\n",
}
THIRD = {"003_add_phone.sql": "ALTER TABLE users ADD COLUMN phone text;\n"}
BROKEN = {
    "004_add_index.sql": "CREATE INDEX users_email ON users (email);\n",
    "005_broken.sql": "-- a typo\nCREATE TABL broken (id int);\n",
}


def test_first_deploy_applies_everything_and_reports_it(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write(FIRST)

    result = deployment.create()

    assert result == {
        "PhysicalResourceId": "schema-migrations-testing",
        "Data": {
            "SchemaVersion": "002_add_name",
            "AppliedThisDeploy": "001_create_users,002_add_name",
            "AppliedCount": "2",
        },
    }
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]
    assert len(json.dumps(result["Data"])) < 4096
    log = capsys.readouterr().out
    connected = f"✅ Database connection successful (PostgreSQL {POSTGRES_VERSION})"
    for line in ("🔄 Running database migrations...", connected,
                 "✅ Applied: 001_create_users", "🎉 All migrations applied successfully!"):  # fmt: skip
        assert line in log
    [(name, payload)] = deployment.aws.invocations
    assert name == RUNNER_FUNCTION and payload["action"] == "apply"
    assert payload["credentials"]["password"] == PASSWORD  # handed over in the payload, never logged
    assert PASSWORD not in log


def test_the_runner_connects_only_with_verified_tls(deployment: Deployment) -> None:
    """pg_hba rejects the login without TLS; the connection the runner made was TLS."""
    deployment.write({"001_tls.sql": "CREATE TABLE seen AS SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();"})

    deployment.create()

    assert deployment.database.query("SELECT ssl FROM seen") == [(True,)]


def test_no_op_deploy_applies_nothing(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.write(FIRST)
    deployment.create()
    properties = deployment.properties()

    result = deployment.send(cfn_event("Update", properties, old_properties={**properties, "Database": "old"}))

    assert result["Data"] == {"SchemaVersion": "002_add_name", "AppliedThisDeploy": "none", "AppliedCount": "0"}
    assert "🎉 Database is up to date: nothing to apply" in capsys.readouterr().out


def test_new_migration_is_applied_by_the_next_deploy(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.create()
    old = deployment.properties()
    deployment.write(THIRD)

    result = deployment.update(old)

    assert result["PhysicalResourceId"] == "schema-migrations-testing"
    assert result["Data"] == {
        "SchemaVersion": "003_add_phone",
        "AppliedThisDeploy": "003_add_phone",
        "AppliedCount": "1",
    }


def test_failing_migration_fails_the_deploy_then_the_rollback_changes_nothing(deployment: Deployment) -> None:
    deployment.write(FIRST | THIRD)
    deployment.create()
    good = deployment.properties()
    deployment.write(BROKEN)
    failing = deployment.properties()

    with pytest.raises(MigrationDeployError) as failure:
        deployment.update(good)

    message = str(failure.value)
    assert message.startswith(
        'database/migrations/005_broken.sql:2: 005_broken failed: SQLSTATE 42601: syntax error at or near "TABL"'
        "; 004_add_index applied earlier in this deploy"
    )
    assert "005_broken was rolled back completely" in message
    assert len(message) < 1000 and "/asset/" not in message
    assert deployment.applied_versions() == ["001_create_users", "002_add_name", "003_add_phone", "004_add_index"]

    # CloudFormation rolls back: the previous properties, while the function still carries 005.
    invocations = len(deployment.aws.invocations)
    rollback = cfn_event("Update", good, old_properties=failing)
    started = time.monotonic()
    result = deployment.send(rollback)

    assert time.monotonic() - started < 2
    assert result == {
        "PhysicalResourceId": "schema-migrations-testing",
        "Data": {
            "SchemaVersion": "003_add_phone",
            "AppliedThisDeploy": "none (rollback: migrations are forward-only)",
            "AppliedCount": "0",
        },
    }
    assert len(deployment.aws.invocations) == invocations  # the database was not touched
    assert deployment.applied_versions()[-1] == "004_add_index"


def test_rollback_after_the_function_code_rolled_back_too_touches_nothing(deployment: Deployment) -> None:
    """If CloudFormation restores the function's code first, its migrations match the previous
    properties again: the update only drops the failed deploy's files, so there is nothing to apply."""
    deployment.write(FIRST)
    good = deployment.properties()
    deployment.write(BROKEN)
    failing = deployment.properties()
    for name in BROKEN:
        (deployment.migrations / name).unlink()
    deployment.point_at_port(1)  # and the database is unreachable

    result = deployment.send(cfn_event("Update", good, old_properties=failing), seconds=30)

    assert result["Data"]["AppliedThisDeploy"] == "none (rollback: migrations are forward-only)"
    assert deployment.aws.invocations == []


def test_delete_never_touches_the_database(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)  # nothing listens there: the database is unreachable

    started = time.monotonic()
    result = deployment.send(cfn_event("Delete", deployment.properties()), seconds=30)

    assert time.monotonic() - started < 2
    assert result == {"PhysicalResourceId": "schema-migrations-testing"}
    assert deployment.aws.invocations == []
    assert "forward-only" in capsys.readouterr().out


def test_unreachable_database_fails_the_deploy_within_the_runner_time(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)
    deployment.runner_seconds = 40  # connect retries end 2 margins (30 s) and the reserve before that

    started = time.monotonic()
    with pytest.raises(MigrationDeployError, match=r"could not connect after \d+ attempts") as failure:
        deployment.create()

    assert time.monotonic() - started < 20
    assert PASSWORD not in str(failure.value)


def test_waits_for_a_database_that_accepts_connections_only_after_seconds(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write(FIRST)
    with DelayedProxy(deployment.database.port, delay=4) as proxy:
        deployment.point_at_port(proxy.port)
        started = time.monotonic()
        result = deployment.create()

    assert time.monotonic() - started >= 4
    assert result["Data"]["AppliedCount"] == "2"
    assert "⏳ Database not reachable yet (attempt 1" in capsys.readouterr().out


def test_waits_for_another_run_holding_the_lock(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.write(FIRST)
    holder = psycopg.connect(deployment.database.admin_conninfo, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    release = threading.Timer(3, holder.close)
    release.start()
    try:
        result = deployment.create()
    finally:
        release.join()

    assert result["Data"]["AppliedCount"] == "2"
    assert "⏳ Another migration run is in progress" in capsys.readouterr().out


def test_lock_wait_is_bounded_by_the_remaining_time(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write(FIRST)
    deployment.runner_seconds = 6
    with psycopg.connect(deployment.database.admin_conninfo, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(MigrationDeployError, match="another migration run still holds the lock after"):
            deployment.create()
        assert time.monotonic() - started < 6

    assert deployment.database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]


def test_stops_between_migrations_when_time_runs_short(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write({
        "001_slow.sql": "SELECT pg_sleep(2.5);\nCREATE TABLE slow (id int);\n",
        "002_next.sql": "CREATE TABLE next (id int);\n",
        "003_last.sql": "CREATE TABLE last (id int);\n",
    })  # fmt: skip
    deployment.runner_seconds = 6.5  # 4.5 s of budget after the reserve: room for 001 only

    with pytest.raises(MigrationDeployError) as failure:
        deployment.create()

    assert "stopped before 002_next" in str(failure.value)
    assert str(failure.value).endswith("1 of 3 applied; deploy again to continue")
    assert deployment.applied_versions() == ["001_slow"]
    monkeypatch.setattr(runner, "MARGIN_SECONDS", 15.0)
    deployment.runner_seconds = 120
    result = deployment.send(cfn_event("Update", deployment.properties(), old_properties={}))
    assert result["Data"]["AppliedThisDeploy"] == "002_next,003_last"


def test_a_statement_is_cut_by_the_remaining_time(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write({"001_too_long.sql": "SELECT pg_sleep(60);\n"})
    deployment.runner_seconds = 6  # the statement may run about 3 s (6 - 2 reserve - 1 margin)

    started = time.monotonic()
    with pytest.raises(MigrationDeployError) as failure:
        deployment.create()

    assert time.monotonic() - started < 6
    message = str(failure.value)
    assert message.startswith("database/migrations/001_too_long.sql:1: 001_too_long failed: SQLSTATE 57014")
    assert "the time this run had left" in message
    assert deployment.applied_versions() == []


def test_no_password_in_anything_printed_raised_or_returned(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even when PostgreSQL itself quotes it back in an error message."""
    quoted = PASSWORD.replace("'", "''")
    deployment.write({"001_echo.sql": f"SELECT '{quoted}'::integer;\n"})

    with pytest.raises(MigrationDeployError) as failure:
        deployment.create()
    status = deployment.send({"action": "status"})
    answers = [payload for _name, payload in deployment.aws.invocations]

    printed = capsys.readouterr()
    assert "invalid input syntax for type integer" in str(failure.value)
    for text in (str(failure.value), printed.out, printed.err, json.dumps(status)):
        assert PASSWORD not in text
    assert "***" in str(failure.value)
    assert all(payload["credentials"]["password"] == PASSWORD for payload in answers)  # only in the payload


def test_status_and_dry_run_answer_the_cli(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.create()
    deployment.write(THIRD)

    status: dict[str, Any] = deployment.send({"action": "status"})
    dry_run: dict[str, Any] = deployment.send({"action": "dry-run"})

    assert status["ok"] is True and status["environment"] == "testing"
    assert status["server_version"] == POSTGRES_VERSION
    assert [item["version"] for item in status["status"]["applied"]] == ["001_create_users", "002_add_name"]
    assert status["status"]["pending"] == [{
        "version": "003_add_phone", "path": "database/migrations/003_add_phone.sql",
        "statements": 1, "in_transaction": True, "out_of_order": False,
    }]  # fmt: skip
    assert dry_run["mode"] == "dry-run" and dry_run["status"] == status["status"]
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]  # read-only


def test_direct_apply_is_refused(deployment: Deployment) -> None:
    answer = deployment.send({"action": "apply"})

    assert answer["ok"] is False and "applying happens only through a deploy" in answer["error"]
    assert deployment.aws.invocations == []


def test_status_with_the_database_unreachable_answers_an_error_document(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)
    deployment.runner_seconds = 35

    answer = deployment.send({"action": "status"})

    assert answer["ok"] is False and answer["kind"] == "ConnectionFailedError"
    assert "could not connect" in answer["error"]


def test_with_a_secrets_endpoint_the_runner_reads_the_secret_itself(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRETS_IN_VPC", "1")  # the runner's DATABASE_SECRET_ARN is this process's too
    deployment.write(FIRST)

    result = deployment.create()

    assert result["Data"]["AppliedCount"] == "2"
    [(_name, payload)] = deployment.aws.invocations
    assert "credentials" not in payload


def test_a_runner_killed_by_lambda_fails_the_deploy_with_lambdas_reason(deployment: Deployment) -> None:
    deployment.write(FIRST)
    timed_out = {"errorMessage": "2026-11-25T10:42:13Z 3f2a Task timed out after 600.00 seconds",
                 "errorType": "Sandbox.Timedout"}  # fmt: skip
    deployment.aws.functions[RUNNER_FUNCTION] = lambda _payload: (timed_out, True)

    with pytest.raises(MigrationDeployError, match=f"{RUNNER_FUNCTION} failed: .*Task timed out after 600.00"):
        deployment.create()


def test_properties_without_the_digest_are_refused(deployment: Deployment) -> None:
    deployment.write(FIRST)
    properties = deployment.properties()
    del properties["MigrationsDigest"]

    with pytest.raises(MigrationDeployError, match="lack MigrationsDigest"):
        deployment.send(cfn_event("Create", properties))
    assert deployment.aws.invocations == []
