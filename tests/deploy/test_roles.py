"""The application's logins, made by the deploy function after the migrations, against a real
PostgreSQL 17 over TLS: what the roles are, what each may and may not do, a later table covered with
no grant, and a deploy with nothing to do writing nothing to the catalogs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.deploy.conftest import APPLICATION_ROLES, MIGRATION_LOGIN, Database, Deployment
from tests.deploy.support import FrameworkResponse, cfn_event, failed

APPLICATION, READONLY = APPLICATION_ROLES
FIRST = {
    "001_accounts.sql": """
        CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);
        CREATE FUNCTION account_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM accounts';
    """,
}
LATER = {
    "002_invoices.sql": """
        CREATE TABLE invoices (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric NOT NULL);
        CREATE SCHEMA reporting;
        CREATE VIEW reporting.invoice_total AS SELECT sum(total) AS total FROM invoices;
    """,
}
# Every catalog row the roles step could write, with its xmin: a rewrite of the same values shows too.
CATALOG = """
SELECT 'role', rolname, concat_ws(',', rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
                                  rolreplication, rolbypassrls, rolpassword IS NULL), xmin::text
  FROM pg_authid WHERE rolname IN (%(application)s, %(readonly)s)
UNION ALL
SELECT 'member', member::regrole::text, roleid::regrole::text, xmin::text FROM pg_auth_members
 WHERE member::regrole::text IN (%(application)s, %(readonly)s)
UNION ALL
SELECT 'database', datname, datacl::text, xmin::text FROM pg_database WHERE datname = current_database()
UNION ALL
SELECT 'schema', nspname, nspacl::text, xmin::text FROM pg_namespace
UNION ALL
SELECT 'relation', oid::regclass::text, relacl::text, xmin::text FROM pg_class
 WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT 'routine', oid::regprocedure::text, proacl::text, xmin::text FROM pg_proc
 WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT 'default', defaclrole::regrole::text || '/' || defaclobjtype::text, defaclacl::text, xmin::text
  FROM pg_default_acl
ORDER BY 1, 2
"""


def as_admin(database: Database, statements: str) -> None:
    with psycopg.connect(database.admin_conninfo, autocommit=True) as connection:
        connection.execute(statements.encode())


def catalog(database: Database) -> list[tuple[Any, ...]]:
    with psycopg.connect(database.admin_conninfo) as connection:
        return connection.execute(CATALOG, {"application": APPLICATION, "readonly": READONLY}).fetchall()


@contextmanager
def logged_in_as(database: Database, role: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A session as ``role`` (the test server trusts every login but the migration one on loopback)."""
    conninfo = psycopg.conninfo.make_conninfo(database.admin_conninfo, user=role)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        yield connection


def refused(connection: psycopg.Connection[tuple[Any, ...]], statement: str) -> bool:
    """Whether PostgreSQL refuses ``statement`` for lack of privilege (must be owner, permission denied)."""
    try:
        connection.execute(statement.encode())
    except errors.InsufficientPrivilege:
        return True
    return False


def deploy_first(deployment: Deployment) -> FrameworkResponse:
    deployment.write(FIRST)
    return deployment.create()


