"""The built asset, run as Lambda runs it: each function's handler in its own CPython 3.13 process
with nothing on sys.path but the asset folder and boto3 (with its dependencies), through the whole
chain: CloudFormation event -> Provider framework (on_event, is_complete) -> deploy function ->
CloudFormation DescribeStacks and Secrets Manager (over HTTP) -> Lambda Invoke (local HTTP) -> runner
function -> PostgreSQL over verified TLS.

Two sources for the functions' folders and handler names: the asset builder itself, and `cdk.out`
of a synthesized app (each function's code asset and Handler, as CloudFormation would deploy
them; skipped while the app defines no migration functions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stacks.migration.asset import CA_BUNDLE_NAME, build_migration_asset
from tests.deploy.conftest import PROJECT_ROOT, REGION, RUNNER_FUNCTION, STACK_NAME, Database, empty_clone
from tests.deploy.support import RDS_DOMAIN, LocalAws, ProviderFramework, cfn_event, resource_properties

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
# What the Lambda runtime puts beside the code: boto3 and what it imports.
DEPLOY_HANDLER = "schema_migrations.deploy.handler"
RUNNER_HANDLER = "schema_migrations.runner.handler"
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


def lambda_python() -> str:
    """The runtime's CPython (3.13) from pyenv, or python3.13 on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted((root / "versions").glob("3.13.*/bin/python3"), reverse=True)
    found = [str(path) for path in candidates] + ([shutil.which("python3.13")] if shutil.which("python3.13") else [])
    if not found:
        pytest.skip("no CPython 3.13 (the Lambda runtime's version) on this machine")
    return str(found[0])


def runtime_packages(directory: Path) -> Path:
    site_packages = Path(next(path for path in sys.path if path.endswith("site-packages")))
    directory.mkdir()
    for name in RUNTIME_PACKAGES:
        (directory / name).symlink_to(site_packages / name)
    return directory


def functions_from_builder(_tmp_path: Path) -> dict[str, tuple[Path, str]]:
    folder = build_migration_asset(PROJECT_ROOT)
    return {"deploy": (folder, DEPLOY_HANDLER), "runner": (folder, RUNNER_HANDLER)}


def functions_from_cdk_out(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Synthesize the app into tmp_path/cdk.out; each migration function's asset folder and handler."""
    from aws_cdk import App

    from stacks.application import create_stacks
    from tests.infra.conftest import cdk_json_context

    outdir = tmp_path / "cdk.out"
    app = App(outdir=str(outdir), context={**cdk_json_context(), "database": "aurora-serverless"})
    stack = create_stacks(app)[0]
    app.synth()
    template = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    assets = json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text())["files"]
    found: dict[str, tuple[Path, str]] = {}
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        handler = properties.get("Handler")
        if resource["Type"] == "AWS::Lambda::Function" and handler in (DEPLOY_HANDLER, RUNNER_HANDLER):
            asset_hash = str(properties["Code"]["S3Key"]).removesuffix(".zip")
            found["deploy" if handler == DEPLOY_HANDLER else "runner"] = (
                outdir / assets[asset_hash]["source"]["path"], handler
            )
    if not found:
        pytest.skip("the app defines no migration functions yet (stacks/migration's construct)")
    assert set(found) == {"deploy", "runner"}, found
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


