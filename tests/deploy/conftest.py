"""Fixtures for the deploy-time functions' tests.

The database is a real throwaway PostgreSQL with TLS on (a test CA signs its certificate for
127.0.0.1) and a pg_hba.conf that admits the migration login only over TLS with a password
(scram-sha-256): the runner's sslmode=verify-full and its password travel as they would in AWS.
The migration login has what the RDS master user has for the application's roles: CREATEDB,
CREATEROLE and the right to grant ``rds_iam`` (a plain role here, as RDS's is without IAM).
Only the CA differs from production: tests point the runner at the test CA instead of the
Amazon RDS bundle (``runner.CA_BUNDLE``); no environment variable or flag weakens TLS.
Secrets Manager is moto; Lambda Invoke and CloudFormation's DescribeStacks are a local HTTP server
(support.LocalAws); the Provider framework's calls are support.ProviderFramework.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor

from database.lint.engine import lint_migrations
from database.lint.gate import report_document
from database.migrator.errors import MigrationError
from database.migrator.orchestration import load_migrations
from stacks.migration.asset import LINT_REPORT_NAME
from tests.conftest import local_server
from tests.deploy.support import (
    STACK_ID,
    FakeContext,
    FrameworkResponse,
    LocalAws,
    ProviderFramework,
    cfn_event,
    make_tls_files,
    resource_properties,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT / "lambda") not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT / "lambda"))

from schema_migrations import deploy, runner  # noqa: E402

TLS_DIR = Path(tempfile.gettempdir()) / f"pg-schema-deploy-tls-{os.getpid()}"
MIGRATION_LOGIN = "migrator"
# Characters that need quoting in a conninfo string and escaping in a URI.
PASSWORD = "Zq7'pw\\ord with space%40&x"
RUNNER_FUNCTION = "PgSchemaDeploy-testing-MigrationRunner"
APPLICATION_ROLES = ("webapp_app", "webapp_readonly")  # the stack's defaults (resource_properties)
DEPLOY_FUNCTION = "pg-schema-deploy-testing-migrate"
STACK_NAME = STACK_ID.split(":stack/")[1].split("/")[0]
REGION = "eu-west-1"
_HBA = """\
hostssl all migrator 127.0.0.1/32 scram-sha-256
host    all migrator 127.0.0.1/32 reject
local   all all trust
host    all all 127.0.0.1/32 trust
host    all all ::1/128 trust
"""

tls_postgresql = factories.postgresql("postgresql_tls_proc")


@pytest.fixture(scope="session")
def tls_files() -> Iterator[Path]:
    """The test CA, and the server's certificate and key."""
    ca, _certificate, _key = make_tls_files(TLS_DIR)
    yield ca
    shutil.rmtree(TLS_DIR, ignore_errors=True)


@contextmanager
def tls_server(state: Path) -> Iterator[NoopExecutor]:
    """A local-db.sh server switched to TLS with the test certificate and to a pg_hba.conf that
    admits the migration login only over TLS with its password (both reloadable settings)."""
    with local_server(state) as (server, data):
        owner = data.stat()
        for name in ("server.crt", "server.key"):
            shutil.copyfile(TLS_DIR / name, data / name)
        (data / "pg_hba.conf").write_text(_HBA)
        for name in ("server.crt", "server.key", "pg_hba.conf"):
            os.chown(data / name, owner.st_uid, owner.st_gid)
            (data / name).chmod(0o600)
        admin = f"host={server.host} port={server.port} dbname=postgres user={server.user}"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("ALTER SYSTEM SET ssl = on")
            connection.execute("SELECT pg_reload_conf()")
        with psycopg.connect(f"{admin.replace('dbname=postgres', 'dbname=testdriven_dev')}", autocommit=True) as db:
            db.execute(f"DROP OWNED BY {', '.join(APPLICATION_ROLES)}".encode())  # local-db.sh made them:
            db.execute(f"DROP ROLE {', '.join(APPLICATION_ROLES)}".encode())  # each test's deploy does
        for _ in range(100):  # the reload is asynchronous: new sessions see it once the postmaster has
            with psycopg.connect(admin) as connection:
                if connection.execute("SELECT current_setting('ssl')").fetchone() == ("on",):
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the TLS test server did not turn ssl on", pytrace=False)
        yield server


