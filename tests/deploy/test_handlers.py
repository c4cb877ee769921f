"""The deploy function driven by CloudFormation-shaped events, as the Provider framework sends
them (on_event, then is_complete until complete), with the stack's status in a stand-in
CloudFormation, its runner behind Lambda Invoke, the secret in moto and a real PostgreSQL over TLS."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import psycopg
import pytest

from database.migrator.postgres import ADVISORY_LOCK_KEY
from database.postgres_version import POSTGRES_VERSION
from tests.delayed_proxy import DelayedProxy
from tests.deploy.conftest import PASSWORD, RUNNER_FUNCTION, STACK_NAME, Deployment
from tests.deploy.support import RESPONSE_LIMIT_BYTES, cfn_event, failed

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

    response = deployment.create()

    assert response.status == "SUCCESS" and response.body["PhysicalResourceId"] == "schema-migrations-testing"
    assert response.data == {
        "SchemaVersion": "002_add_name",
        "AppliedThisDeploy": "001_create_users,002_add_name",
        "AppliedCount": "2",
    }
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]
    assert response.size < RESPONSE_LIMIT_BYTES
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


def test_no_op_deploy_applies_nothing_in_one_runner_invocation(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write(FIRST)
    deployment.create()
    properties = deployment.properties()
    before = len(deployment.aws.invocations)

    response = deployment.deploy(cfn_event("Update", properties, old_properties={**properties, "Database": "old"}),
                                 "UPDATE_IN_PROGRESS")  # fmt: skip

    assert response.data == {"SchemaVersion": "002_add_name", "AppliedThisDeploy": "none", "AppliedCount": "0"}
    assert len(deployment.aws.invocations) - before == 1 and response.is_complete_calls == 1
    assert "🎉 Database is up to date: nothing to apply" in capsys.readouterr().out


def test_new_migration_is_applied_by_the_next_deploy(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.create()
    old = deployment.properties()
    deployment.write(THIRD)

    response = deployment.update(old)

    assert response.body["PhysicalResourceId"] == "schema-migrations-testing"
    assert response.data == {
        "SchemaVersion": "003_add_phone",
        "AppliedThisDeploy": "003_add_phone",
        "AppliedCount": "1",
    }


def test_failing_migration_fails_the_deploy_then_the_rollback_changes_nothing(deployment: Deployment) -> None:
    deployment.write(FIRST | THIRD)
    deployment.create()
    deployment.aws.stack_outputs[STACK_NAME]["SchemaVersion"] = "003_add_phone"  # what that deploy recorded
    good = deployment.properties()
    deployment.write(BROKEN)
    failing = deployment.properties()

    message = failed(deployment.update(good))

    assert message.startswith(
        'database/migrations/005_broken.sql:2: 005_broken failed: SQLSTATE 42601: syntax error at or near "TABL"'
        "; 004_add_index applied earlier in this deploy"
    )
    assert "005_broken was rolled back completely" in message
    assert "/asset/" not in message
    assert deployment.applied_versions() == ["001_create_users", "002_add_name", "003_add_phone", "004_add_index"]

    # CloudFormation rolls back: the previous properties, while the function still carries 005.
    invocations = len(deployment.aws.invocations)
    started = time.monotonic()
    response = deployment.deploy(cfn_event("Update", good, old_properties=failing), "UPDATE_ROLLBACK_IN_PROGRESS")

    assert time.monotonic() - started < 2
    assert response.status == "SUCCESS" and response.data == {
        "SchemaVersion": "003_add_phone",
        "AppliedThisDeploy": "none (rollback: migrations are forward-only)",
        "AppliedCount": "0",
    }
    assert len(deployment.aws.invocations) == invocations  # the database was not touched
    assert deployment.applied_versions()[-1] == "004_add_index"


def test_rollback_after_an_edited_file_with_the_database_unreachable_touches_nothing(
    deployment: Deployment,
) -> None:
    """CloudFormation has restored the functions' code: the properties match the code again, and
    only the stack's status says this is a rollback."""
    deployment.write(FIRST)
    good = deployment.properties()
    (deployment.migrations / "002_add_name.sql").write_text("ALTER TABLE users ADD COLUMN name varchar(80);\n")
    edited = deployment.properties()
    deployment.write(FIRST)  # the code rolled back first
    deployment.point_at_port(1)  # and the database is unreachable
    secrets_read = deployment.aws.secrets_read

    response = deployment.deploy(cfn_event("Update", good, old_properties=edited), "UPDATE_ROLLBACK_IN_PROGRESS")

    assert response.status == "SUCCESS"
    assert response.data["AppliedThisDeploy"] == "none (rollback: migrations are forward-only)"
    assert deployment.aws.invocations == [] and deployment.aws.secrets_read == secrets_read


