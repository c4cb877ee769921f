"""The built asset, run as Lambda runs it: each function's handler in its own CPython 3.13 process
with nothing on sys.path but the asset folder and boto3 (with its dependencies), through the whole
chain: CloudFormation event -> deploy function -> Secrets Manager (moto, over HTTP) -> Lambda
Invoke (local HTTP) -> runner function -> PostgreSQL over verified TLS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.migration.asset import CA_BUNDLE_NAME, build_migration_asset
from tests.deploy.conftest import PROJECT_ROOT, REGION, RUNNER_FUNCTION, Database
from tests.deploy.support import LocalAws, cfn_event, resource_properties

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
# What the Lambda runtime puts beside the code: boto3 and what it imports.
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


def test_the_built_asset_runs_the_whole_chain(tmp_path: Path, database: Database, tls_files: Path) -> None:
    from moto import mock_aws

    python = lambda_python()
    built = build_migration_asset(PROJECT_ROOT)
    asset = tmp_path / "task"
    shutil.copytree(built, asset)
    # The shipped RDS bundle must load as it is; the test CA beside it lets the test server verify.
    (asset / CA_BUNDLE_NAME).write_bytes((built / CA_BUNDLE_NAME).read_bytes() + tls_files.read_bytes())
    before = snapshot(asset)
    packages = runtime_packages(tmp_path / "runtime")
    aws_env = {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    with LocalAws() as aws, mock_aws(config={"core": {"passthrough": {"urls": [r"http://127\.0\.0\.1:\d+/.*"]}}}):
        import boto3

        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="PgSchemaDeploy-testing/database", SecretString=json.dumps(database.secret())
        )
        runner = AssetFunction(python, asset, packages, "schema_migrations.runner.handler", 60,
                               {**aws_env, "ENVIRONMENT_NAME": "testing"})  # fmt: skip
        deploy = AssetFunction(python, asset, packages, "schema_migrations.deploy.handler", 120, {
            **aws_env, "AWS_ENDPOINT_URL_LAMBDA": aws.url, "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws.url,
            "RUNNER_FUNCTION_NAME": RUNNER_FUNCTION, "DATABASE_SECRET_ARN": secret["ARN"],
            "ENVIRONMENT_NAME": "testing", "SECRETS_IN_VPC": "0",
        })  # fmt: skip
        aws.functions[RUNNER_FUNCTION] = runner.invoke
        properties = resource_properties(asset / "database" / "migrations")

        created, failed = deploy.invoke(cfn_event("Create", properties))
        assert not failed, created
        status, failed = deploy.invoke({"action": "status"})
        assert not failed, status
        deleted, failed = deploy.invoke(cfn_event("Delete", properties))
        assert not failed, deleted

    versions = sorted(path.stem for path in (PROJECT_ROOT / "database" / "migrations").glob("*.sql"))
    assert created == {
        "PhysicalResourceId": "schema-migrations-testing",
        "Data": {"SchemaVersion": versions[-1], "AppliedThisDeploy": ",".join(versions),
                 "AppliedCount": str(len(versions))},
    }  # fmt: skip
    assert status["ok"] is True and status["status"]["pending"] == []
    assert [item["version"] for item in status["status"]["applied"]] == versions
    assert deleted == {"PhysicalResourceId": "schema-migrations-testing"}
    assert aws.secrets_read == 2 and len(aws.invocations) == 2  # Delete read and invoked nothing
    assert runner.outside == [] and deploy.outside == []  # everything imported came from the asset
    assert snapshot(asset) == before  # read-only: nothing was written into the code folder
    assert "🎉 All migrations applied successfully!" in "".join(runner.logs)
    assert database.password not in "".join(runner.logs + deploy.logs)