@pytest.fixture(scope="session")
def postgresql_tls_proc(tls_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoopExecutor]:
    """The deploy tests' server: TLS, and the migration login admitted only over TLS (tls_server)."""
    with tls_server(tmp_path_factory.mktemp("local-db-tls") / "postgres") as server:
        yield server


@pytest.fixture(scope="module")
def clone_server(tls_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoopExecutor]:
    """A second TLS server: where a rehearsal clone's endpoint leads (a clone is a server of its own)."""
    with tls_server(tmp_path_factory.mktemp("clone") / "postgres") as server:
        yield server


def empty_clone(server: NoopExecutor, dbname: str) -> str:
    """A fresh database ``dbname`` on ``server`` owned by the migration login, with the cluster's
    password (a clone keeps the cluster's credentials); its superuser conninfo."""
    admin = f"host={server.host} port={server.port} user={server.user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'.encode())
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MIGRATION_LOGIN,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        connection.execute(
            f"{verb} ROLE {MIGRATION_LOGIN} LOGIN CREATEDB CREATEROLE PASSWORD {psycopg.sql.quote(PASSWORD)}".encode()
        )
        connection.execute(f'CREATE DATABASE "{dbname}" OWNER {MIGRATION_LOGIN}'.encode())
    return f"host={server.host} port={server.port} user={server.user} dbname={dbname}"


@dataclass
class Database:
    host: str
    port: int
    dbname: str
    admin_conninfo: str  # the fixture's superuser, trusted on the loopback: for test setup only
    user: str = MIGRATION_LOGIN
    password: str = PASSWORD

    def secret(self) -> dict[str, Any]:
        """The secret's JSON, shaped like the one RDS keeps for a managed master password."""
        return {"username": self.user, "password": self.password}

    def location(self, port: int | None = None) -> dict[str, str]:
        """Where the database is, as the stack tells the functions (their environment)."""
        return {"DATABASE_HOST": self.host, "DATABASE_PORT": str(port or self.port), "DATABASE_NAME": self.dbname}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as connection:
            return connection.execute(sql.encode()).fetchall()


@pytest.fixture
def database(tls_postgresql: psycopg.Connection[Any]) -> Database:
    """A fresh database owned by the migration login, reachable only over TLS with its password;
    no application roles yet (roles are cluster-wide: an earlier test's are dropped)."""
    info = tls_postgresql.info
    admin = f"host={info.host} port={info.port} dbname={info.dbname} user={info.user}"
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MIGRATION_LOGIN,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        connection.execute(
            f"{verb} ROLE {MIGRATION_LOGIN} LOGIN CREATEDB CREATEROLE PASSWORD {psycopg.sql.quote(PASSWORD)}".encode()
        )
        connection.execute(f'ALTER DATABASE "{info.dbname}" OWNER TO {MIGRATION_LOGIN}'.encode())
        for role in APPLICATION_ROLES:
            connection.execute(f"DROP ROLE IF EXISTS {role}".encode())
        if connection.execute("SELECT to_regrole('rds_iam')").fetchone() == (None,):
            connection.execute("CREATE ROLE rds_iam")
        connection.execute(f"GRANT rds_iam TO {MIGRATION_LOGIN} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE".encode())
    return Database(info.host, info.port, info.dbname, admin)