def test_rollback_after_a_database_replacement_touches_nothing(deployment: Deployment) -> None:
    """The rollback's Update names the old database, which the replacement's rollback may not have
    brought back yet: nothing is applied, nothing connects, SchemaVersion is the stack's record."""
    deployment.write(FIRST)
    deployment.aws.stack_outputs[STACK_NAME]["SchemaVersion"] = "002_add_name"
    old = deployment.properties(database="cluster-old")
    new = deployment.properties(database="cluster-new")
    deployment.point_at_port(1)

    response = deployment.deploy(cfn_event("Update", old, old_properties=new), "UPDATE_ROLLBACK_IN_PROGRESS")

    assert response.status == "SUCCESS" and response.data["SchemaVersion"] == "002_add_name"
    assert response.data["AppliedCount"] == "0" and deployment.aws.invocations == []


def test_a_deploy_that_cloudformation_gave_up_on_starts_no_further_run(deployment: Deployment) -> None:
    """Its timeout passed, the stack rolls back, the waiter still calls: nothing more is applied."""
    deployment.write(FIRST)
    event = cfn_event("Update", deployment.properties(), old_properties={})
    deployment.aws.stack_status[STACK_NAME] = "UPDATE_IN_PROGRESS"
    waiting = {**event, **deployment.send(event)}
    deployment.aws.stack_status[STACK_NAME] = "UPDATE_ROLLBACK_IN_PROGRESS"

    assert deployment.send(waiting) == {"IsComplete": True}
    assert deployment.aws.invocations == []


def test_a_hand_made_update_outside_a_deploy_is_refused(deployment: Deployment) -> None:
    deployment.write(FIRST)
    properties = deployment.properties()

    message = failed(deployment.deploy(cfn_event("Update", properties, old_properties={}), "UPDATE_COMPLETE"))

    assert message.startswith("refused: a Update arrived while stack PgSchemaDeploy-testing is UPDATE_COMPLETE")
    assert deployment.aws.invocations == [] and deployment.database.query(
        "SELECT to_regclass('schema_migrations') IS NULL"
    ) == [(True,)]


def test_an_event_of_another_stack_is_refused(deployment: Deployment) -> None:
    deployment.write(FIRST)
    event = cfn_event("Create", deployment.properties())
    event["StackId"] = "arn:aws:cloudformation:eu-west-1:123456789012:stack/Other/0000"

    message = failed(deployment.deploy(event, "CREATE_IN_PROGRESS"))

    assert message.startswith("refused: could not read the status of stack arn:aws:cloudformation")
    assert deployment.aws.invocations == []


def test_create_with_another_digest_fails_naming_both(deployment: Deployment) -> None:
    deployment.write(FIRST)
    properties = {**deployment.properties(), "MigrationsDigest": "0" * 64}

    message = failed(deployment.deploy(cfn_event("Create", properties), "CREATE_IN_PROGRESS"))

    carried = deployment.properties()["MigrationsDigest"][:12]
    assert message.startswith(f"refused: this Create asks for migrations with digest 000000000000, this function "
                              f"carries {carried}")  # fmt: skip
    assert deployment.aws.invocations == []