class AssetFunction:
    """One function of the asset: ``invoke`` runs its handler in a fresh CPython 3.13 process."""

    def __init__(self, python: str, asset: Path, packages: Path, handler: str, timeout: float, env: dict[str, str]):
        self.command = [python, "-I", "-S", str(BOOTSTRAP), str(asset), str(packages), handler, str(timeout)]
        self.timeout = timeout
        self.env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(asset.parent), **env}
        self.outside: list[str] = []
        self.logs: list[str] = []

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        """As the Provider framework sees it: the answer, or the function's error raised."""
        answer, failed = self.invoke(event)
        if failed:
            raise RuntimeError(answer["errorMessage"])
        return dict(answer)

    def invoke(self, event: dict[str, Any]) -> tuple[Any, bool]:
        result_file = Path(self.env["HOME"]) / "result.json"
        run = subprocess.run(
            [*self.command, str(result_file)], input=json.dumps(event), capture_output=True, text=True,
            env=self.env, timeout=self.timeout + 30, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        self.logs.append(run.stdout + run.stderr)
        result = json.loads(result_file.read_text())
        result_file.unlink()
        self.outside += result["outside"]
        return result["answer"], result["failed"]


@dataclass
class Chain:
    """Both functions of an asset wired as deployed: CloudFormation events go in through ``framework``."""

    aws: LocalAws
    framework: ProviderFramework
    deploy: AssetFunction
    runner: AssetFunction
    folders: dict[str, Path]
    properties: dict[str, Any]


@contextmanager
def asset_chain(
    functions: dict[str, tuple[Path, str]], tmp_path: Path, database: Database, tls_files: Path,
    runner_env: dict[str, str] | None = None, deploy_env: dict[str, str] | None = None,
) -> Iterator[Chain]:  # fmt: skip
    from moto import mock_aws

    python = lambda_python()
    folders: dict[str, Path] = {}
    for name, (built, _handler) in functions.items():
        folders[name] = tmp_path / f"task-{name}"
        shutil.copytree(built, folders[name])
        # The shipped RDS bundle must load as it is; the test CA beside it lets the test server verify.
        bundle = (built / CA_BUNDLE_NAME).read_bytes()
        assert bundle.count(b"BEGIN CERTIFICATE") > 100
        (folders[name] / CA_BUNDLE_NAME).write_bytes(bundle + tls_files.read_bytes())
    packages = runtime_packages(tmp_path / "runtime")
    aws_env = {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    with LocalAws() as aws, mock_aws(config={"core": {"passthrough": {"urls": [r"http://127\.0\.0\.1:\d+/.*"]}}}):
        import boto3

        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="PgSchemaDeploy-testing/database", SecretString=json.dumps(database.secret())
        )
        runner = AssetFunction(python, folders["runner"], packages, functions["runner"][1], 60,
                               {**aws_env, "ENVIRONMENT_NAME": "testing", **(runner_env or {})})  # fmt: skip
        deploy = AssetFunction(python, folders["deploy"], packages, functions["deploy"][1], 120, {
            **aws_env, "AWS_ENDPOINT_URL_LAMBDA": aws.url, "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws.url,
            "RUNNER_FUNCTION_NAME": RUNNER_FUNCTION, "DATABASE_SECRET_ARN": secret["ARN"],
            "ENVIRONMENT_NAME": "testing", "SECRETS_IN_VPC": "0", **database.location(),
            "AWS_ENDPOINT_URL_CLOUDFORMATION": aws.url,
            "RUNNER_TIMEOUT_SECONDS": "60", "DEPLOY_BUDGET_SECONDS": "600", **(deploy_env or {}),
        })  # fmt: skip
        aws.functions[RUNNER_FUNCTION] = runner.invoke
        aws.stack_outputs[STACK_NAME] = {}
        properties = resource_properties(folders["deploy"] / "database" / "migrations")
        framework = ProviderFramework(deploy.call, "pg-schema-deploy-testing-migrate")
        yield Chain(aws, framework, deploy, runner, folders, properties)


@pytest.mark.parametrize("source", [functions_from_builder, functions_from_cdk_out], ids=["builder", "cdk.out"])
def test_the_built_asset_runs_the_whole_chain(
    source: Callable[[Path], dict[str, tuple[Path, str]]], tmp_path: Path, database: Database, tls_files: Path
) -> None:
    with asset_chain(source(tmp_path), tmp_path, database, tls_files) as chain:
        before = {name: snapshot(folder) for name, folder in chain.folders.items()}
        aws, runner, deploy = chain.aws, chain.runner, chain.deploy
        aws.stack_status[STACK_NAME] = "CREATE_IN_PROGRESS"
        created = chain.framework.run(cfn_event("Create", chain.properties))
        assert created.status == "SUCCESS", created.body
        status, failed = deploy.invoke({"action": "status"})
        assert not failed, status
        aws.stack_status[STACK_NAME] = "DELETE_IN_PROGRESS"
        deleted = chain.framework.run(cfn_event("Delete", chain.properties))
        assert deleted.status == "SUCCESS", deleted.body

    versions = sorted(path.stem for path in (PROJECT_ROOT / "database" / "migrations").glob("*.sql"))
    assert created.body["PhysicalResourceId"] == "schema-migrations-testing"
    assert created.data == {"SchemaVersion": versions[-1], "AppliedThisDeploy": ",".join(versions),
                            "AppliedCount": str(len(versions))}  # fmt: skip
    assert status["ok"] is True and status["status"]["pending"] == []
    assert [item["version"] for item in status["status"]["applied"]] == versions
    assert deleted.body["PhysicalResourceId"] == "schema-migrations-testing" and deleted.data == {}
    assert aws.secrets_read == 2 and len(aws.invocations) == 2  # Delete read and invoked nothing
    assert runner.outside == [] and deploy.outside == []  # everything imported came from the asset
    assert {name: snapshot(folder) for name, folder in chain.folders.items()} == before  # nothing written there
    assert "🎉 All migrations applied successfully!" in "".join(runner.logs)
    assert "🔑 Roles webapp_app, webapp_readonly: " in "".join(runner.logs)  # database/migrator/roles.py shipped
    assert database.query("SELECT count(*) FROM pg_roles WHERE rolname IN ('webapp_app', 'webapp_readonly')") == [(2,)]
    assert database.password not in "".join(runner.logs + deploy.logs)


def test_the_built_asset_gates_the_deploy_on_the_live_table_sizes(
    tmp_path: Path, database: Database, tls_files: Path
) -> None:
    """A users table that already holds rows (made by hand, as the old setup scripts did): the shipped
    002 builds an index on it without CONCURRENTLY. Over LINT_ERROR_ROWS rows the deploy stops before
    anything is written; the runner's "lint" action says the same with the sizes."""
    with psycopg.connect(database.admin_conninfo, autocommit=True) as connection:
        connection.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"')
        connection.execute("CREATE TABLE users (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), username varchar(50) "
                           "UNIQUE NOT NULL, email varchar(255) UNIQUE NOT NULL, created_at timestamptz DEFAULT now())")
        connection.execute("ALTER TABLE users OWNER TO migrator")
        connection.execute("INSERT INTO users (username, email) SELECT 'u' || g, g || '@example.com' "
                           "FROM generate_series(1, 50) AS g")
        connection.execute("ANALYZE users")
    with asset_chain(functions_from_builder(tmp_path), tmp_path, database, tls_files,
                     runner_env={"LINT_ERROR_ROWS": "40"}) as chain:  # fmt: skip
        chain.aws.stack_status[STACK_NAME] = "CREATE_IN_PROGRESS"
        created = chain.framework.run(cfn_event("Create", chain.properties))
        linted, failed = chain.deploy.invoke({"action": "lint"})

    assert created.status == "FAILED"
    reason = created.body["Reason"]
    assert "lint: 1 unacknowledged error in the pending migrations; nothing was applied" in reason
    assert "database/migrations/002_add_user_profile.sql:8 require-concurrent-index-creation" in reason
    assert "CREATE INDEX on public.users (50 rows, " in reason
    assert "-- squawk-ignore require-concurrent-index-creation" in reason
    assert database.query("SELECT to_regclass('schema_migrations')") == [(None,)]  # not even the tracking table
    assert not failed and linted["ok"] is True, linted
    [finding] = [f for f in linted["findings"] if f["severity"] == "error"]
    assert finding["table"] == "public.users" and finding["estimated_rows"] == 50 and finding["total_bytes"] > 0
    assert chain.runner.outside == []


def test_the_built_asset_rehearses_on_a_clone_and_never_on_the_database(
    tmp_path: Path, database: Database, tls_files: Path, clone_server: Any
) -> None:
    """scripts/rehearse.sh's request to the deployed functions, as built: the runner (CPython 3.13,
    everything from the asset) applies the checkout's migrations to the clone's server, reached by
    the clone's endpoint name, and measures them; the environment's own database is not touched."""
    from stacks.cli.rehearse import _checkout

    cluster = "pg-schema-deploy-testing"
    empty_clone(clone_server, database.dbname)
    files, report = _checkout()
    request = {
        "action": "rehearse", "clone_host": f"{cluster}-rehearsal-20261204101500.{RDS_DOMAIN}",
        "clone_port": clone_server.port, "migrations": files, "lint_report": report,
        "budgets": {"max_lock_seconds": 5, "max_duration_seconds": 600},
    }  # fmt: skip
    dns = {"PGHOSTADDR": "127.0.0.1"}  # the VPC's DNS: endpoint names lead to this machine
    with asset_chain(functions_from_builder(tmp_path), tmp_path, database, tls_files, runner_env=dns,
                     deploy_env={"DATABASE_HOST": f"{cluster}.{RDS_DOMAIN}"}) as chain:  # fmt: skip
        answer, failed = chain.deploy.invoke(request)
        itself, _ = chain.deploy.invoke({**request, "clone_host": f"{cluster}.{RDS_DOMAIN}"})

    assert not failed and answer["ok"] is True, answer
    versions = sorted(path.stem for path in (PROJECT_ROOT / "database" / "migrations").glob("[0-9]*.sql"))
    rehearsal = answer["rehearsal"]
    assert [measure["version"] for measure in rehearsal["migrations"]] == versions
    assert rehearsal["within_budgets"] is True and rehearsal["failure"] is None
    built = [index["name"] for measure in rehearsal["migrations"] for index in measure["indexes_built"]]
    assert "public.idx_users_phone" in built
    assert itself["ok"] is False and "is not a rehearsal clone" in itself["error"]
    assert chain.runner.outside == []  # database/rehearsal/measure.py came from the asset
    assert database.query("SELECT to_regclass('schema_migrations'), to_regclass('users')") == [(None, None)]
    with psycopg.connect(f"host={clone_server.host} port={clone_server.port} user={clone_server.user} "
                         f"dbname={database.dbname}") as connection:  # fmt: skip
        applied = connection.execute("SELECT version, applied_by FROM schema_migrations ORDER BY version").fetchall()
    assert applied == [(version, "rehearsal:testing") for version in versions]