@dataclass
class Deployment:
    """The deploy function as the Provider framework calls it, its runner behind Lambda Invoke,
    the secret in Secrets Manager, the stack's status in CloudFormation: ``deploy`` an event while
    the stack is in a status, get the response CloudFormation would get; ``send`` one directly."""

    asset_root: Path
    database: Database
    aws: LocalAws
    secret_arn: str
    deploy_seconds: float = 180.0  # the deploy function's timeout
    runner_failures: list[BaseException] = field(default_factory=list)

    @property
    def runner_seconds(self) -> float:
        """The runner function's timeout (the deploy function knows it from its environment)."""
        return float(os.environ["RUNNER_TIMEOUT_SECONDS"])

    @runner_seconds.setter
    def runner_seconds(self, seconds: float) -> None:
        os.environ["RUNNER_TIMEOUT_SECONDS"] = str(seconds)

    @property
    def migrations(self) -> Path:
        return self.asset_root / "database" / "migrations"

    def write(self, files: dict[str, str]) -> None:
        """Migration files into the asset, with the lint report synth would ship beside them."""
        self.migrations.mkdir(parents=True, exist_ok=True)
        for name, sql in files.items():
            (self.migrations / name).write_text(sql, encoding="utf-8")
        try:
            linted = lint_migrations(load_migrations(self.migrations), lambda path: f"database/migrations/{path.name}")
        except MigrationError:
            return  # files synth would refuse: the runner refuses them too, before any lint
        (self.asset_root / LINT_REPORT_NAME).write_text(report_document(linted), encoding="utf-8")

    def properties(self, **overrides: Any) -> dict[str, Any]:
        return resource_properties(self.migrations, **overrides)

    def send(self, event: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = deploy.handler(event, FakeContext(seconds or self.deploy_seconds, DEPLOY_FUNCTION))
        return result

    def deploy(self, event: dict[str, Any], stack_status: str) -> FrameworkResponse:
        """CloudFormation sends ``event`` while the stack is in ``stack_status``."""
        self.aws.stack_status[STACK_NAME] = stack_status
        return ProviderFramework(self.send, DEPLOY_FUNCTION).run(event)

    def create(self) -> FrameworkResponse:
        return self.deploy(cfn_event("Create", self.properties()), "CREATE_IN_PROGRESS")

    def update(self, old: dict[str, Any]) -> FrameworkResponse:
        return self.deploy(cfn_event("Update", self.properties(), old_properties=old), "UPDATE_IN_PROGRESS")

    def point_at_port(self, port: int) -> None:
        """The functions' DATABASE_PORT (put back when the test ends)."""
        os.environ["DATABASE_PORT"] = str(port)

    def applied_versions(self) -> list[str]:
        rows = self.database.query("SELECT version FROM schema_migrations ORDER BY version")
        return [str(row[0]) for row in rows]

    def run_runner(self, payload: dict[str, Any]) -> tuple[Any, bool]:
        """The runner function in this process, as Lambda would run it (an exception is a FunctionError)."""
        try:
            return runner.handler(payload, FakeContext(self.runner_seconds, RUNNER_FUNCTION)), False
        except Exception as error:  # Lambda reports any exception as a FunctionError
            self.runner_failures.append(error)
            return {"errorMessage": str(error), "errorType": type(error).__name__}, True


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


@pytest.fixture
def deployment(
    tmp_path: Path, database: Database, tls_files: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    from moto import mock_aws

    asset_root = tmp_path / "asset"
    (asset_root / "database" / "migrations").mkdir(parents=True)
    monkeypatch.setattr(deploy, "MIGRATIONS_DIR", asset_root / "database" / "migrations")
    monkeypatch.setattr(runner, "MIGRATIONS_DIR", asset_root / "database" / "migrations")
    monkeypatch.setattr(runner, "ASSET_ROOT", asset_root)
    monkeypatch.setattr(runner, "CA_BUNDLE", tls_files)
    monkeypatch.setattr(runner, "LINT_REPORT", asset_root / LINT_REPORT_NAME)
    for key in [key for key in os.environ if key.startswith(("AWS_", "PG"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with LocalAws() as aws, mock_aws(config={"core": {"passthrough": {"urls": [r"http://127\.0\.0\.1:\d+/.*"]}}}):
        import boto3

        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="PgSchemaDeploy-testing/database", SecretString=_json(database.secret())
        )
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", aws.url)
        monkeypatch.setenv("RUNNER_FUNCTION_NAME", RUNNER_FUNCTION)
        monkeypatch.setenv("DATABASE_SECRET_ARN", secret["ARN"])
        monkeypatch.setenv("ENVIRONMENT_NAME", "testing")
        monkeypatch.setenv("SECRETS_IN_VPC", "0")
        for key, value in database.location().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", aws.url)
        monkeypatch.setenv("RUNNER_TIMEOUT_SECONDS", "120")
        monkeypatch.setenv("DEPLOY_BUDGET_SECONDS", "600")
        aws.stack_outputs[STACK_NAME] = {}
        result = Deployment(asset_root, database, aws, secret["ARN"])
        aws.functions[RUNNER_FUNCTION] = result.run_runner
        yield result
    assert result.runner_failures == []  # the runner answers every problem with a document