def test_delete_never_touches_the_database(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)  # nothing listens there: the database is unreachable

    started = time.monotonic()
    response = deployment.deploy(cfn_event("Delete", deployment.properties()), "DELETE_IN_PROGRESS")

    assert time.monotonic() - started < 2
    assert response.status == "SUCCESS" and response.body["PhysicalResourceId"] == "schema-migrations-testing"
    assert response.data == {} and deployment.aws.invocations == []
    assert "forward-only" in capsys.readouterr().out


def test_an_inactive_and_throttled_runner_is_woken_and_invoked_once(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write(FIRST)
    deployment.aws.invoke_errors = [(429, "TooManyRequestsException")]
    deployment.aws.function_state[RUNNER_FUNCTION] = "Inactive"

    response = deployment.create()

    assert response.status == "SUCCESS" and response.data["AppliedCount"] == "2"
    assert deployment.aws.refused_invocations == ["TooManyRequestsException", "ResourceNotReadyException"]
    assert deployment.aws.state_polls[-1] == "Active" and "Pending" in deployment.aws.state_polls
    assert len(deployment.aws.invocations) == 1  # the runner ran once
    assert "TooManyRequestsException (attempt 1); trying again" in capsys.readouterr().out


def test_a_server_error_before_the_runner_runs_is_retried(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.aws.invoke_errors = [(502, "EC2ThrottledException"), (500, "ServiceException")]

    response = deployment.create()

    assert response.status == "SUCCESS" and len(deployment.aws.invocations) == 1


def test_a_refusal_that_is_not_transient_fails_at_once(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.aws.invoke_errors = [(403, "AccessDeniedException")]

    message = failed(deployment.create())

    assert "AccessDeniedException" in message and deployment.aws.invocations == []


def test_unreachable_database_fails_the_deploy_within_the_runner_time(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)
    deployment.runner_seconds = 40  # connect retries end 2 margins (30 s) and the reserve before that

    started = time.monotonic()
    message = failed(deployment.create())

    assert re.search(r"could not connect after \d+ attempts", message)
    assert time.monotonic() - started < 20
    assert PASSWORD not in message


def test_waits_for_a_database_that_accepts_connections_only_after_seconds(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write(FIRST)
    with DelayedProxy(deployment.database.port, delay=4) as proxy:
        deployment.point_at_port(proxy.port)
        started = time.monotonic()
        response = deployment.create()

    assert time.monotonic() - started >= 4
    assert response.data["AppliedCount"] == "2"
    assert "⏳ Database not reachable yet (attempt 1" in capsys.readouterr().out


def test_waits_for_another_run_holding_the_lock(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.write(FIRST)
    holder = psycopg.connect(deployment.database.admin_conninfo, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    release = threading.Timer(3, holder.close)
    release.start()
    try:
        response = deployment.create()
    finally:
        release.join()

    assert response.data["AppliedCount"] == "2"
    assert "⏳ Another migration run is in progress" in capsys.readouterr().out


def test_a_duplicate_invocation_waits_for_the_first_run_then_finds_nothing_to_do(deployment: Deployment) -> None:
    """The framework re-invokes after an invoke error, and asynchronous delivery is at-least-once:
    two is_complete calls of one deploy run at the same time."""
    deployment.write({"001_slow.sql": "SELECT pg_sleep(2);\nCREATE TABLE slow (id int);\n"} | THIRD)
    deployment.write({"002_users.sql": "CREATE TABLE users (id int);\n"})
    event = cfn_event("Create", deployment.properties())
    deployment.aws.stack_status[STACK_NAME] = "CREATE_IN_PROGRESS"
    waiting = {**event, **deployment.send(event)}
    answers: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: answers.append(deployment.send(waiting)))
    first.start()
    time.sleep(0.5)
    duplicate = deployment.send(waiting)
    first.join()

    assert answers[0]["IsComplete"] is True and duplicate["IsComplete"] is True
    assert duplicate["Data"]["AppliedThisDeploy"] == "001_slow,002_users,003_add_phone"  # this deploy's, by the first
    assert deployment.applied_versions() == ["001_slow", "002_users", "003_add_phone"]
    assert len(deployment.aws.invocations) == 2  # each call ran the runner once, the second applied nothing


def test_a_lock_held_past_the_deploys_time_fails_it_clearly(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schema_migrations import deploy, runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    monkeypatch.setattr(deploy, "MIN_RUN_SECONDS", 2.0)
    monkeypatch.setattr(deploy, "INVOKE_RESERVE_SECONDS", 1.0)
    monkeypatch.setenv("DEPLOY_BUDGET_SECONDS", "14")
    deployment.write(FIRST)
    deployment.runner_seconds = 6
    with psycopg.connect(deployment.database.admin_conninfo, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        response = deployment.create()
        assert time.monotonic() - started < 16

    message = failed(response)
    assert message.startswith("the deploy's time for migrations is used up with migrations still pending (the last "
                              "run: another migration run still holds the lock after")  # fmt: skip
    assert message.endswith("deploy again to continue (or raise migration.total_timeout_seconds in stacks/settings.py)")
    assert response.is_complete_calls == 1  # the run waited for the lock as long as it could; no time for another
    assert deployment.database.query("SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]


def test_a_long_set_finishes_in_one_deploy_across_three_runs(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write({
        "001_slow.sql": "SELECT pg_sleep(2.5);\nCREATE TABLE slow (id int);\n",
        "002_next.sql": "SELECT pg_sleep(2.5);\nCREATE TABLE next (id int);\n",
        "003_last.sql": "SELECT pg_sleep(2.5);\nCREATE TABLE last (id int);\n",
    })  # fmt: skip
    deployment.runner_seconds = 6.5  # 4.5 s of budget after the reserve: room for one migration a run

    response = deployment.create()

    assert response.status == "SUCCESS", response.body
    assert response.data == {"SchemaVersion": "003_last", "AppliedThisDeploy": "001_slow,002_next,003_last",
                             "AppliedCount": "3"}  # fmt: skip
    assert len(deployment.aws.invocations) == 3 and response.is_complete_calls == 3
    assert deployment.applied_versions() == ["001_slow", "002_next", "003_last"]
    assert "⏭️  OutOfTimeError: stopped before 002_next" in capsys.readouterr().out


def test_a_migration_cut_after_a_late_start_runs_again_in_the_next_run(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write({
        "001_first.sql": "SELECT pg_sleep(2);\nCREATE TABLE first (id int);\n",
        "002_second.sql": "CREATE TABLE second (id int);\nSELECT pg_sleep(3);\n",
    })  # fmt: skip
    deployment.runner_seconds = 6.5  # 002 starts with about 1.4 s of statement time left, and is cut

    response = deployment.create()

    assert response.status == "SUCCESS", response.body
    assert response.data["AppliedThisDeploy"] == "001_first,002_second" and response.is_complete_calls == 2


def test_a_statement_longer_than_a_whole_run_fails_naming_it_and_what_to_do(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    deployment.write({"001_too_long.sql": "SELECT pg_sleep(60);\n"})
    deployment.runner_seconds = 6  # the statement may run about 3 s (6 - 2 reserve - 1 margin)

    started = time.monotonic()
    message = failed(deployment.create())

    assert time.monotonic() - started < 6
    assert message.startswith("database/migrations/001_too_long.sql:1: 001_too_long failed: SQLSTATE 57014")
    assert "one statement of 001_too_long takes longer than a whole run of the migration function (6s)" in message
    assert "CREATE INDEX CONCURRENTLY" in message and "split the work" in message
    assert "timed out" not in message.lower()
    assert deployment.applied_versions() == []


def test_a_failure_of_multi_byte_characters_fits_cloudformations_response(deployment: Deployment) -> None:
    deployment.write({"001_euro.sql": f"SELECT '{'€' * 3000}'::integer;\n"})  # PostgreSQL quotes it back

    response = deployment.create()

    message = failed(response)
    assert "invalid input syntax for type integer" in message and message.endswith("…")
    assert len(message.encode()) <= 2000


def test_a_long_function_error_of_multi_byte_characters_fits_too(deployment: Deployment) -> None:
    deployment.write(FIRST)
    crash = {"errorMessage": "Ошибка: " + "ж" * 3500, "errorType": "Runtime.ExitError"}  # 7 KB
    deployment.aws.functions[RUNNER_FUNCTION] = lambda _payload: (crash, True)

    message = failed(deployment.create())

    assert message.startswith(f"the migration function {RUNNER_FUNCTION} failed: Ошибка: жжж")
    assert len(deployment.aws.invocations) == 1  # the runner's own failure is never retried


def test_no_password_in_anything_printed_raised_or_returned(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even when PostgreSQL itself quotes it back in an error message."""
    quoted = PASSWORD.replace("'", "''")
    deployment.write({"001_echo.sql": f"SELECT '{quoted}'::integer;\n"})

    response = deployment.create()
    status = deployment.send({"action": "status"})
    answers = [payload for _name, payload in deployment.aws.invocations]

    printed = capsys.readouterr()
    message = failed(response)
    assert "invalid input syntax for type integer" in message
    for text in (json.dumps(response.body), printed.out, printed.err, json.dumps(status)):
        assert PASSWORD not in text
    assert "***" in message
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

    response = deployment.create()

    assert response.data["AppliedCount"] == "2"
    [(_name, payload)] = deployment.aws.invocations
    assert "credentials" not in payload


def test_a_runner_killed_by_lambda_fails_the_deploy_with_lambdas_reason(deployment: Deployment) -> None:
    deployment.write(FIRST)
    timed_out = {"errorMessage": "2026-11-25T10:42:13Z 3f2a Task timed out after 600.00 seconds",
                 "errorType": "Sandbox.Timedout"}  # fmt: skip
    deployment.aws.functions[RUNNER_FUNCTION] = lambda _payload: (timed_out, True)

    message = failed(deployment.create())

    assert re.search(f"{RUNNER_FUNCTION} failed: .*Task timed out after 600.00", message)


def test_properties_without_the_digest_are_refused(deployment: Deployment) -> None:
    deployment.write(FIRST)
    properties = deployment.properties()
    del properties["MigrationsDigest"]

    assert "lack MigrationsDigest" in failed(deployment.deploy(cfn_event("Create", properties), "CREATE_IN_PROGRESS"))
    assert deployment.aws.invocations == []


@pytest.mark.parametrize(
    ("stack_status", "protected_after"),
    [("ROLLBACK_IN_PROGRESS", False), ("DELETE_IN_PROGRESS", True), ("UPDATE_ROLLBACK_IN_PROGRESS", True),
     ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", True)],
)  # fmt: skip
def test_only_a_failed_first_create_turns_deletion_protection_off(
    deployment: Deployment, stack_status: str, protected_after: bool
) -> None:
    import boto3

    rds = boto3.client("rds")
    rds.create_db_cluster(
        DBClusterIdentifier="pg-schema-deploy-production", Engine="aurora-postgresql",
        MasterUsername="webapp", MasterUserPassword="not-the-real-one", DeletionProtection=True,
    )  # fmt: skip
    guard = {"ServiceToken": "token", "DatabaseIdentifier": "pg-schema-deploy-production", "DatabaseKind": "cluster"}
    event = {**cfn_event("Delete", guard, physical_id="create-rollback-guard-pg-schema-deploy-production"),
             "ResourceType": "Custom::CreateRollbackGuard"}  # fmt: skip

    response = deployment.deploy(event, stack_status)

    assert response.status == "SUCCESS" and response.data == {}
    [cluster] = rds.describe_db_clusters(DBClusterIdentifier="pg-schema-deploy-production")["DBClusters"]
    assert cluster["DeletionProtection"] is protected_after
    assert deployment.aws.invocations == []


def test_the_guard_does_nothing_on_create(deployment: Deployment) -> None:
    guard = {"ServiceToken": "token", "DatabaseIdentifier": "pg-schema-deploy-production", "DatabaseKind": "instance"}
    event = {**cfn_event("Create", guard), "ResourceType": "Custom::CreateRollbackGuard"}

    response = deployment.deploy(event, "CREATE_IN_PROGRESS")

    assert response.status == "SUCCESS"
    assert response.body["PhysicalResourceId"] == "create-rollback-guard-pg-schema-deploy-production"