def test_the_first_deploy_creates_two_logins_that_can_do_nothing_but_log_in(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_first(deployment)

    rows = deployment.database.query(
        f"SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
        f"rolinherit, rolpassword IS NULL FROM pg_authid WHERE rolname IN ('{APPLICATION}', '{READONLY}') "
        "ORDER BY rolname"
    )
    assert rows == [
        (APPLICATION, True, False, False, False, False, False, True, True),
        (READONLY, True, False, False, False, False, False, True, True),
    ]
    members = deployment.database.query(
        f"SELECT member::regrole::text, roleid::regrole::text FROM pg_auth_members "
        f"WHERE member::regrole::text IN ('{APPLICATION}', '{READONLY}') ORDER BY 1"
    )
    assert members == [(APPLICATION, "rds_iam"), (READONLY, "rds_iam")]  # IAM tokens only, on RDS
    owned = deployment.database.query(
        f"SELECT count(*) FROM pg_shdepend WHERE deptype = 'o' "
        f"AND refobjid IN ('{APPLICATION}'::regrole, '{READONLY}'::regrole)"
    )
    assert owned == [(0,)]  # they own nothing, in any database
    log = capsys.readouterr().out
    assert f"🔑 Roles {APPLICATION}, {READONLY}: 18 changes" in log  # the runner's log, each statement below
    assert "✅ Schema version 001_accounts; applied this deploy: 001_accounts; role changes: 18" in log
    assert f"CREATE ROLE {APPLICATION} LOGIN NOSUPERUSER" in log and f"GRANT rds_iam TO {READONLY}" in log
    assert deployment.database.password not in log


def test_the_application_reads_and_writes_but_cannot_change_the_schema(deployment: Deployment) -> None:
    deploy_first(deployment)

    with logged_in_as(deployment.database, APPLICATION) as app:
        app.execute("INSERT INTO accounts (name) VALUES ('ada'), ('grace')")  # the sequence too
        app.execute("UPDATE accounts SET name = 'Ada' WHERE name = 'ada'")
        app.execute("DELETE FROM accounts WHERE name = 'grace'")
        assert app.execute("SELECT name FROM accounts").fetchall() == [("Ada",)]
        assert app.execute("SELECT account_count()").fetchone() == (1,)
        for statement in (
            "CREATE TABLE notes (id int)",
            "CREATE SCHEMA own",
            "ALTER TABLE accounts ADD COLUMN email text",
            "CREATE INDEX ON accounts (name)",
            "DROP TABLE accounts",
            "TRUNCATE accounts",
            "DROP FUNCTION account_count()",
            "SELECT * FROM schema_migrations",
            "INSERT INTO schema_migrations (version) VALUES ('999_fake')",
            "UPDATE schema_migrations SET checksum = 'x'",
            "DELETE FROM schema_migrations",
            "TRUNCATE schema_migrations",
        ):
            assert refused(app, statement), statement


def test_the_read_only_login_only_reads(deployment: Deployment) -> None:
    deploy_first(deployment)
    as_admin(deployment.database, "INSERT INTO accounts (name) VALUES ('ada')")

    with logged_in_as(deployment.database, READONLY) as reader:
        assert reader.execute("SELECT name FROM accounts").fetchall() == [("ada",)]
        for statement in (
            "INSERT INTO accounts (name) VALUES ('mallory')",
            "UPDATE accounts SET name = 'x'",
            "DELETE FROM accounts",
            "TRUNCATE accounts",
            "SELECT nextval('accounts_id_seq')",
            "CREATE TABLE notes (id int)",
            "SELECT * FROM schema_migrations",
        ):
            assert refused(reader, statement), statement


def test_what_a_later_deploy_creates_is_covered_with_no_grant(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_first(deployment)
    first = deployment.properties()
    deployment.write(LATER)
    capsys.readouterr()

    result = deployment.update(first)

    assert result.data["AppliedThisDeploy"] == "002_invoices"
    assert f"🔑 Roles {APPLICATION}, {READONLY}: no changes" in capsys.readouterr().out
    with logged_in_as(deployment.database, APPLICATION) as app:
        app.execute("INSERT INTO invoices (total) VALUES (12.5), (7.5)")
        assert app.execute("SELECT total FROM reporting.invoice_total").fetchone() == (20,)
        assert refused(app, "DROP VIEW reporting.invoice_total")
        assert refused(app, "CREATE TABLE reporting.notes (id int)")
    with logged_in_as(deployment.database, READONLY) as reader:
        assert reader.execute("SELECT total FROM reporting.invoice_total").fetchone() == (20,)
        assert refused(reader, "DELETE FROM invoices")


def test_a_deploy_with_nothing_to_do_writes_nothing_to_the_catalogs(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_first(deployment)
    before = catalog(deployment.database)
    assert any(row[0] == "default" for row in before) and any(row[0] == "role" for row in before)
    capsys.readouterr()

    result = deployment.update(deployment.properties())

    assert result.data["AppliedCount"] == "0"
    assert f"🔑 Roles {APPLICATION}, {READONLY}: no changes" in capsys.readouterr().out
    assert catalog(deployment.database) == before


def test_privileges_and_attributes_someone_added_by_hand_are_put_right(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deploy_first(deployment)
    as_admin(
        deployment.database,
        f"GRANT SELECT, INSERT ON schema_migrations TO {APPLICATION}; ALTER ROLE {READONLY} CREATEDB; "
        f"REVOKE SELECT ON accounts FROM {READONLY}",
    )
    capsys.readouterr()

    deployment.update(deployment.properties())

    log = capsys.readouterr().out
    assert f"🔑 Roles {APPLICATION}, {READONLY}: 3 changes" in log
    assert f"REVOKE ALL ON TABLE schema_migrations FROM {APPLICATION}" in log
    assert f"ALTER ROLE {READONLY} NOCREATEDB\n" in log  # only what is wrong: each attribute needs its right
    with logged_in_as(deployment.database, APPLICATION) as app:
        assert refused(app, "SELECT * FROM schema_migrations")
    with logged_in_as(deployment.database, READONLY) as reader:
        reader.execute("SELECT * FROM accounts")
    assert deployment.database.query(f"SELECT rolcreatedb FROM pg_roles WHERE rolname = '{READONLY}'") == [(False,)]


def test_a_stack_without_roles_leaves_them_alone(deployment: Deployment) -> None:
    """A request without DatabaseRoles (a template from before the roles existed) migrates and
    makes no roles: not an error."""
    deployment.write(FIRST)
    properties = deployment.properties()
    del properties["DatabaseRoles"]

    assert deployment.deploy(cfn_event("Create", properties), "CREATE_IN_PROGRESS").status == "SUCCESS"

    assert deployment.database.query(
        f"SELECT count(*) FROM pg_roles WHERE rolname IN ('{APPLICATION}', '{READONLY}')"
    ) == [(0,)]
    [(_name, payload)] = deployment.aws.invocations
    assert "roles" not in payload


def test_a_migration_login_without_the_right_to_create_roles_fails_the_deploy_clearly(
    deployment: Deployment,
) -> None:
    as_admin(deployment.database, f"ALTER ROLE {MIGRATION_LOGIN} NOCREATEROLE")
    deployment.write(FIRST)
    message = failed(deployment.create())
    assert f"setting up the roles {APPLICATION} and {READONLY} failed: permission denied to create role" in message
    # the migrations stay applied (each committed); the next deploy retries the roles
    assert deployment.applied_versions() == ["001_accounts"]


def test_a_runner_payload_with_malformed_roles_is_refused_before_anything_runs(deployment: Deployment) -> None:
    deployment.write(FIRST)
    credentials = {**deployment.database.secret(), "host": deployment.database.host,
                   "port": deployment.database.port, "dbname": deployment.database.dbname}  # fmt: skip
    payload = {"action": "apply", "digest": deployment.properties()["MigrationsDigest"], "credentials": credentials}

    for roles, error in (("webapp_app", "roles must be an object"), ({"application": "x"}, "'None' is not a role")):
        answer, failed = deployment.run_runner({**payload, "roles": roles})
        assert not failed and answer["ok"] is False and error in answer["error"], answer
    assert deployment.database.query("SELECT to_regclass('accounts') IS NULL") == [(True,)]  # nothing applied
